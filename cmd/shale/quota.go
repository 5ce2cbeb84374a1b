package main

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/twmb/franz-go/pkg/kadm"
)

func newQuotaCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "quota",
		Short: "Describe and alter client quotas (user, client-id and ip entities)",
		Args:  noCommand,
		RunE:  helpOrUnknown,
	}
	addClientFlags(cmd)
	cmd.AddCommand(newQuotaDescribeCmd(), newQuotaAlterCmd())
	return cmd
}

// quotaTypes are the entity types of client quotas, in the order an
// entity is printed.
var quotaTypes = []string{"user", "client-id", "ip"}

// quotaComponent is one component of a client quota entity. A nil Name is
// the default entity of its type.
type quotaComponent struct {
	Type string  `json:"type"`
	Name *string `json:"name"`
}

// addQuotaEntityFlags registers --user, --client-id and --ip, each with a
// -default twin naming the type's default entity.
func addQuotaEntityFlags(fs *pflag.FlagSet) {
	fs.String("user", "", "the user NAME (a principal's name)")
	fs.Bool("user-default", false, "the default user")
	fs.String("client-id", "", "the client id NAME")
	fs.Bool("client-id-default", false, "the default client id")
	fs.String("ip", "", "the client ADDR (an IP address)")
	fs.Bool("ip-default", false, "the default ip")
}

// quotaComponents reads the entity flags, in quotaTypes order.
func quotaComponents(fs *pflag.FlagSet) ([]quotaComponent, error) {
	var comps []quotaComponent
	for _, typ := range quotaTypes {
		def, _ := fs.GetBool(typ + "-default")
		switch {
		case fs.Changed(typ) && def:
			return nil, fmt.Errorf("--%s and --%s-default: give one of them", typ, typ)
		case fs.Changed(typ):
			name, _ := fs.GetString(typ)
			comps = append(comps, quotaComponent{Type: typ, Name: &name})
		case def:
			comps = append(comps, quotaComponent{Type: typ})
		}
	}
	return comps, nil
}

// quotaEntity prints an entity as Kafka's tools do:
// `user=alice client-id=<default>`.
func quotaEntity(comps []quotaComponent) string {
	parts := make([]string, len(comps))
	for i, c := range comps {
		name := "<default>"
		if c.Name != nil {
			name = *c.Name
		}
		parts[i] = c.Type + "=" + name
	}
	return strings.Join(parts, " ")
}

// fromKadmEntity is e's components in quotaTypes order (a type this
// client does not know last).
func fromKadmEntity(e kadm.ClientQuotaEntity) []quotaComponent {
	comps := make([]quotaComponent, 0, len(e))
	for _, c := range e {
		comps = append(comps, quotaComponent{Type: c.Type, Name: c.Name})
	}
	rank := func(typ string) int {
		if i := slices.Index(quotaTypes, typ); i >= 0 {
			return i
		}
		return len(quotaTypes)
	}
	slices.SortStableFunc(comps, func(a, b quotaComponent) int { return cmp.Compare(rank(a.Type), rank(b.Type)) })
	return comps
}

func quotaValue(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

type describedQuota struct {
	Entity []quotaComponent   `json:"entity"`
	Quotas map[string]float64 `json:"quotas"`
}

func newQuotaDescribeCmd() *cobra.Command {
	var (
		out    outputFlag
		strict bool
	)
	cmd := &cobra.Command{
		Use:   "describe [--user NAME|--user-default] [--client-id NAME|--client-id-default] [--ip ADDR|--ip-default]",
		Short: "List client quota entities and their quotas",
		Long: `Lists the client quota entities the flags match, with their quotas
(DescribeClientQuotas). A name flag matches that name, a -default flag the
type's default entity; a matching entity may have other types too, unless
--strict. Without flags, every entity.`,
		Example: `  shale quota describe --user alice`,
		Args:    exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := out.check(); err != nil {
				return err
			}
			comps, err := quotaComponents(cmd.Flags())
			if err != nil {
				return err
			}
			filter := make([]kadm.DescribeClientQuotaComponent, 0, len(comps))
			for _, c := range comps {
				f := kadm.DescribeClientQuotaComponent{Type: c.Type, MatchName: c.Name, MatchType: 0} // exact
				if c.Name == nil {
					f.MatchType = 1 // the default
				}
				filter = append(filter, f)
			}
			return runAdmin(cmd, func(ctx context.Context, adm *kadm.Client, _ *cliClient) error {
				qs, err := adm.DescribeClientQuotas(ctx, strict, filter)
				if err != nil {
					return fmt.Errorf("describing client quotas: %w", err)
				}
				described := []describedQuota{}
				for _, q := range qs {
					d := describedQuota{Entity: fromKadmEntity(q.Entity), Quotas: map[string]float64{}}
					for _, v := range q.Values {
						d.Quotas[v.Key] = v.Value
					}
					described = append(described, d)
				}
				slices.SortFunc(described, func(a, b describedQuota) int { return cmp.Compare(quotaEntity(a.Entity), quotaEntity(b.Entity)) })
				if out.json() {
					return writeJSON(cmd, described)
				}
				t := newTable(cmd, "ENTITY", "QUOTAS")
				for _, d := range described {
					var vs []string
					for _, k := range sortedKeys(d.Quotas) {
						vs = append(vs, k+"="+quotaValue(d.Quotas[k]))
					}
					t.row(quotaEntity(d.Entity), strings.Join(vs, " "))
				}
				return t.flush()
			})
		},
	}
	fs := cmd.Flags()
	addQuotaEntityFlags(fs)
	fs.BoolVar(&strict, "strict", false, "only entities with no other types than those given")
	out.register(fs)
	return cmd
}

type alteredQuota struct {
	Entity       []quotaComponent   `json:"entity"`
	Set          map[string]float64 `json:"set"`
	Removed      []string           `json:"removed"`
	ValidateOnly bool               `json:"validate_only,omitempty"`
}

func newQuotaAlterCmd() *cobra.Command {
	var (
		out          outputFlag
		set          []string
		removes      []string
		validateOnly bool
	)
	cmd := &cobra.Command{
		Use:   "alter [--user NAME|--user-default] [--client-id NAME|--client-id-default] [--ip ADDR|--ip-default] --set key=value --remove key",
		Short: "Set and remove an entity's client quotas (AlterClientQuotas)",
		Long: `Sets and removes the quotas of one entity: a user, a client id, both, or an
ip, each by name or the type's default. Shale enforces producer_byte_rate and
consumer_byte_rate (bytes per second), request_percentage (a percentage of one
thread's time) and controller_mutation_rate (partitions created or deleted per
second) on user and client-id entities, and connection_creation_rate (new
connections per second) on ip entities.`,
		Example: `  shale quota alter --user alice --client-id-default --set producer_byte_rate=1048576 --remove consumer_byte_rate`,
		Args:    exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := out.check(); err != nil {
				return err
			}
			comps, err := quotaComponents(cmd.Flags())
			if err != nil {
				return err
			}
			if len(comps) == 0 {
				return fmt.Errorf("%s: no entity (--user, --client-id, --ip or their -default); see '%s --help'", cmd.CommandPath(), cmd.CommandPath())
			}
			kv, err := parseConfigs("--set", set)
			if err != nil {
				return err
			}
			if len(kv) == 0 && len(removes) == 0 {
				return fmt.Errorf("%s: nothing to change (--set key=value, --remove key); see '%s --help'", cmd.CommandPath(), cmd.CommandPath())
			}
			res := alteredQuota{Entity: comps, Set: map[string]float64{}, Removed: orEmpty(removes), ValidateOnly: validateOnly}
			entry := kadm.AlterClientQuotaEntry{}
			for _, c := range comps {
				entry.Entity = append(entry.Entity, kadm.ClientQuotaEntityComponent{Type: c.Type, Name: c.Name})
			}
			for _, k := range slices.Sorted(maps.Keys(kv)) {
				v, err := strconv.ParseFloat(kv[k], 64)
				if err != nil {
					return fmt.Errorf("--set %s=%s: want a number", k, kv[k])
				}
				res.Set[k] = v
				entry.Ops = append(entry.Ops, kadm.AlterClientQuotaOp{Key: k, Value: v})
			}
			for _, k := range removes {
				if _, both := kv[k]; both {
					return fmt.Errorf("%s is both set and removed", k)
				}
				entry.Ops = append(entry.Ops, kadm.AlterClientQuotaOp{Key: k, Remove: true})
			}
			entity := quotaEntity(comps)
			return runAdmin(cmd, func(ctx context.Context, adm *kadm.Client, _ *cliClient) error {
				alter := adm.AlterClientQuotas
				if validateOnly {
					alter = adm.ValidateAlterClientQuotas
				}
				resps, err := alter(ctx, []kadm.AlterClientQuotaEntry{entry})
				if err != nil {
					return err
				}
				if len(resps) != 1 {
					return fmt.Errorf("client quota entity %q: %d results in the answer, want 1", entity, len(resps))
				}
				if r := resps[0]; r.Err != nil {
					return kafkaErr("client quota entity", entity, r.Err, r.ErrMessage)
				}
				if out.json() {
					return writeJSON(cmd, res)
				}
				t := newTable(cmd, "ENTITY", "QUOTA", "CHANGE")
				for _, op := range entry.Ops {
					change := "removed"
					if !op.Remove {
						change = "set to " + quotaValue(op.Value)
					}
					if validateOnly {
						change = "valid, not applied: " + change
					}
					t.row(entity, op.Key, change)
				}
				return t.flush()
			})
		},
	}
	fs := cmd.Flags()
	addQuotaEntityFlags(fs)
	fs.StringArrayVar(&set, "set", nil, "quota key=value to set, repeatable (producer_byte_rate, consumer_byte_rate)")
	fs.StringArrayVar(&removes, "remove", nil, "quota key to remove, repeatable")
	fs.BoolVar(&validateOnly, "validate-only", false, "have the broker check the change without applying it")
	out.register(fs)
	return cmd
}
