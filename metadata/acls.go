package metadata

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// ACLResource is an ACL's resource pattern, in Kafka's values: the
// resource type (TOPIC 2, GROUP 3, CLUSTER 4, ...), the pattern type
// (LITERAL 3, PREFIXED 4) and the name.
type ACLResource struct {
	Type    int8
	Pattern int8
	Name    string
}

// ACLEntry is one ACL on a resource pattern, in Kafka's values: who
// ("User:alice"), from which host ("*": any), the operation (READ 3,
// WRITE 4, ...) and the permission (DENY 2, ALLOW 3).
type ACLEntry struct {
	Principal  string `json:"principal"`
	Host       string `json:"host"`
	Operation  int8   `json:"operation"`
	Permission int8   `json:"permission"`
}

func (s *Store) aclsPrefix() string { return s.prefix + "acls/" }

// aclKey is acls/<type>/<pattern>/<query-escaped name>: one key for each
// resource pattern, holding its entries.
func (s *Store) aclKey(r ACLResource) string {
	return fmt.Sprintf("%s%d/%d/%s", s.aclsPrefix(), r.Type, r.Pattern, url.QueryEscape(r.Name))
}

// parseACLKey reads what follows acls/ in a key.
func parseACLKey(rest string) (ACLResource, bool) {
	parts := strings.SplitN(rest, "/", 3)
	if len(parts) != 3 {
		return ACLResource{}, false
	}
	typ, err1 := strconv.ParseInt(parts[0], 10, 8)
	pat, err2 := strconv.ParseInt(parts[1], 10, 8)
	name, err3 := url.QueryUnescape(parts[2])
	if err1 != nil || err2 != nil || err3 != nil || name == "" {
		return ACLResource{}, false
	}
	return ACLResource{Type: int8(typ), Pattern: int8(pat), Name: name}, true
}

// noACLs is the record of a resource pattern whose entries were all
// deleted: it reads as no record.
var noACLs = []byte("[]")

// UpdateACLs replaces the entries of resource r with mutate's result, in
// one etcd write (its revision is returned). Kafka's CreateAcls and
// DeleteAcls are this, for each resource pattern they touch.
func (s *Store) UpdateACLs(ctx context.Context, r ACLResource, mutate func([]ACLEntry) ([]ACLEntry, error)) (int64, error) {
	if r.Name == "" {
		return 0, fmt.Errorf("metadata: an ACL resource with an empty name")
	}
	key := s.aclKey(r)
	return s.swapKey(ctx, key, true, noACLs, func(kv *mvccpb.KeyValue) (clientv3.Op, error) {
		var cur []ACLEntry
		if kv != nil {
			if err := json.Unmarshal(kv.Value, &cur); err != nil {
				return clientv3.Op{}, fmt.Errorf("metadata: ACLs %s: %w", key, err)
			}
		}
		next, err := mutate(cur)
		if err != nil {
			return clientv3.Op{}, err
		}
		if len(next) == 0 {
			return putUnlessSame(kv, key, noACLs, noACLs)
		}
		val, err := json.Marshal(next)
		if err != nil {
			return clientv3.Op{}, err
		}
		return putUnlessSame(kv, key, val, noACLs)
	})
}

// putACLs records an acls/ key in the watcher's state.
func (st *state) putACLs(log *slog.Logger, key, rest string, val []byte) {
	r, ok := parseACLKey(rest)
	if !ok {
		log.Error("bad ACL key", "key", key)
		return
	}
	var entries []ACLEntry
	if err := json.Unmarshal(val, &entries); err != nil {
		// The resource keeps the entries read before: a record
		// unreadable now neither opens nor closes anything.
		log.Error("unreadable ACL record: the previous ACLs stay in force", "key", key, "err", err)
		return
	}
	if len(entries) == 0 {
		delete(st.acls, r)
		return
	}
	st.acls[r] = entries
}

func (st *state) delACLs(rest string) {
	if r, ok := parseACLKey(rest); ok {
		delete(st.acls, r)
	}
}
