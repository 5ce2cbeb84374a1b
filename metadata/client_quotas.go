package metadata

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
)

// QuotaName is one component of a client quota entity: absent (not Set),
// the default (Default: Kafka's entity name null, which applies to every
// name that has no quota of its own), or Name.
type QuotaName struct {
	Set     bool
	Default bool
	Name    string
}

// QuotaEntity is a client quota entity as Kafka's (kafka-configs
// --entity-type users/clients/ips): a user, a client id, a user and a
// client id, or an IP address. It is comparable, a map key.
type QuotaEntity struct {
	User, ClientID, IP QuotaName
}

// quotaComponents are the entity types in key order.
var quotaComponents = [...]string{"user", "client-id", "ip"}

func (e *QuotaEntity) component(i int) *QuotaName {
	return [...]*QuotaName{&e.User, &e.ClientID, &e.IP}[i]
}

// Key is the entity's canonical text: its components in the order user,
// client-id, ip, separated by slashes, each "type=name" with the name
// query-escaped, or "type" alone for the default. "user=alice/client-id"
// is user alice with the default client id.
func (e QuotaEntity) Key() string {
	var parts []string
	for i, typ := range quotaComponents {
		c := e.component(i)
		switch {
		case !c.Set:
		case c.Default:
			parts = append(parts, typ)
		default:
			parts = append(parts, typ+"="+url.QueryEscape(c.Name))
		}
	}
	return strings.Join(parts, "/")
}

// ParseQuotaEntity is Key's inverse. It checks the form only, not which
// combinations Kafka allows (the broker's AlterClientQuotas does).
func ParseQuotaEntity(key string) (QuotaEntity, bool) {
	var e QuotaEntity
	next := 0
	for _, part := range strings.Split(key, "/") {
		typ, name, named := strings.Cut(part, "=")
		i := next
		for i < len(quotaComponents) && quotaComponents[i] != typ {
			i++
		}
		if i == len(quotaComponents) {
			return QuotaEntity{}, false // unknown, repeated or out of order
		}
		next = i + 1
		c := e.component(i)
		c.Set, c.Default = true, !named
		if named {
			n, err := url.QueryUnescape(name)
			if err != nil {
				return QuotaEntity{}, false
			}
			c.Name = n
		}
	}
	return e, key != ""
}

func (s *Store) clientQuotasPrefix() string { return s.prefix + "client-quotas/" }

// noClientQuotas is the record of an entity without quotas: it reads as no
// record (see UpdateClientQuotas).
var noClientQuotas = []byte("{}")

// UpdateClientQuotas replaces entity's quotas (Kafka's names, such as
// producer_byte_rate, to their values) with mutate's result, as
// UpdateBrokerConfigs replaces broker configs: retried when another writer
// changed them in between, a write of unknown outcome settled, and an
// empty result written as noClientQuotas, never removing the record.
func (s *Store) UpdateClientQuotas(ctx context.Context, entity QuotaEntity, mutate func(map[string]float64) (map[string]float64, error)) (int64, error) {
	k := entity.Key()
	if k == "" {
		return 0, fmt.Errorf("metadata: an empty client quota entity")
	}
	return swapJSONMap(ctx, s, s.clientQuotasPrefix()+k, noClientQuotas, "client quotas", mutate)
}

// putClientQuotas records a client-quotas/ key in the watcher's state.
func (st *state) putClientQuotas(log *slog.Logger, key, rest string, val []byte) {
	e, ok := ParseQuotaEntity(rest)
	if !ok {
		log.Error("bad client quotas key", "key", key)
		return
	}
	var m map[string]float64
	if err := json.Unmarshal(val, &m); err != nil {
		// The broker keeps the entity's previous quotas.
		log.Error("unreadable client quotas record: the previous quotas stay in force", "key", key, "err", err)
		return
	}
	if len(m) == 0 {
		delete(st.clientQuotas, e)
		return
	}
	st.clientQuotas[e] = m
}

func (st *state) delClientQuotas(rest string) {
	if e, ok := ParseQuotaEntity(rest); ok {
		delete(st.clientQuotas, e)
	}
}
