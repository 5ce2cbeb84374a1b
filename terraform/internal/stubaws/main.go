// Command stubaws is a stand-in for the hashicorp/aws provider that serves
// only its schema, so that `terraform validate` can check this directory's
// configurations where the real provider cannot be installed (the tests
// run without the Terraform registry).
//
// schema.json holds the part of the AWS provider's schema (v5, in the
// format of `terraform providers schema -json`) that the module and the
// example use: every resource and data source type they declare, with the
// arguments they set, the required arguments, and the attributes they
// read. Validation against it proves references, types, required
// arguments and block structure; it cannot prove schema.json matches the
// real provider, which only `terraform validate` with the real provider
// does. The stub refuses to plan or apply anything.
package main

import (
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"os"
	"sort"

	"github.com/hashicorp/terraform-plugin-go/tfprotov5"
	"github.com/hashicorp/terraform-plugin-go/tfprotov5/tf5server"
	"github.com/hashicorp/terraform-plugin-go/tftypes"
)

//go:embed schema.json
var schemaJSON []byte

// The format of one provider's entry in `terraform providers schema -json`.
type jsonProvider struct {
	Provider    jsonSchema            `json:"provider"`
	Resources   map[string]jsonSchema `json:"resource_schemas"`
	DataSources map[string]jsonSchema `json:"data_source_schemas"`
}

type jsonSchema struct {
	Version int64     `json:"version"`
	Block   jsonBlock `json:"block"`
}

type jsonBlock struct {
	Attributes map[string]jsonAttribute   `json:"attributes"`
	BlockTypes map[string]jsonNestedBlock `json:"block_types"`
}

type jsonAttribute struct {
	Type      json.RawMessage `json:"type"`
	Required  bool            `json:"required"`
	Optional  bool            `json:"optional"`
	Computed  bool            `json:"computed"`
	Sensitive bool            `json:"sensitive"`
}

type jsonNestedBlock struct {
	NestingMode string    `json:"nesting_mode"`
	Block       jsonBlock `json:"block"`
	MinItems    int64     `json:"min_items"`
	MaxItems    int64     `json:"max_items"`
}

var nestingModes = map[string]tfprotov5.SchemaNestedBlockNestingMode{
	"single": tfprotov5.SchemaNestedBlockNestingModeSingle,
	"list":   tfprotov5.SchemaNestedBlockNestingModeList,
	"set":    tfprotov5.SchemaNestedBlockNestingModeSet,
	"map":    tfprotov5.SchemaNestedBlockNestingModeMap,
	"group":  tfprotov5.SchemaNestedBlockNestingModeGroup,
}

func convertSchema(s jsonSchema) (*tfprotov5.Schema, error) {
	b, err := convertBlock(s.Block)
	if err != nil {
		return nil, err
	}
	return &tfprotov5.Schema{Version: s.Version, Block: b}, nil
}

func convertBlock(jb jsonBlock) (*tfprotov5.SchemaBlock, error) {
	b := &tfprotov5.SchemaBlock{}
	for _, name := range sortedKeys(jb.Attributes) {
		a := jb.Attributes[name]
		//lint:ignore SA1019 ParseJSONType reads the type format of the schema JSON
		typ, err := tftypes.ParseJSONType(a.Type) //nolint:staticcheck
		if err != nil {
			return nil, fmt.Errorf("attribute %s: %w", name, err)
		}
		b.Attributes = append(b.Attributes, &tfprotov5.SchemaAttribute{
			Name: name, Type: typ, Required: a.Required, Optional: a.Optional, Computed: a.Computed, Sensitive: a.Sensitive,
		})
	}
	for _, name := range sortedKeys(jb.BlockTypes) {
		nb := jb.BlockTypes[name]
		mode, ok := nestingModes[nb.NestingMode]
		if !ok {
			return nil, fmt.Errorf("block %s: nesting mode %q", name, nb.NestingMode)
		}
		inner, err := convertBlock(nb.Block)
		if err != nil {
			return nil, fmt.Errorf("block %s: %w", name, err)
		}
		b.BlockTypes = append(b.BlockTypes, &tfprotov5.SchemaNestedBlock{
			TypeName: name, Block: inner, Nesting: mode, MinItems: nb.MinItems, MaxItems: nb.MaxItems,
		})
	}
	return b, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// loadSchema converts schema.json into the provider's schema response.
func loadSchema() (*tfprotov5.GetProviderSchemaResponse, error) {
	var p jsonProvider
	if err := json.Unmarshal(schemaJSON, &p); err != nil {
		return nil, fmt.Errorf("schema.json: %w", err)
	}
	resp := &tfprotov5.GetProviderSchemaResponse{
		ResourceSchemas:   map[string]*tfprotov5.Schema{},
		DataSourceSchemas: map[string]*tfprotov5.Schema{},
	}
	var err error
	if resp.Provider, err = convertSchema(p.Provider); err != nil {
		return nil, fmt.Errorf("provider: %w", err)
	}
	for name, s := range p.Resources {
		if resp.ResourceSchemas[name], err = convertSchema(s); err != nil {
			return nil, fmt.Errorf("resource %s: %w", name, err)
		}
	}
	for name, s := range p.DataSources {
		if resp.DataSourceSchemas[name], err = convertSchema(s); err != nil {
			return nil, fmt.Errorf("data source %s: %w", name, err)
		}
	}
	return resp, nil
}

// server answers the calls of `terraform init` and `terraform validate`;
// every other call reaches the nil embedded interface and fails.
type server struct {
	tfprotov5.ProviderServer
	schema *tfprotov5.GetProviderSchemaResponse
}

func (s *server) GetMetadata(context.Context, *tfprotov5.GetMetadataRequest) (*tfprotov5.GetMetadataResponse, error) {
	resp := &tfprotov5.GetMetadataResponse{}
	for name := range s.schema.ResourceSchemas {
		resp.Resources = append(resp.Resources, tfprotov5.ResourceMetadata{TypeName: name})
	}
	for name := range s.schema.DataSourceSchemas {
		resp.DataSources = append(resp.DataSources, tfprotov5.DataSourceMetadata{TypeName: name})
	}
	return resp, nil
}

func (s *server) GetProviderSchema(context.Context, *tfprotov5.GetProviderSchemaRequest) (*tfprotov5.GetProviderSchemaResponse, error) {
	return s.schema, nil
}

func (s *server) PrepareProviderConfig(_ context.Context, req *tfprotov5.PrepareProviderConfigRequest) (*tfprotov5.PrepareProviderConfigResponse, error) {
	return &tfprotov5.PrepareProviderConfigResponse{PreparedConfig: req.Config}, nil
}

func (s *server) ValidateResourceTypeConfig(context.Context, *tfprotov5.ValidateResourceTypeConfigRequest) (*tfprotov5.ValidateResourceTypeConfigResponse, error) {
	return &tfprotov5.ValidateResourceTypeConfigResponse{}, nil
}

func (s *server) ValidateDataSourceConfig(context.Context, *tfprotov5.ValidateDataSourceConfigRequest) (*tfprotov5.ValidateDataSourceConfigResponse, error) {
	return &tfprotov5.ValidateDataSourceConfigResponse{}, nil
}

func (s *server) StopProvider(context.Context, *tfprotov5.StopProviderRequest) (*tfprotov5.StopProviderResponse, error) {
	return &tfprotov5.StopProviderResponse{}, nil
}

func main() {
	schema, err := loadSchema()
	if err != nil {
		fmt.Fprintln(os.Stderr, "stubaws:", err)
		os.Exit(1)
	}
	err = tf5server.Serve("registry.terraform.io/hashicorp/aws", func() tfprotov5.ProviderServer {
		return &server{schema: schema}
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "stubaws:", err)
		os.Exit(1)
	}
}
