package clientquota

import (
	"fmt"
	"math"
	"net/netip"

	"github.com/shale-log/shale/metadata"
)

// Component is one component of an entity as requests carry it: a type
// and a name, nil for the default.
type Component struct {
	Type string
	Name *string
}

// Entity checks an AlterClientQuotas entity and returns it: user,
// client-id, or both, or ip alone (an address, or the default), each type
// once, as Kafka allows.
func Entity(components []Component) (metadata.QuotaEntity, error) {
	var e metadata.QuotaEntity
	if len(components) == 0 {
		return e, fmt.Errorf("invalid empty client quota entity")
	}
	for _, c := range components {
		var n *metadata.QuotaName
		switch c.Type {
		case TypeUser:
			n = &e.User
		case TypeClientID:
			n = &e.ClientID
		case TypeIP:
			n = &e.IP
		default:
			return e, fmt.Errorf("unknown client quota entity type %q (user, client-id or ip)", c.Type)
		}
		if n.Set {
			return e, fmt.Errorf("client quota entity type %q given twice", c.Type)
		}
		n.Set = true
		if c.Name == nil {
			n.Default = true
		} else {
			n.Name = *c.Name
		}
	}
	if e.IP.Set && (e.User.Set || e.ClientID.Set) {
		return e, fmt.Errorf("an ip quota entity cannot have a user or client-id too")
	}
	if e.IP.Set && !e.IP.Default {
		if _, err := netip.ParseAddr(e.IP.Name); err != nil {
			return e, fmt.Errorf("ip quota entity %q is not an IP address", e.IP.Name)
		}
	}
	return e, nil
}

// CheckValue checks a quota value AlterClientQuotas sets on e: Kafka's
// keys for the entity's kind: the byte rates, each a whole number of bytes
// per second above zero, controller_mutation_rate, partitions a second
// above zero, request_percentage, a percentage of one thread's time above
// zero, and connection_creation_rate (ip entities only), a whole number
// of connections a second above zero.
func CheckValue(e metadata.QuotaEntity, key string, v float64) error {
	if err := CheckKey(e, key); err != nil {
		return err
	}
	switch key {
	case ControllerMutationRate:
		if v <= 0 || math.IsInf(v, 0) || math.IsNaN(v) {
			return fmt.Errorf("%s must be a number of partitions per second above 0, not %v", key, v)
		}
		return nil
	case RequestPercentage:
		if v <= 0 || math.IsInf(v, 0) || math.IsNaN(v) {
			return fmt.Errorf("%s must be a percentage of one thread's time above 0 (200: two threads), not %v", key, v)
		}
		return nil
	case ConnectionCreationRate:
		if v <= 0 || v != math.Trunc(v) || v > math.MaxInt32 {
			return fmt.Errorf("%s must be a whole number of connections per second above 0, not %v", key, v)
		}
		return nil
	}
	if v <= 0 || v != math.Trunc(v) || math.IsInf(v, 0) {
		return fmt.Errorf("%s must be a whole number of bytes per second above 0, not %v", key, v)
	}
	return nil
}

// CheckKey checks a quota key for e (set or removed).
func CheckKey(e metadata.QuotaEntity, key string) error {
	switch key {
	case ProducerByteRate, ConsumerByteRate, ControllerMutationRate, RequestPercentage:
		if e.IP.Set {
			return fmt.Errorf("%s is a user or client-id quota, not an ip one", key)
		}
		return nil
	case ConnectionCreationRate:
		if !e.IP.Set {
			return fmt.Errorf("%s is an ip quota, not a user or client-id one", key)
		}
		return nil
	}
	return fmt.Errorf("invalid quota configuration key %q", key)
}

// Match types of DescribeClientQuotas filter components.
const (
	MatchExact   int8 = 0 // the name given
	MatchDefault int8 = 1 // the default
	MatchAny     int8 = 2 // any name, not the default
)

// FilterComponent is one component of a DescribeClientQuotas filter.
type FilterComponent struct {
	Type  string
	Match int8
	Name  *string // for MatchExact
}

// CheckFilter checks a DescribeClientQuotas filter as Kafka does: known
// types, each once, ip not with user or client-id, a name for exact
// matches.
func CheckFilter(comps []FilterComponent) error {
	seen := map[string]bool{}
	for _, c := range comps {
		switch c.Type {
		case TypeUser, TypeClientID, TypeIP:
		default:
			return fmt.Errorf("custom entity type %q not supported", c.Type)
		}
		if seen[c.Type] {
			return fmt.Errorf("duplicate %s filter component", c.Type)
		}
		seen[c.Type] = true
		switch c.Match {
		case MatchExact:
			if c.Name == nil {
				return fmt.Errorf("the %s filter component matches a name exactly but gives none", c.Type)
			}
		case MatchDefault, MatchAny:
		default:
			return fmt.Errorf("unknown match type %d", c.Match)
		}
	}
	if seen[TypeIP] && (seen[TypeUser] || seen[TypeClientID]) {
		return fmt.Errorf("invalid entity filter component combination: an ip filter component cannot be used with user or client-id ones")
	}
	return nil
}

// Matches reports whether e passes a checked filter: each component's
// type is in e, matching as it says, and with strict e has no other
// component.
func Matches(e metadata.QuotaEntity, comps []FilterComponent, strict bool) bool {
	for _, c := range comps {
		var n metadata.QuotaName
		switch c.Type {
		case TypeUser:
			n = e.User
		case TypeClientID:
			n = e.ClientID
		case TypeIP:
			n = e.IP
		}
		switch {
		case !n.Set:
			return false
		case c.Match == MatchExact && (n.Default || n.Name != *c.Name):
			return false
		case c.Match == MatchDefault && !n.Default:
			return false
		case c.Match == MatchAny && n.Default:
			return false
		}
	}
	if strict {
		set := 0
		for _, n := range [...]metadata.QuotaName{e.User, e.ClientID, e.IP} {
			if n.Set {
				set++
			}
		}
		return set == len(comps)
	}
	return true
}

// Components are e's components as responses carry them, in the order
// user, client-id, ip.
func Components(e metadata.QuotaEntity) []Component {
	var out []Component
	for _, c := range [...]struct {
		typ string
		n   metadata.QuotaName
	}{{TypeUser, e.User}, {TypeClientID, e.ClientID}, {TypeIP, e.IP}} {
		if !c.n.Set {
			continue
		}
		comp := Component{Type: c.typ}
		if !c.n.Default {
			name := c.n.Name
			comp.Name = &name
		}
		out = append(out, comp)
	}
	return out
}
