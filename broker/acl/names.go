package acl

import (
	"fmt"
	"strings"
)

// Kafka's names of the values, as kafka-acls.sh and the admin clients
// print them.
var (
	resourceTypeNames = map[ResourceType]string{
		AnyResource: "ANY", Topic: "TOPIC", Group: "GROUP", Cluster: "CLUSTER",
		TransactionalID: "TRANSACTIONAL_ID", DelegationToken: "DELEGATION_TOKEN", User: "USER",
	}
	patternTypeNames = map[PatternType]string{AnyPattern: "ANY", Match: "MATCH", Literal: "LITERAL", Prefixed: "PREFIXED"}
	operationNames   = map[Operation]string{
		AnyOperation: "ANY", All: "ALL", Read: "READ", Write: "WRITE", Create: "CREATE", Delete: "DELETE",
		Alter: "ALTER", Describe: "DESCRIBE", ClusterAction: "CLUSTER_ACTION", DescribeConfigs: "DESCRIBE_CONFIGS",
		AlterConfigs: "ALTER_CONFIGS", IdempotentWrite: "IDEMPOTENT_WRITE", CreateTokens: "CREATE_TOKENS",
		DescribeTokens: "DESCRIBE_TOKENS",
	}
	permissionNames = map[Permission]string{AnyPermission: "ANY", Deny: "DENY", Allow: "ALLOW"}
)

func name[T ~int8](names map[T]string, v T) string {
	if s, ok := names[v]; ok {
		return s
	}
	return fmt.Sprintf("UNKNOWN(%d)", v)
}

func parse[T ~int8](names map[T]string, what, s string) (T, error) {
	want := strings.ToUpper(strings.ReplaceAll(strings.TrimSpace(s), "-", "_"))
	for v, n := range names {
		if n == want || strings.ReplaceAll(n, "_", "") == want {
			return v, nil
		}
	}
	return 0, fmt.Errorf("unknown %s %q", what, s)
}

func (t ResourceType) String() string { return name(resourceTypeNames, t) }
func (p PatternType) String() string  { return name(patternTypeNames, p) }
func (o Operation) String() string    { return name(operationNames, o) }
func (p Permission) String() string   { return name(permissionNames, p) }

// ParseResourceType, ParsePatternType, ParseOperation and ParsePermission
// read Kafka's names, in any case, with - or _ or nothing between words
// ("describe-configs", "DescribeConfigs", "DESCRIBE_CONFIGS").
func ParseResourceType(s string) (ResourceType, error) {
	return parse(resourceTypeNames, "resource type", s)
}

func ParsePatternType(s string) (PatternType, error) {
	return parse(patternTypeNames, "pattern type", s)
}

func ParseOperation(s string) (Operation, error) { return parse(operationNames, "operation", s) }

func ParsePermission(s string) (Permission, error) {
	return parse(permissionNames, "permission type", s)
}

// String prints b as kafka-acls.sh does.
func (b Binding) String() string {
	return fmt.Sprintf("(principal=%s, host=%s, operation=%s, permissionType=%s) on %s:%s:%s",
		b.Entry.Principal, b.Entry.Host, b.Entry.Operation, b.Entry.Permission,
		b.Resource.Type, b.Resource.Pattern, b.Resource.Name)
}
