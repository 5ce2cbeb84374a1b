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
// does.
//
// It also plans, so that `terraform plan` evaluates every expression of the
// configuration with known values: a data source reads as its
// configuration with each computed attribute that is null given a made-up
// value (fakeValue), and a new resource is planned the same way. It never
// applies anything.
package main

import (
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"math/big"
	"os"
	"sort"
	"strings"

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

func (s *server) ConfigureProvider(context.Context, *tfprotov5.ConfigureProviderRequest) (*tfprotov5.ConfigureProviderResponse, error) {
	return &tfprotov5.ConfigureProviderResponse{}, nil
}

func (s *server) ReadDataSource(_ context.Context, req *tfprotov5.ReadDataSourceRequest) (*tfprotov5.ReadDataSourceResponse, error) {
	state, err := fill(s.schema.DataSourceSchemas[req.TypeName], req.Config)
	if err != nil {
		return nil, fmt.Errorf("data source %s: %w", req.TypeName, err)
	}
	return &tfprotov5.ReadDataSourceResponse{State: state}, nil
}

func (s *server) PlanResourceChange(_ context.Context, req *tfprotov5.PlanResourceChangeRequest) (*tfprotov5.PlanResourceChangeResponse, error) {
	planned, err := fill(s.schema.ResourceSchemas[req.TypeName], req.ProposedNewState)
	if err != nil {
		return nil, fmt.Errorf("resource %s: %w", req.TypeName, err)
	}
	return &tfprotov5.PlanResourceChangeResponse{PlannedState: planned}, nil
}

// fill gives every top-level computed attribute of v that is null a
// made-up known value.
func fill(schema *tfprotov5.Schema, dv *tfprotov5.DynamicValue) (*tfprotov5.DynamicValue, error) {
	if schema == nil {
		return nil, fmt.Errorf("not in schema.json")
	}
	typ := schema.ValueType()
	v, err := dv.Unmarshal(typ)
	if err != nil {
		return nil, err
	}
	if v.IsNull() || !v.IsKnown() {
		return dv, nil
	}
	var attrs map[string]tftypes.Value
	if err := v.As(&attrs); err != nil {
		return nil, err
	}
	for _, a := range schema.Block.Attributes {
		if cur := attrs[a.Name]; a.Computed && cur.IsNull() {
			attrs[a.Name] = fakeValue(a.Name, a.Type, attrs)
		}
	}
	out, err := tfprotov5.NewDynamicValue(typ, tftypes.NewValue(typ, attrs))
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// fakeValue makes up a value of typ for the computed attribute name. A few
// names get plausible values that the configurations compute with: a
// subnet's cidr_block and availability_zone follow the last letter of its
// id ("subnet-b" is 10.42.16.0/20 in eu-west-1b).
func fakeValue(name string, typ tftypes.Type, attrs map[string]tftypes.Value) tftypes.Value {
	var id string
	if v, ok := attrs["id"]; ok && v.IsKnown() && !v.IsNull() && v.Type().Is(tftypes.String) {
		_ = v.As(&id)
	}
	zone := "a"
	if id != "" {
		zone = id[len(id)-1:]
	}
	switch {
	case typ.Is(tftypes.String):
		s := "stub-" + strings.ReplaceAll(name, "_", "-")
		switch name {
		case "region":
			s = "eu-west-1"
		case "availability_zone":
			s = "eu-west-1" + zone
		case "cidr_block":
			s = fmt.Sprintf("10.42.%d.0/20", 16*int(zone[0]-'a'))
		case "arn":
			s = "arn:aws:stub:::" + s
		case "partition":
			s = "aws"
		case "insecure_value", "value":
			s = "ami-0123456789abcdef0"
		}
		return tftypes.NewValue(typ, s)
	case typ.Is(tftypes.Number):
		return tftypes.NewValue(typ, big.NewFloat(0))
	case typ.Is(tftypes.Bool):
		return tftypes.NewValue(typ, false)
	case typ.Is(tftypes.List{ElementType: tftypes.String}) && name == "names":
		var zones []tftypes.Value
		for _, z := range []string{"a", "b", "c"} {
			zones = append(zones, tftypes.NewValue(tftypes.String, "eu-west-1"+z))
		}
		return tftypes.NewValue(typ, zones)
	case typ.Is(tftypes.List{}), typ.Is(tftypes.Set{}):
		return tftypes.NewValue(typ, []tftypes.Value{})
	case typ.Is(tftypes.Map{}):
		return tftypes.NewValue(typ, map[string]tftypes.Value{})
	}
	return tftypes.NewValue(typ, nil)
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
