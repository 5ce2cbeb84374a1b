package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker/acl"
)

// `shale acl` manages the cluster's ACLs (CreateAcls, DescribeAcls and
// DeleteAcls, what kafka-acls.sh --add, --list and --remove send), with
// kafka-acls.sh's flags: --allow-principal, --deny-principal, their
// hosts, --operation, the resources (--topic, --group,
// --transactional-id, --cluster), --resource-pattern-type, and the
// --producer and --consumer shortcuts. Names are Kafka's, read by the
// broker/acl parsers (read, describe-configs, DESCRIBE_CONFIGS). The
// brokers enforce the ACLs only when run with --acls; without it they
// answer SECURITY_DISABLED.

func newACLCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "acl",
		Short: "Add, list and remove ACLs: what each principal may do (brokers run with --acls)",
		Args:  noCommand,
		RunE:  helpOrUnknown,
	}
	addClientFlags(cmd)
	cmd.AddCommand(newACLAddCmd(), newACLListCmd(), newACLRemoveCmd())
	return cmd
}

// aclMode is which acl command a set of flags belongs to.
type aclMode int

const (
	aclAdd aclMode = iota
	aclList
	aclRemove
)

// aclFlags are the flags of the acl commands, as given.
type aclFlags struct {
	mode                   aclMode
	allow, deny            []string // --allow-principal, --deny-principal
	allowHosts, denyHosts  []string
	principals             []string // --principal (list, remove)
	operations             []string
	topics, groups, txnIDs []string
	cluster                bool
	pattern                string
	producer, consumer     bool
	out                    outputFlag
}

func (f *aclFlags) register(fs *pflag.FlagSet) {
	filter := f.mode != aclAdd
	if f.mode != aclList {
		fs.StringArrayVar(&f.allow, "allow-principal", nil, pick(filter, "remove ACLs allowing this principal (repeatable)", "principal to allow, Type:Name as User:alice, User:* for every user (repeatable)"))
		fs.StringArrayVar(&f.deny, "deny-principal", nil, pick(filter, "remove ACLs denying this principal (repeatable)", "principal to deny, Type:Name as User:mallory (repeatable); a DENY wins over every ALLOW"))
		fs.StringArrayVar(&f.allowHosts, "allow-host", nil, pick(filter, "with --allow-principal, remove only ACLs of this host (repeatable; default: any host)", "with --allow-principal, the IP address it is allowed from (repeatable; default: *, every host)"))
		fs.StringArrayVar(&f.denyHosts, "deny-host", nil, pick(filter, "with --deny-principal, remove only ACLs of this host (repeatable; default: any host)", "with --deny-principal, the IP address it is denied from (repeatable; default: *, every host)"))
		fs.BoolVar(&f.producer, "producer", false, pick(filter, "the ACLs --producer adds: WRITE, DESCRIBE and CREATE on the --topic resources, WRITE and DESCRIBE on the --transactional-id ones", "a producer's operations: WRITE, DESCRIBE and CREATE on the --topic resources, WRITE and DESCRIBE on the --transactional-id ones"))
		fs.BoolVar(&f.consumer, "consumer", false, pick(filter, "the ACLs --consumer adds: READ and DESCRIBE on the --topic resources, READ on the --group ones", "a consumer's operations: READ and DESCRIBE on the --topic resources, READ on the --group ones (give --group)"))
	}
	if filter {
		fs.StringArrayVar(&f.principals, "principal", nil, "only ACLs of this principal, Type:Name as User:alice, allowing or denying, from any host (repeatable; default: every principal)")
	}
	fs.StringSliceVar(&f.operations, "operation", nil, pick(filter,
		"only ACLs of this operation, repeatable or comma-separated (default: any)",
		"operation to allow or deny, repeatable or comma-separated: all, read, write, create, delete, alter, describe, cluster-action, describe-configs, alter-configs, idempotent-write (required unless --producer or --consumer)"))
	fs.StringArrayVar(&f.topics, "topic", nil, pick(filter, "only ACLs on this topic (repeatable)", "topic the ACLs are on (repeatable; * for every topic, or a prefix with --resource-pattern-type prefixed)"))
	fs.StringArrayVar(&f.groups, "group", nil, pick(filter, "only ACLs on this consumer group (repeatable)", "consumer group the ACLs are on (repeatable)"))
	fs.StringArrayVar(&f.txnIDs, "transactional-id", nil, pick(filter, "only ACLs on this transactional id (repeatable)", "transactional id the ACLs are on (repeatable)"))
	fs.BoolVar(&f.cluster, "cluster", false, pick(filter, "only ACLs on the cluster", "the ACLs are on the cluster (kafka-cluster): creating topics, managing ACLs, quotas, users and configs"))
	switch f.mode {
	case aclAdd:
		fs.StringVar(&f.pattern, "resource-pattern-type", "literal", "how the resource names match: literal (the name; * every resource of its type) or prefixed (every name that starts with it)")
	default:
		fs.StringVar(&f.pattern, "resource-pattern-type", "", "which ACLs' resource patterns: literal, prefixed, any (both, the names equal) or match (every ACL that applies to the named resource: literal, * and prefixes) (default: literal with a resource named, else any)")
	}
	f.out.register(fs)
}

func pick(filter bool, ifFilter, ifAdd string) string {
	if filter {
		return ifFilter
	}
	return ifAdd
}

// aclGroup is ACLs on some resources with the same operations (the
// --producer and --consumer shortcuts make several): one kadm builder.
type aclGroup struct {
	topics, groups, txnIDs []string
	cluster                bool
	ops                    []kadm.ACLOperation // none: any (filters)
}

func (g aclGroup) hasResource() bool {
	return len(g.topics)+len(g.groups)+len(g.txnIDs) > 0 || g.cluster
}

// aclRequest is what the flags ask for, checked.
type aclRequest struct {
	groups  []aclGroup
	pattern kadm.ACLPattern
	// allow and deny are the principals allowed and denied (add), or
	// the principals of the ACLs of each permission (filters; both
	// empty: every principal of either).
	allow, deny           []string
	allowHosts, denyHosts []string // empty: every host (add: *)
}

// check turns the flags into a request, refusing what kafka-acls.sh or
// the brokers would refuse, with the flag named.
func (f *aclFlags) check() (aclRequest, error) {
	var r aclRequest
	if err := f.out.check(); err != nil {
		return r, err
	}
	filter := f.mode != aclAdd
	for _, p := range []struct {
		flag string
		vals []string
	}{{"--allow-principal", f.allow}, {"--deny-principal", f.deny}, {"--principal", f.principals}} {
		for _, v := range p.vals {
			if err := checkPrincipal(p.flag, v); err != nil {
				return r, err
			}
		}
	}
	for _, h := range []struct {
		flag, principalFlag string
		hosts, principals   []string
	}{{"--allow-host", "--allow-principal", f.allowHosts, f.allow}, {"--deny-host", "--deny-principal", f.denyHosts, f.deny}} {
		for _, v := range h.hosts {
			if strings.TrimSpace(v) == "" {
				return r, fmt.Errorf("%s: an IP address, or * for every host", h.flag)
			}
		}
		if len(h.hosts) > 0 && len(h.principals) == 0 {
			return r, fmt.Errorf("%s %s: give %s, whose host it is", h.flag, h.hosts[0], h.principalFlag)
		}
	}
	for _, n := range []struct {
		flag  string
		names []string
	}{{"--topic", f.topics}, {"--group", f.groups}, {"--transactional-id", f.txnIDs}} {
		if slices.Contains(n.names, "") {
			return r, fmt.Errorf("%s: a name", n.flag)
		}
	}
	if !filter && len(f.allow)+len(f.deny) == 0 {
		return r, errors.New("give --allow-principal or --deny-principal: whom the ACLs are for")
	}

	var ops []kadm.ACLOperation
	for _, v := range f.operations {
		op, err := acl.ParseOperation(v)
		if err != nil {
			return r, fmt.Errorf("--operation %q: %w", v, err)
		}
		if op == acl.AnyOperation && !filter {
			return r, fmt.Errorf("--operation %q: only to list or remove ACLs (all allows every operation)", v)
		}
		if !slices.Contains(ops, kadm.ACLOperation(op)) {
			ops = append(ops, kadm.ACLOperation(op))
		}
	}
	named := aclGroup{topics: uniqueNames(f.topics), groups: uniqueNames(f.groups), txnIDs: uniqueNames(f.txnIDs), cluster: f.cluster}
	var err error
	if r.groups, err = f.aclGroups(named, ops); err != nil {
		return r, err
	}
	if !named.hasResource() && f.mode != aclList {
		return r, errors.New("give --topic, --group, --transactional-id or --cluster: the resources the ACLs are on")
	}

	switch {
	case f.pattern != "":
		p, err := acl.ParsePatternType(f.pattern)
		if err != nil {
			return r, fmt.Errorf("--resource-pattern-type %q: %w", f.pattern, err)
		}
		if !filter && p != acl.Literal && p != acl.Prefixed {
			return r, fmt.Errorf("--resource-pattern-type %q: ACLs are literal or prefixed (any and match select ACLs to list or remove)", f.pattern)
		}
		r.pattern = kadm.ACLPattern(p)
	case named.hasResource():
		r.pattern = kadm.ACLPatternLiteral
	default:
		r.pattern = kadm.ACLPatternAny
	}

	if filter {
		r.allow = uniqueNames(append(slices.Clone(f.principals), f.allow...))
		r.deny = uniqueNames(append(slices.Clone(f.principals), f.deny...))
	} else {
		r.allow, r.deny = uniqueNames(f.allow), uniqueNames(f.deny)
	}
	r.allowHosts, r.denyHosts = uniqueNames(f.allowHosts), uniqueNames(f.denyHosts)
	if !filter {
		if len(r.allowHosts) == 0 {
			r.allowHosts = []string{acl.Wildcard}
		}
		if len(r.denyHosts) == 0 {
			r.denyHosts = []string{acl.Wildcard}
		}
	}
	return r, nil
}

// aclGroups are the resources named with their operations: ops, or
// kafka-acls.sh's for --producer and --consumer.
func (f *aclFlags) aclGroups(named aclGroup, ops []kadm.ACLOperation) ([]aclGroup, error) {
	if !f.producer && !f.consumer {
		if len(ops) == 0 && f.mode == aclAdd {
			return nil, errors.New("give --operation (all for every operation), --producer or --consumer: what the ACLs allow or deny")
		}
		named.ops = ops
		return []aclGroup{named}, nil
	}
	switch {
	case len(ops) > 0:
		return nil, errors.New("--operation: not with --producer or --consumer, which choose the operations")
	case named.cluster:
		return nil, errors.New("--cluster: not with --producer or --consumer")
	case len(named.topics) == 0:
		return nil, errors.New("--producer and --consumer: give --topic, the topics produced to or consumed from")
	case f.consumer && len(named.groups) == 0:
		return nil, errors.New("--consumer: give --group, the consumer group it reads with")
	case !f.consumer && len(named.groups) > 0:
		return nil, errors.New("--group: only with --consumer")
	case !f.producer && len(named.txnIDs) > 0:
		return nil, errors.New("--transactional-id: only with --producer")
	}
	var groups []aclGroup
	if f.producer {
		groups = append(groups, aclGroup{topics: named.topics, ops: []kadm.ACLOperation{kadm.OpWrite, kadm.OpDescribe, kadm.OpCreate}})
		if len(named.txnIDs) > 0 {
			groups = append(groups, aclGroup{txnIDs: named.txnIDs, ops: []kadm.ACLOperation{kadm.OpWrite, kadm.OpDescribe}})
		}
	}
	if f.consumer {
		groups = append(groups,
			aclGroup{topics: named.topics, ops: []kadm.ACLOperation{kadm.OpRead, kadm.OpDescribe}},
			aclGroup{groups: named.groups, ops: []kadm.ACLOperation{kadm.OpRead}})
	}
	return groups, nil
}

// checkPrincipal refuses a principal that is not Type:Name.
func checkPrincipal(flag, p string) error {
	if typ, name, ok := strings.Cut(p, ":"); !ok || typ == "" || name == "" {
		return fmt.Errorf("%s %q: want Type:Name, as User:alice (User:* for every user)", flag, p)
	}
	return nil
}

// builder is g's kadm ACL builder: for creating (filter false: r's
// principals and hosts) or as a filter (unset parts match anything).
func (r aclRequest) builder(g aclGroup, filter bool) *kadm.ACLBuilder {
	b := kadm.NewACLs().
		MaybeTopics(g.topics...).MaybeGroups(g.groups...).MaybeTransactionalIDs(g.txnIDs...).MaybeClusters(g.cluster).
		ResourcePatternType(r.pattern)
	if !g.hasResource() {
		b.AnyResource()
	}
	b.Operations(g.ops...) // none: any
	if !filter || len(r.allow)+len(r.deny) > 0 {
		b.MaybeAllow(r.allow...).MaybeDeny(r.deny...)
		if len(r.allow) > 0 {
			b.AllowHosts(r.allowHosts...) // none: any
		}
		if len(r.deny) > 0 {
			b.DenyHosts(r.denyHosts...)
		}
		return b
	}
	return b.Allow().AllowHosts().Deny().DenyHosts()
}

// aclEntry is one ACL, with Kafka's names of its values, and for add and
// remove what became of it.
type aclEntry struct {
	ResourceType string `json:"resource_type"`
	Name         string `json:"name"`
	PatternType  string `json:"pattern_type"`
	Principal    string `json:"principal"`
	Host         string `json:"host"`
	Operation    string `json:"operation"`
	Permission   string `json:"permission"`
	// Result is created, removed or failed (add and remove).
	Result string `json:"result,omitempty"`
	Error  string `json:"error,omitempty"`
}

func newACLEntry(typ kmsg.ACLResourceType, name string, pattern kadm.ACLPattern, principal, host string, op kadm.ACLOperation, perm kmsg.ACLPermissionType) aclEntry {
	return aclEntry{
		ResourceType: acl.ResourceType(typ).String(), Name: name, PatternType: acl.PatternType(pattern).String(),
		Principal: principal, Host: host, Operation: acl.Operation(op).String(), Permission: acl.Permission(perm).String(),
	}
}

// binding is e as kafka-acls.sh prints an ACL, for messages.
func (e aclEntry) binding() string {
	return fmt.Sprintf("(principal=%s, host=%s, operation=%s, permissionType=%s) on %s:%s:%s",
		e.Principal, e.Host, e.Operation, e.Permission, e.ResourceType, e.PatternType, e.Name)
}

// key identifies e's ACL, whatever became of it.
func (e aclEntry) key() aclEntry { e.Result, e.Error = "", ""; return e }

// aclOrder sorts ACLs by resource (type, name, pattern), then principal,
// host, operation and permission.
func aclOrder(a, b aclEntry) int {
	return cmp.Or(cmp.Compare(a.ResourceType, b.ResourceType), cmp.Compare(a.Name, b.Name), cmp.Compare(a.PatternType, b.PatternType),
		cmp.Compare(a.Principal, b.Principal), cmp.Compare(a.Host, b.Host), cmp.Compare(a.Operation, b.Operation), cmp.Compare(a.Permission, b.Permission))
}

// printACLs prints ACLs one a line, with what became of them when
// withResult.
func printACLs(cmd *cobra.Command, out outputFlag, entries []aclEntry, withResult bool) error {
	if out.json() {
		return writeJSON(cmd, orEmpty(entries))
	}
	header := []string{"RESOURCE-TYPE", "NAME", "PATTERN", "PRINCIPAL", "HOST", "OPERATION", "PERMISSION"}
	if withResult {
		header = append(header, "RESULT")
	}
	t := newTable(cmd, header...)
	for _, e := range entries {
		row := []any{e.ResourceType, e.Name, e.PatternType, e.Principal, e.Host, e.Operation, e.Permission}
		if withResult {
			row = append(row, e.Result)
		}
		t.row(row...)
	}
	return t.flush()
}

// aclFailures gathers the errors of ACLs the cluster refused by error, so
// that a refusal of every ACL of a request (SECURITY_DISABLED,
// CLUSTER_AUTHORIZATION_FAILED) is said once.
type aclFailures struct {
	order []string
	byMsg map[string]*aclFailure
}

type aclFailure struct {
	err  error
	acls []string // what failed, as aclEntry.binding prints it
}

// add records that what (an ACL, or a filter) failed with err, a Kafka
// error with the broker's message, and returns err as it is said.
func (f *aclFailures) add(what string, err error, brokerMsg string) error {
	err = aclKafkaErr(err, brokerMsg)
	msg := err.Error()
	if f.byMsg == nil {
		f.byMsg = map[string]*aclFailure{}
	}
	fl, ok := f.byMsg[msg]
	if !ok {
		fl = &aclFailure{err: err}
		f.byMsg[msg] = fl
		f.order = append(f.order, msg)
	}
	fl.acls = append(fl.acls, what)
	return err
}

// err is every failure in one line: "ACL (principal=...) on TOPIC:LITERAL:t:
// ERR", or "3 ACLs: ERR" for several with the same error (noun: ACL, or
// "ACL filter").
func (f *aclFailures) err(noun string) error {
	var errs []error
	for _, msg := range f.order {
		fl := f.byMsg[msg]
		if len(fl.acls) == 1 {
			errs = append(errs, fmt.Errorf("%s %s: %w", noun, fl.acls[0], fl.err))
		} else {
			errs = append(errs, fmt.Errorf("%d %ss: %w", len(fl.acls), noun, fl.err))
		}
	}
	return joinErrs(errs)
}

// aclKafkaErr is err with the broker's message, and a hint where the
// error is one an operator meets setting ACLs up.
func aclKafkaErr(err error, brokerMsg string) error {
	var ke *kerr.Error
	if !errors.As(err, &ke) {
		return err
	}
	msg := ke.Message
	if brokerMsg != "" {
		msg += ": " + brokerMsg
	}
	switch ke {
	case kerr.SecurityDisabled:
		msg += " (the brokers enforce no ACLs: run them with --acls)"
	case kerr.ClusterAuthorizationFailed:
		msg += " (managing ACLs takes ALTER on the cluster, listing them DESCRIBE: ask a super user, --super-users or the SASL bootstrap user)"
	}
	return &messageErr{err: ke, msg: msg}
}

func newACLAddCmd() *cobra.Command {
	f := aclFlags{mode: aclAdd}
	cmd := &cobra.Command{
		Use:   "add --allow-principal User:NAME --operation OP --topic NAME",
		Short: "Allow or deny principals operations on resources (CreateAcls; kafka-acls.sh --add)",
		Long: `Adds an ACL for every principal (--allow-principal, --deny-principal), host,
operation and resource named. A principal is User:NAME, the SASL user or a
client certificate's subject (User:CN=alice,O=example); User:* is every user.
A DENY wins over every ALLOW. Allowing READ, WRITE, DELETE or ALTER allows
DESCRIBE too, and ALTER_CONFIGS allows DESCRIBE_CONFIGS. An ACL the cluster has
already is not added twice. Needs ALTER on the cluster: a super user's.`,
		Example: `  shale acl add --allow-principal User:alice --operation read --topic orders
  shale acl add --allow-principal User:app --producer --topic orders
  shale acl add --allow-principal User:billing --consumer --topic orders --group billing
  shale acl add --allow-principal User:etl --operation read,describe --topic logs- --resource-pattern-type prefixed
  shale acl add --deny-principal User:mallory --deny-host 10.0.0.7 --operation all --cluster`,
		Args: exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := f.check()
			if err != nil {
				return err
			}
			return runAdmin(cmd, func(ctx context.Context, adm *kadm.Client, _ *cliClient) error {
				var entries []aclEntry
				var failed aclFailures
				for _, g := range r.groups {
					res, err := adm.CreateACLs(ctx, r.builder(g, false))
					if err != nil {
						return fmt.Errorf("adding ACLs: %w", err)
					}
					for _, c := range res {
						e := newACLEntry(c.Type, c.Name, c.Pattern, c.Principal, c.Host, c.Operation, c.Permission)
						e.Result = "created"
						if c.Err != nil {
							e.Result, e.Error = "failed", failed.add(e.binding(), c.Err, c.ErrMessage).Error()
						}
						entries = append(entries, e)
					}
				}
				if err := printACLs(cmd, f.out, entries, true); err != nil {
					return err
				}
				return failed.err("ACL")
			})
		},
	}
	f.register(cmd.Flags())
	return cmd
}

func newACLListCmd() *cobra.Command {
	f := aclFlags{mode: aclList}
	cmd := &cobra.Command{
		Use:   "list [--topic NAME] [--principal User:NAME]",
		Short: "List ACLs (DescribeAcls; kafka-acls.sh --list)",
		Long: `Lists the ACLs on the resources named (default: every ACL), one a line, with
their resource, pattern, principal, host, operation and permission. With
--resource-pattern-type match it lists every ACL that applies to a resource
named: its literal ACLs, those of * and those of its prefixes. Needs DESCRIBE
on the cluster.`,
		Example: `  shale acl list
  shale acl list --topic orders --resource-pattern-type match
  shale acl list --principal User:alice -o json`,
		Args: exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := f.check()
			if err != nil {
				return err
			}
			return runAdmin(cmd, func(ctx context.Context, adm *kadm.Client, _ *cliClient) error {
				entries := []aclEntry{}
				seen := map[aclEntry]bool{}
				var refused filterErrs
				for _, g := range r.groups {
					res, err := adm.DescribeACLs(ctx, r.builder(g, true))
					if err != nil {
						return fmt.Errorf("listing ACLs: %w", err)
					}
					for _, fr := range res {
						if fr.Err != nil {
							refused.add(fr.Err, fr.ErrMessage)
							continue
						}
						for _, d := range fr.Described {
							e := newACLEntry(d.Type, d.Name, d.Pattern, d.Principal, d.Host, d.Operation, d.Permission)
							if !seen[e] {
								seen[e] = true
								entries = append(entries, e)
							}
						}
					}
				}
				if err := refused.err(); err != nil {
					return fmt.Errorf("listing ACLs: %w", err)
				}
				slices.SortFunc(entries, aclOrder)
				return printACLs(cmd, f.out, entries, false)
			})
		},
	}
	f.register(cmd.Flags())
	return cmd
}

func newACLRemoveCmd() *cobra.Command {
	f := aclFlags{mode: aclRemove}
	cmd := &cobra.Command{
		Use:   "remove --topic NAME [--allow-principal User:NAME] [--operation OP]",
		Short: "Remove the ACLs a filter selects (DeleteAcls; kafka-acls.sh --remove)",
		Long: `Removes every ACL on the resources named that the other flags select: a flag
not given matches anything, so --topic orders alone removes every ACL on the
topic orders, and --allow-principal User:alice --operation read --topic orders
what shale acl add gave with the same flags. --principal selects ACLs allowing
or denying the principal. It prints the ACLs removed. Needs ALTER on the
cluster.`,
		Example: `  shale acl remove --allow-principal User:alice --operation read --topic orders
  shale acl remove --principal User:alice --topic orders --topic payments
  shale acl remove --allow-principal User:app --producer --topic orders
  shale acl remove --topic logs- --resource-pattern-type prefixed`,
		Args: exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := f.check()
			if err != nil {
				return err
			}
			return runAdmin(cmd, func(ctx context.Context, adm *kadm.Client, _ *cliClient) error {
				entries := []aclEntry{}
				seen := map[aclEntry]bool{}
				var refused filterErrs
				var failed aclFailures
				for _, g := range r.groups {
					res, err := adm.DeleteACLs(ctx, r.builder(g, true))
					if err != nil {
						return fmt.Errorf("removing ACLs: %w", err)
					}
					for _, fr := range res {
						if fr.Err != nil {
							refused.add(fr.Err, fr.ErrMessage)
							continue
						}
						for _, d := range fr.Deleted {
							e := newACLEntry(d.Type, d.Name, d.Pattern, d.Principal, d.Host, d.Operation, d.Permission)
							if seen[e] {
								continue
							}
							seen[e] = true
							e.Result = "removed"
							if d.Err != nil {
								e.Result, e.Error = "failed", failed.add(e.binding(), d.Err, d.ErrMessage).Error()
							}
							entries = append(entries, e)
						}
					}
				}
				slices.SortFunc(entries, aclOrder)
				if err := printACLs(cmd, f.out, entries, true); err != nil {
					return err
				}
				var errs []error
				if err := refused.err(); err != nil {
					errs = append(errs, fmt.Errorf("removing ACLs: %w", err))
				}
				if err := failed.err("ACL"); err != nil {
					errs = append(errs, err)
				}
				if len(errs) == 0 && len(entries) == 0 && !f.out.json() {
					fmt.Fprintln(cmd.ErrOrStderr(), "no ACL matched: none removed")
				}
				return joinErrs(errs)
			})
		},
	}
	f.register(cmd.Flags())
	return cmd
}

// filterErrs are the errors of ACL filters (DescribeAcls, DeleteAcls),
// each said once: a broker refuses every filter of a request alike.
type filterErrs struct{ errs []error }

func (f *filterErrs) add(err error, brokerMsg string) {
	err = aclKafkaErr(err, brokerMsg)
	if !slices.ContainsFunc(f.errs, func(e error) bool { return e.Error() == err.Error() }) {
		f.errs = append(f.errs, err)
	}
}

func (f *filterErrs) err() error { return joinErrs(f.errs) }
