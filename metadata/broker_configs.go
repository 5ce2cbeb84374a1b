package metadata

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// DefaultBrokerConfigs is the entity of the cluster-wide default broker
// configs (Kafka's broker entity with an empty name,
// kafka-configs --entity-type brokers --entity-default), in
// Snapshot.BrokerConfigs and UpdateBrokerConfigs.
const DefaultBrokerConfigs int32 = -1

func (s *Store) brokerConfigsPrefix() string { return s.prefix + "broker-configs/" }

// brokerConfigsKey is broker-configs/<id>, or broker-configs/default for
// the cluster-wide default.
func (s *Store) brokerConfigsKey(id int32) string {
	if id == DefaultBrokerConfigs {
		return s.brokerConfigsPrefix() + "default"
	}
	return s.brokerConfigsPrefix() + pad(id)
}

// parseBrokerConfigsKey is brokerConfigsKey's inverse on the part after
// the prefix's broker-configs/.
func parseBrokerConfigsKey(s string) (int32, bool) {
	if s == "default" {
		return DefaultBrokerConfigs, true
	}
	id, err := strconv.ParseInt(s, 10, 32)
	if err != nil || id < 0 {
		return 0, false
	}
	return int32(id), true
}

// noBrokerConfigs is the record of an entity without dynamic configs: it
// reads as no record (see putBrokerConfigs).
var noBrokerConfigs = []byte("{}")

// UpdateBrokerConfigs replaces the dynamic configs of broker id (or, with
// DefaultBrokerConfigs, the cluster-wide default) with mutate's result,
// retrying when another writer changed them in between; a write whose
// outcome is unknown is settled (see swapKey), a first one (no record
// yet) too: the settle fences it by creating the record as
// noBrokerConfigs. An empty result is written as noBrokerConfigs, never
// removes the record: a write guarded on the record's absence (the first)
// whose outcome was unknown would apply again whenever the record were
// gone. So a record, once written, stays, one per entity. The configs
// need not name a live broker: as in Kafka, they wait for a broker of
// that id.
func (s *Store) UpdateBrokerConfigs(ctx context.Context, id int32, mutate func(map[string]string) (map[string]string, error)) (int64, error) {
	if id < DefaultBrokerConfigs {
		return 0, fmt.Errorf("metadata: broker id %d", id)
	}
	return swapJSONMap(ctx, s, s.brokerConfigsKey(id), noBrokerConfigs, "broker configs", mutate)
}

// swapJSONMap replaces the record at key, a JSON object, with mutate's
// result, as UpdateBrokerConfigs describes: retried on a concurrent
// change, a write of unknown outcome settled, an empty result written as
// empty (never removing the record). A missing record, or one of null,
// reads as an empty map.
func swapJSONMap[V any](ctx context.Context, s *Store, key string, empty []byte, what string, mutate func(map[string]V) (map[string]V, error)) (int64, error) {
	return s.swapKey(ctx, key, true, empty, func(kv *mvccpb.KeyValue) (clientv3.Op, error) {
		cur := map[string]V{}
		if kv != nil {
			if err := json.Unmarshal(kv.Value, &cur); err != nil {
				return clientv3.Op{}, fmt.Errorf("metadata: %s %s: %w", what, key, err)
			}
			if cur == nil { // a record of null
				cur = map[string]V{}
			}
		}
		next, err := mutate(cur)
		if err != nil {
			return clientv3.Op{}, err
		}
		if len(next) == 0 {
			return putUnlessSame(kv, key, empty, empty)
		}
		val, err := json.Marshal(next)
		if err != nil {
			return clientv3.Op{}, err
		}
		return putUnlessSame(kv, key, val, empty)
	})
}

// putBrokerConfigs records a broker-configs/ key in the watcher's state.
func (st *state) putBrokerConfigs(log *slog.Logger, key, rest string, val []byte) {
	id, ok := parseBrokerConfigsKey(rest)
	if !ok {
		log.Error("bad broker configs key", "key", key)
		return
	}
	var m map[string]string
	if err := json.Unmarshal(val, &m); err != nil {
		// The broker keeps its previous configs for this entity.
		log.Error("unreadable broker configs record: the previous configs stay in force", "key", key, "err", err)
		return
	}
	if len(m) == 0 {
		// noBrokerConfigs: no configs, as no record.
		delete(st.brokerConfigs, id)
		return
	}
	st.brokerConfigs[id] = m
}

func (st *state) delBrokerConfigs(rest string) {
	if id, ok := parseBrokerConfigsKey(strings.TrimPrefix(rest, "broker-configs/")); ok {
		delete(st.brokerConfigs, id)
	}
}
