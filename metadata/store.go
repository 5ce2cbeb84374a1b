package metadata

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// defaultTimeout bounds every etcd call whose context has no deadline.
const defaultTimeout = 10 * time.Second

// Store reads and writes the metadata of one cluster (one key prefix).
type Store struct {
	cli    *clientv3.Client
	prefix string
}

// NewStore returns a store over cli under prefix (DefaultPrefix if empty).
func NewStore(cli *clientv3.Client, prefix string) *Store {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	return &Store{cli: cli, prefix: prefix}
}

// Client is the etcd client the store uses.
func (s *Store) Client() *clientv3.Client { return s.cli }

// Prefix is the store's key prefix.
func (s *Store) Prefix() string { return s.prefix }

func withDeadline(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, defaultTimeout)
}

// isTooLarge reports whether etcd refused a request for its size: too
// many operations in a transaction, a request over the server's
// max-request-bytes, or a message over the client's send limit. Such a
// request was not applied.
func isTooLarge(err error) bool {
	if errors.Is(err, rpctypes.ErrTooManyOps) || errors.Is(err, rpctypes.ErrRequestTooLarge) {
		return true
	}
	return status.Code(err) == codes.ResourceExhausted
}

// IsUnavailable reports an error of an etcd call that says etcd could
// not answer now (no leader, a leader change, a server-side timeout, a
// lost or refused connection, overload) rather than refuse the request:
// the same request may succeed when tried again. A write that failed so
// may also have applied.
func IsUnavailable(err error) bool {
	for _, e := range []error{
		rpctypes.ErrNoLeader, rpctypes.ErrNotLeader, rpctypes.ErrLeaderChanged, rpctypes.ErrStopped,
		rpctypes.ErrTimeout, rpctypes.ErrTimeoutDueToLeaderFail, rpctypes.ErrTimeoutDueToConnectionLost,
		rpctypes.ErrTimeoutWaitAppliedIndex, rpctypes.ErrUnhealthy, rpctypes.ErrTooManyRequests,
	} {
		if errors.Is(err, e) {
			return true
		}
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded:
		return true
	}
	return false
}

// indeterminateErr is the error of a write (what) whose etcd call failed
// with err and whose outcome its settle could not tell: ErrIndeterminate,
// with the step of the settle that failed and its error when one did
// (serr; nil when the state read tells nothing).
func indeterminateErr(what string, err error, step string, serr error) error {
	if serr == nil {
		return fmt.Errorf("%w: %s: %w", ErrIndeterminate, what, err)
	}
	return fmt.Errorf("%w: %s: %w (%s: %w)", ErrIndeterminate, what, err, step, serr)
}

// resolveTimeout bounds the re-read that resolves an indeterminate write.
const resolveTimeout = 3 * time.Second

// resolveContext is the context of the re-read that learns whether an
// indeterminate write landed: it keeps the caller's values but not its
// cancellation or deadline (the write failing may be that deadline
// passing, and the answer is still needed), and has a short deadline of
// its own.
func resolveContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), resolveTimeout)
}

func pad(n int32) string { return fmt.Sprintf("%010d", n) }

func (s *Store) clusterIDKey() string            { return s.prefix + "cluster/id" }
func (s *Store) brokersPrefix() string           { return s.prefix + "brokers/" }
func (s *Store) brokerKey(id int32) string       { return s.brokersPrefix() + pad(id) }
func (s *Store) topicsPrefix() string            { return s.prefix + "topics/" }
func (s *Store) topicKey(name string) string     { return s.topicsPrefix() + name }
func (s *Store) partitionsPrefix() string        { return s.prefix + "partitions/" }
func (s *Store) partitionPrefix(t string) string { return s.partitionsPrefix() + t + "/" }
func (s *Store) partitionKey(t string, i int32) string {
	return s.partitionPrefix(t) + pad(i)
}
func (s *Store) clusterSecretKey() string       { return s.prefix + "cluster/secret" }
func (s *Store) deletedTopicsPrefix() string    { return s.prefix + "deleted-topics/" }
func (s *Store) deletedTopicKey(id UUID) string { return s.deletedTopicsPrefix() + id.String() }
func (s *Store) creatingPrefix() string         { return s.prefix + "creating/" }
func (s *Store) creatingKey(name string) string { return s.creatingPrefix() + name }
func (s *Store) producerIDKey() string          { return s.prefix + "producer-ids/next" }
func (s *Store) controllerPrefix() string       { return s.prefix + "controller/" }
func (s *Store) shuttingDownPrefix() string     { return s.prefix + "shutting-down/" }
func (s *Store) actedIncarnationsKey() string   { return s.prefix + "controller-state/incarnations" }
func (s *Store) shuttingDownKey(id int32) string {
	return s.shuttingDownPrefix() + pad(id)
}

// Revision returns the store's current revision.
func (s *Store) Revision(ctx context.Context) (int64, error) {
	ctx, cancel := withDeadline(ctx)
	defer cancel()
	resp, err := s.cli.Get(ctx, s.clusterIDKey(), clientv3.WithCountOnly())
	if err != nil {
		return 0, fmt.Errorf("metadata: %w", err)
	}
	return resp.Header.Revision, nil
}

// EnsureClusterID returns the cluster id, creating it on first use.
func (s *Store) EnsureClusterID(ctx context.Context) (string, error) {
	return s.ensureRandom(ctx, s.clusterIDKey(), 16, "cluster id")
}

// EnsureClusterSecret returns the secret brokers present to each other
// (inter-broker authentication), creating it on first use. It is readable
// by whoever can read the cluster's keys in etcd, and by no client of the
// Kafka protocol.
func (s *Store) EnsureClusterSecret(ctx context.Context) (string, error) {
	return s.ensureRandom(ctx, s.clusterSecretKey(), 32, "cluster secret")
}

// ensureRandom returns key's value, first creating it from n random bytes
// (base64url) if it does not exist. An error is indeterminate: another
// broker or this write may have created it; the next call reads it.
func (s *Store) ensureRandom(ctx context.Context, key string, n int, what string) (string, error) {
	ctx, cancel := withDeadline(ctx)
	defer cancel()
	raw := make([]byte, n)
	if _, err := rand.Read(raw); err != nil {
		return "", err
	}
	value := base64.RawURLEncoding.EncodeToString(raw)
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, value)).
		Else(clientv3.OpGet(key)).Commit()
	if err != nil {
		return "", fmt.Errorf("metadata: %s: %w", what, err)
	}
	if resp.Succeeded {
		return value, nil
	}
	return string(resp.Responses[0].GetResponseRange().Kvs[0].Value), nil
}

// RegisterBroker registers b under a lease of ttl that this process keeps
// alive. A broker id held by another live registration is refused.
func (s *Store) RegisterBroker(ctx context.Context, b Broker, ttl time.Duration) (*Registration, error) {
	reg, err := s.grantRegistration(ctx, ttl)
	if err != nil {
		return nil, fmt.Errorf("metadata: broker lease: %w", err)
	}
	val, err := json.Marshal(b)
	if err != nil {
		reg.Close()
		return nil, err
	}
	ctx, cancel := withDeadline(ctx)
	defer cancel()
	key := s.brokerKey(b.ID)
	put := clientv3.OpPut(key, string(val), clientv3.WithLease(reg.lease))
	// A controlled shutdown a previous incarnation asked for (its lease
	// may still run after kill -9) does not apply to this one.
	unmark := clientv3.OpDelete(s.shuttingDownKey(b.ID))
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(put, unmark).
		Else(clientv3.OpGet(key)).
		Commit()
	if err == nil && !resp.Succeeded && b.DirectoryID != "" {
		// Our own previous incarnation (same data directory) may still
		// hold the key: take it over.
		kvs := resp.Responses[0].GetResponseRange().Kvs
		var old Broker
		if len(kvs) == 1 && json.Unmarshal(kvs[0].Value, &old) == nil && old.DirectoryID == b.DirectoryID {
			resp, err = s.cli.Txn(ctx).
				If(clientv3.Compare(clientv3.ModRevision(key), "=", kvs[0].ModRevision)).
				Then(put, unmark).Commit()
		}
	}
	if err != nil {
		reg.Close()
		return nil, fmt.Errorf("metadata: registering broker %d: %w", b.ID, err)
	}
	if !resp.Succeeded {
		reg.Close()
		return nil, fmt.Errorf("%w: %d", ErrBrokerIDInUse, b.ID)
	}
	reg.rev = resp.Header.Revision
	return reg, nil
}

// RequestControlledShutdown records that broker id, registered by reg, is
// shutting down: the controller moves its leaderships away and takes it
// out of ISRs. The record lives under the registration's lease, so it
// goes with the registration.
func (s *Store) RequestControlledShutdown(ctx context.Context, reg *Registration, id int32) error {
	ctx, cancel := withDeadline(ctx)
	defer cancel()
	if _, err := s.cli.Put(ctx, s.shuttingDownKey(id), "", clientv3.WithLease(reg.lease)); err != nil {
		return fmt.Errorf("metadata: controlled shutdown of broker %d: %w", id, err)
	}
	return nil
}

// Brokers lists the live brokers, by id.
func (s *Store) Brokers(ctx context.Context) ([]Broker, error) {
	ctx, cancel := withDeadline(ctx)
	defer cancel()
	resp, err := s.cli.Get(ctx, s.brokersPrefix(), clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("metadata: %w", err)
	}
	var out []Broker
	for _, kv := range resp.Kvs {
		var b Broker
		if err := json.Unmarshal(kv.Value, &b); err != nil {
			return nil, fmt.Errorf("metadata: broker %s: %w", kv.Key, err)
		}
		out = append(out, b)
	}
	return out, nil
}

func (s *Store) topic(ctx context.Context, name string) (Topic, error) {
	ctx, cancel := withDeadline(ctx)
	defer cancel()
	resp, err := s.cli.Get(ctx, s.topicKey(name))
	if err != nil {
		return Topic{}, fmt.Errorf("metadata: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return Topic{}, fmt.Errorf("%w: %s", ErrUnknownTopic, name)
	}
	var t Topic
	err = json.Unmarshal(resp.Kvs[0].Value, &t)
	return t, err
}

// DeleteTopic removes a topic and its partitions and records the deletion
// in one transaction: a tombstone deleted-topics/<topic id> is what lets a
// broker remove the topic's log directories (a topic that is merely absent
// or unreadable keeps its data). The topic id comes from the topic record,
// or, when that cannot be decoded, from its partition records; when no
// record names it, the topic is removed without a tombstone and brokers keep
// (and report) its directories.
func (s *Store) DeleteTopic(ctx context.Context, name string) (int64, error) {
	key := s.topicKey(name)
	// The re-read of a deletion cut off by ctx's deadline fits before it.
	ctx, wcancel, st := splitDeadline(ctx)
	defer wcancel()
	for {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		rctx, cancel := withDeadline(ctx)
		tresp, err := s.cli.Get(rctx, key)
		var presp *clientv3.GetResponse
		if err == nil {
			presp, err = s.cli.Get(rctx, s.partitionPrefix(name), clientv3.WithPrefix())
		}
		cancel()
		if err != nil {
			return 0, fmt.Errorf("metadata: %w", err)
		}
		if len(tresp.Kvs) == 0 {
			return 0, fmt.Errorf("%w: %s", ErrUnknownTopic, name)
		}
		ids := map[UUID]bool{}
		var t Topic
		if json.Unmarshal(tresp.Kvs[0].Value, &t) == nil {
			ids[t.ID] = true
		} else {
			for _, kv := range presp.Kvs {
				var p Partition
				if json.Unmarshal(kv.Value, &p) == nil && p.TopicID != (UUID{}) {
					ids[p.TopicID] = true
				}
			}
		}
		ops := []clientv3.Op{clientv3.OpDelete(key), clientv3.OpDelete(s.partitionPrefix(name), clientv3.WithPrefix())}
		now := time.Now().UTC()
		for id := range ids {
			val, err := json.Marshal(DeletedTopic{Name: name, ID: id, DeletedAt: now})
			if err != nil {
				return 0, err
			}
			ops = append(ops, clientv3.OpPut(s.deletedTopicKey(id), string(val)))
		}
		wctx, cancel := withDeadline(ctx)
		resp, err := s.cli.Txn(wctx).
			If(clientv3.Compare(clientv3.ModRevision(key), "=", tresp.Kvs[0].ModRevision)).
			Then(ops...).Commit()
		cancel()
		if err != nil {
			return s.settleDeletion(ctx, st, name, ids, tresp.Kvs[0].ModRevision, err)
		}
		if resp.Succeeded {
			return resp.Header.Revision, nil
		}
		// The topic changed between the read and the write: again.
	}
}

// settleDeletion settles a deletion of topic name (its record guarded on
// modification revision modRev, tombstones for ids) whose etcd call failed
// with err after it may have been sent, by the deadline st gives. It reads
// the topic record and the tombstones in one transaction:
//
//   - the record still at modRev: the deletion has not applied, but may
//     still be on its way in etcd, so it is fenced (the record written
//     back unchanged on modRev; see fence): it can no longer apply, and
//     err is returned. When the fence's guard fails, the record moved in
//     between, and it is read again as below.
//   - the record gone or replaced (another topic id) and every tombstone
//     there (none to expect: the record gone): the deletion landed (or
//     another of the same topic did), at the revision read.
//   - anything else (the record changed, the tombstones missing): the
//     outcome cannot be told, and the error wraps ErrIndeterminate.
func (s *Store) settleDeletion(ctx context.Context, st settle, name string, ids map[UUID]bool, modRev int64, err error) (int64, error) {
	rctx, cancel := st.context(ctx, st.resolve)
	defer cancel()
	what := "deleting topic " + name
	indeterminate := func(step string, rerr error) (int64, error) {
		return 0, indeterminateErr(what, err, step, rerr)
	}
	key := s.topicKey(name)
	reads := []clientv3.Op{clientv3.OpGet(key)}
	for id := range ids {
		reads = append(reads, clientv3.OpGet(s.deletedTopicKey(id), clientv3.WithCountOnly()))
	}
	for fenced := false; ; fenced = true {
		resp, rerr := s.cli.Txn(rctx).Then(reads...).Commit()
		if rerr != nil {
			return indeterminate("re-reading it", rerr)
		}
		topic := resp.Responses[0].GetResponseRange()
		if len(topic.Kvs) == 1 && topic.Kvs[0].ModRevision == modRev && !fenced {
			ok, ferr := s.fence(rctx, key, topic.Kvs[0].Value, modRev)
			if ferr != nil {
				return indeterminate("fencing it", ferr)
			}
			if ok {
				return 0, fmt.Errorf("metadata: deleting topic %s: %w", name, err)
			}
			continue // moved in between: read again
		}
		gone := len(topic.Kvs) == 0
		if !gone {
			var t Topic
			gone = len(ids) > 0 && json.Unmarshal(topic.Kvs[0].Value, &t) == nil && !ids[t.ID]
		}
		for _, r := range resp.Responses[1:] {
			gone = gone && r.GetResponseRange().Count > 0
		}
		if gone {
			return resp.Header.Revision, nil
		}
		return indeterminate("", nil)
	}
}

// UpdateTopicConfigs replaces a topic's configs with mutate's result,
// retrying when another writer changed the topic in between. A write whose
// outcome is unknown is settled (see swapKey): the change when it landed,
// an error wrapping ErrIndeterminate when that cannot be told.
func (s *Store) UpdateTopicConfigs(ctx context.Context, name string, mutate func(map[string]string) (map[string]string, error)) (int64, error) {
	key := s.topicKey(name)
	return s.swapKey(ctx, key, true, nil, func(kv *mvccpb.KeyValue) (clientv3.Op, error) {
		if kv == nil {
			return clientv3.Op{}, fmt.Errorf("%w: %s", ErrUnknownTopic, name)
		}
		var t Topic
		if err := json.Unmarshal(kv.Value, &t); err != nil {
			return clientv3.Op{}, fmt.Errorf("metadata: topic %s: %w", name, err)
		}
		cur := maps.Clone(t.Configs)
		if cur == nil {
			cur = map[string]string{}
		}
		next, err := mutate(cur)
		if err != nil {
			return clientv3.Op{}, err
		}
		t.Configs = next
		val, err := json.Marshal(t)
		if err != nil {
			return clientv3.Op{}, err
		}
		return clientv3.OpPut(key, string(val)), nil
	})
}

// UpdatePartition writes p if the stored partition epoch is still
// expected, bumping the epoch. On ErrConflict the current state is
// returned so the caller can decide again.
func (s *Store) UpdatePartition(ctx context.Context, p Partition, expected int32) (Partition, int64, error) {
	key := s.partitionKey(p.Topic, p.Index)
	p.PartitionEpoch = expected + 1
	val, err := json.Marshal(p)
	if err != nil {
		return p, 0, err
	}
	// The re-read of a write cut off by ctx's deadline fits before it.
	ctx, wcancel, st := splitDeadline(ctx)
	defer wcancel()
	ctx, cancel := withDeadline(ctx)
	defer cancel()
	cur, modRev, err := s.partition(ctx, p.Topic, p.Index)
	if err != nil {
		return p, 0, err
	}
	if cur.PartitionEpoch != expected {
		return cur, 0, fmt.Errorf("%w: partition %s/%d is at epoch %d, expected %d", ErrConflict, p.Topic, p.Index, cur.PartitionEpoch, expected)
	}
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", modRev)).
		Then(clientv3.OpPut(key, string(val))).Commit()
	if err != nil {
		return s.resolvePartitionWrite(ctx, st, p, modRev, err)
	}
	if !resp.Succeeded {
		got, _, rerr := s.partition(ctx, p.Topic, p.Index)
		if rerr != nil {
			return got, 0, fmt.Errorf("%w: partition %s/%d changed, and re-reading it failed: %w", ErrConflict, p.Topic, p.Index, rerr)
		}
		return got, 0, fmt.Errorf("%w: partition %s/%d changed", ErrConflict, p.Topic, p.Index)
	}
	return p, resp.Header.Revision, nil
}

// resolvePartitionWrite settles a partition write (p, its epoch bumped,
// guarded on the key's modification revision being modRev) whose etcd
// call failed with err after it may have been sent: it re-reads the
// partition, by the deadline st gives. When p is what is stored, the write
// landed, at the key's modification revision. When the key has moved past
// modRev to something else, the write can no longer apply (its guard no
// longer holds), and err is returned with the state read.
//
// When the key is still at modRev, the re-read alone is no answer: the
// write may still be on its way in etcd (held in a leader that lost its
// quorum, say) and apply after the re-read. So it is fenced: the value
// read is written back unchanged, guarded on modRev too. That moves the
// key's modification revision, so the write, if it comes later, fails its
// guard: did not land, and err is returned with the state read. When the
// fence's guard fails, the key moved in between (the write landed, or
// another changed it) and it is read again to tell which.
//
// When a re-read or the fence fails too, the error wraps ErrIndeterminate:
// the write may have landed, and whoever acts on the partition next must
// learn its state first (the epoch it expects fences a decision made on a
// stale one).
func (s *Store) resolvePartitionWrite(ctx context.Context, st settle, p Partition, modRev int64, err error) (Partition, int64, error) {
	rctx, cancel := st.context(ctx, st.resolve)
	defer cancel()
	what := fmt.Sprintf("updating partition %s/%d", p.Topic, p.Index)
	indeterminate := func(got Partition, step string, rerr error) (Partition, int64, error) {
		return got, 0, indeterminateErr(what, err, step, rerr)
	}
	key := s.partitionKey(p.Topic, p.Index)
	resp, rerr := s.cli.Get(rctx, key)
	if rerr != nil {
		return indeterminate(Partition{}, "re-reading it", rerr)
	}
	got, rev, rerr := decodePartition(resp, p.Topic, p.Index)
	if rerr != nil {
		return indeterminate(got, "re-reading it", rerr)
	}
	if rev == modRev {
		// Not landed yet: the fence.
		fenced, ferr := s.fence(rctx, key, resp.Kvs[0].Value, modRev)
		if ferr != nil {
			return indeterminate(got, "fencing it", ferr)
		}
		if fenced {
			return got, 0, fmt.Errorf("metadata: updating partition %s/%d: %w", p.Topic, p.Index, err)
		}
		if got, rev, rerr = s.partition(rctx, p.Topic, p.Index); rerr != nil {
			return indeterminate(got, "re-reading it after a fence refused", rerr)
		}
	}
	if got.PartitionEpoch == p.PartitionEpoch && samePartition(got, p) {
		return got, rev, nil
	}
	return got, 0, fmt.Errorf("metadata: updating partition %s/%d: %w", p.Topic, p.Index, err)
}

func samePartition(a, b Partition) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

func (s *Store) partition(ctx context.Context, topic string, index int32) (Partition, int64, error) {
	resp, err := s.cli.Get(ctx, s.partitionKey(topic, index))
	if err != nil {
		return Partition{}, 0, fmt.Errorf("metadata: %w", err)
	}
	return decodePartition(resp, topic, index)
}

// decodePartition is the partition a read of its key found, with the key's
// modification revision.
func decodePartition(resp *clientv3.GetResponse, topic string, index int32) (Partition, int64, error) {
	if len(resp.Kvs) == 0 {
		return Partition{}, 0, fmt.Errorf("%w: %s/%d", ErrUnknownTopic, topic, index)
	}
	var p Partition
	if err := json.Unmarshal(resp.Kvs[0].Value, &p); err != nil {
		return p, 0, fmt.Errorf("metadata: partition %s/%d: %w", topic, index, err)
	}
	return p, resp.Kvs[0].ModRevision, nil
}

// AllocateProducerIDs reserves n consecutive producer ids and returns the
// first. Ids are never handed out twice, across brokers and restarts.
func (s *Store) AllocateProducerIDs(ctx context.Context, n int64) (int64, error) {
	var first int64
	// A write whose outcome is unknown is tried again on what is read
	// next (not settled): the block may have been ours, and skipping it
	// wastes ids, never hands them out twice.
	_, err := s.swapKey(ctx, s.producerIDKey(), false, nil, func(kv *mvccpb.KeyValue) (clientv3.Op, error) {
		first = 0
		if kv != nil {
			var err error
			if first, err = strconv.ParseInt(string(kv.Value), 10, 64); err != nil {
				return clientv3.Op{}, fmt.Errorf("metadata: producer id counter: %w", err)
			}
		}
		return clientv3.OpPut(s.producerIDKey(), strconv.FormatInt(first+n, 10)), nil
	})
	return first, err
}

// swapKey reads key, asks next for the write that replaces what it read
// (kv is nil when the key is absent), and applies it only if the key has
// not changed since the read, over and over until one applies; one too
// large for etcd ends it (ErrTooLarge). It returns the revision of the
// write that applied.
//
// A write whose outcome is unknown (its etcd call failed after it may have
// been sent) counts as refused when settled is false: fit only for a write
// that may as well apply twice. Otherwise it is settled first (settleSwap),
// by a deadline that leaves room for that before ctx's: found landed, its
// revision is returned; found fenced (it did not land, and now never
// will), the next round reads and decides again; neither, the error wraps
// ErrIndeterminate. Re-applying next to a read that may already show the
// write would apply the change twice (a list APPEND), or over a change
// another writer made after it (which it would undo).
//
// absent, when not nil, is a record that reads as the key's absence (for
// broker configs: "{}", no configs): a settle fences a write that would
// create the key, while the key is still missing, by creating it with
// absent (see settleSwap). Without it, such a write's unknown outcome
// cannot be told while the key stays missing.
//
// next returning errUnchanged writes nothing: swapKey returns the
// revision of its read.
func (s *Store) swapKey(ctx context.Context, key string, settled bool, absent []byte, next func(kv *mvccpb.KeyValue) (clientv3.Op, error)) (int64, error) {
	var st settle
	if settled {
		var wcancel context.CancelFunc
		ctx, wcancel, st = splitDeadline(ctx)
		defer wcancel()
	}
	for {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		rctx, cancel := withDeadline(ctx)
		resp, err := s.cli.Get(rctx, key)
		cancel()
		if err != nil {
			return 0, fmt.Errorf("metadata: %w", err)
		}
		var kv *mvccpb.KeyValue
		var modRev int64 // 0 for a key that does not exist
		if len(resp.Kvs) > 0 {
			kv, modRev = resp.Kvs[0], resp.Kvs[0].ModRevision
		}
		op, err := next(kv)
		if errors.Is(err, errUnchanged) {
			// Nothing to write: what was read is what was asked for.
			return resp.Header.Revision, nil
		}
		if err != nil {
			return 0, err
		}
		wctx, cancel := withDeadline(ctx)
		tresp, err := s.cli.Txn(wctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", modRev)).Then(op).Commit()
		cancel()
		if err != nil && isTooLarge(err) {
			// Refused, and refused again however often tried.
			return 0, fmt.Errorf("%w: %s: %w", ErrTooLarge, key, err)
		}
		if err != nil && settled {
			rev, landed, serr := s.settleSwap(ctx, st, key, op, modRev, absent, err)
			if serr != nil || landed {
				return rev, serr
			}
			continue // fenced: decided again on what is read next
		}
		if err == nil && tresp.Succeeded {
			return tresp.Header.Revision, nil
		}
	}
}

// settleSwap settles a swapKey write, op (a put or a delete of key,
// guarded on the key's modification revision being modRev, 0 for a key
// that was missing), whose etcd call failed with err after it may have
// been sent, by the deadline st gives. It re-reads the key:
//
//   - still at modRev, and present: the write has not applied, but may
//     still be on its way in etcd (held in a leader that lost its quorum,
//     say), so it is fenced (see fence): it can no longer apply, and
//     settleSwap reports it did not land. When the fence's guard fails,
//     the key moved in between, and it is read again as below.
//   - still missing, for a put that creates it, with absent given: the
//     same, the fence creating the key with absent (what reads as its
//     absence), so the write's guard (no key) no longer holds. The record
//     stays: removing it would let the write apply again.
//   - moved, and holding what op writes (for a delete: gone): the write
//     landed (or another wrote the same), at the revision returned.
//   - moved to something else, or still missing without absent: the
//     outcome cannot be told, and the error wraps ErrIndeterminate and
//     err.
func (s *Store) settleSwap(ctx context.Context, st settle, key string, op clientv3.Op, modRev int64, absent []byte, err error) (int64, bool, error) {
	rctx, cancel := st.context(ctx, st.resolve)
	defer cancel()
	indeterminate := func(step string, rerr error) (int64, bool, error) {
		return 0, false, indeterminateErr("writing "+key, err, step, rerr)
	}
	resp, rerr := s.cli.Get(rctx, key)
	if rerr != nil {
		return indeterminate("re-reading it", rerr)
	}
	// The fence writes back on modRev what is there, or absent for a key
	// still missing.
	fence, fencing := absent, len(resp.Kvs) == 0 && modRev == 0 && op.IsPut() && absent != nil
	if len(resp.Kvs) > 0 && resp.Kvs[0].ModRevision == modRev {
		fence, fencing = resp.Kvs[0].Value, true
	}
	if fencing {
		fenced, ferr := s.fence(rctx, key, fence, modRev)
		if ferr != nil {
			return indeterminate("fencing it", ferr)
		}
		if fenced {
			return 0, false, nil
		}
		if resp, rerr = s.cli.Get(rctx, key); rerr != nil {
			return indeterminate("re-reading it after a fence refused", rerr)
		}
	}
	switch {
	case len(resp.Kvs) == 0 && op.IsDelete() && modRev != 0:
		return resp.Header.Revision, true, nil
	case len(resp.Kvs) > 0 && op.IsPut() && resp.Kvs[0].ModRevision != modRev && string(resp.Kvs[0].Value) == string(op.ValueBytes()):
		return resp.Kvs[0].ModRevision, true, nil
	}
	return indeterminate("", nil)
}

// Leadership is held while this process is the controller.
type Leadership struct {
	reg   *Registration
	key   string // this candidacy's key under the controller prefix
	rev   int64  // its create revision: the guard of every controller write
	store *Store
	// resigned is set once Resign has run: no write is tried after it.
	resigned atomic.Bool
}

// Campaign blocks until this broker is elected controller or ctx ends.
//
// The election is etcd's concurrency.Election's, on the same keys (a
// candidate's key under the controller prefix, attached to its lease; the
// oldest key holds the role), but its lease is a Registration's, renewed
// renewEvery times per TTL on streams of its own: a concurrency.Session
// renews a third of the TTL after the last answer and ends itself when no
// answer comes within the TTL, so one slow round trip to etcd cost a live
// controller its role, and made the cluster wait for another election.
// The role ends when etcd says the lease is gone (Done), or when another
// candidate's key is the oldest: every write is guarded by the key's
// create revision, so a controller whose lease expired while it was cut
// from etcd writes nothing.
func (s *Store) Campaign(ctx context.Context, brokerID int32, ttl time.Duration) (*Leadership, error) {
	reg, err := s.grantRegistration(ctx, ttl)
	if err != nil {
		return nil, fmt.Errorf("metadata: controller lease: %w", err)
	}
	l, err := s.campaign(ctx, reg, strconv.Itoa(int(brokerID)))
	if err != nil {
		// Closing the registration revokes the lease (waiting at most
		// its TTL for etcd), and the candidacy goes with it: a
		// candidate cut from etcd can still give up and shut down.
		reg.Close()
		return nil, fmt.Errorf("metadata: campaign: %w", err)
	}
	return l, nil
}

// campaign puts this candidacy's key under reg's lease and waits until
// every older candidacy's key is gone.
func (s *Store) campaign(ctx context.Context, reg *Registration, val string) (*Leadership, error) {
	prefix := s.controllerPrefix() + "/"
	key := fmt.Sprintf("%s%x", prefix, reg.lease)
	pctx, cancel := withDeadline(ctx)
	resp, err := s.cli.Txn(pctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, val, clientv3.WithLease(reg.lease))).
		Else(clientv3.OpGet(key)).
		Commit()
	cancel()
	if err != nil {
		return nil, err
	}
	rev := resp.Header.Revision
	if !resp.Succeeded {
		rev = resp.Responses[0].GetResponseRange().Kvs[0].CreateRevision
	}
	l := &Leadership{reg: reg, key: key, rev: rev, store: s}
	for {
		// The newest of the older candidacies; once it is gone, look
		// again (an older one may remain). This candidacy's own key
		// is read at the same revision: gone already, it could never
		// win (a winner whose key is gone learns it from the
		// metadata, Leadership.Gone).
		gctx, cancel := withDeadline(ctx)
		tresp, err := s.cli.Txn(gctx).Then(
			clientv3.OpGet(prefix, append(clientv3.WithLastCreate(), clientv3.WithMaxCreateRev(rev-1))...),
			clientv3.OpGet(key)).Commit()
		cancel()
		if err != nil {
			return nil, err
		}
		older := tresp.Responses[0].GetResponseRange()
		if len(older.Kvs) == 0 {
			return l, nil
		}
		if own := tresp.Responses[1].GetResponseRange(); len(own.Kvs) == 0 || own.Kvs[0].CreateRevision != rev {
			return nil, errors.New("candidacy key deleted while campaigning")
		}
		if err := s.waitDeleted(ctx, reg, key, string(older.Kvs[0].Key), tresp.Header.Revision+1); err != nil {
			return nil, err
		}
	}
}

// waitDeleted waits until key is deleted at or after revision rev, ctx
// ends or reg is lost. It fails when own, this candidacy's key, is
// deleted meanwhile: its lease may still be renewed as far as this
// process knows (etcd expired it unrenewed after a restart and went away
// again before a renewal was answered, so reg.Done is not closed), but
// the candidacy is gone and could never win; the caller campaigns again.
func (s *Store) waitDeleted(ctx context.Context, reg *Registration, own, key string, rev int64) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	// Both keys are under the controller prefix: one watch on it.
	wch := s.cli.Watch(wctx, s.controllerPrefix()+"/", clientv3.WithPrefix(), clientv3.WithRev(rev))
	for {
		select {
		case <-reg.Done():
			return errors.New("controller lease lost while campaigning")
		case wr, ok := <-wch:
			if !ok {
				if err := ctx.Err(); err != nil {
					return err
				}
				return errors.New("lost the watch on an older candidacy")
			}
			if err := wr.Err(); err != nil {
				return err
			}
			for _, ev := range wr.Events {
				if ev.Type != clientv3.EventTypeDelete {
					continue
				}
				switch string(ev.Kv.Key) {
				case own:
					return errors.New("candidacy key deleted while campaigning")
				case key:
					return nil
				}
			}
		}
	}
}

// Done is closed when leadership is lost: etcd answered that the lease is
// gone (expired or revoked).
func (l *Leadership) Done() <-chan struct{} { return l.reg.Done() }

// Gone reports whether s, a snapshot of the metadata, shows this
// candidacy's key deleted: s is at or past the revision that wrote it and
// lacks it. Its lease may still be renewed as far as this process knows
// (etcd expired it unrenewed after a restart and went away again before a
// renewal was answered, so Done is not closed), but no other broker sees
// the candidacy, and the leadership's writes, guarded by the key's create
// revision, all fail: the controller learns it here without writing,
// resigns and campaigns again.
func (l *Leadership) Gone(s *Snapshot) bool {
	if s == nil || s.Revision < l.rev {
		return false
	}
	rev, ok := s.Candidacies[l.key]
	return !ok || rev != l.rev
}

// Txn starts a transaction that succeeds only while this leadership holds:
// callers add their own comparisons with If and must check Succeeded;
// a failure means leadership (or their own comparison) was lost.
func (l *Leadership) Txn(ctx context.Context, cmps ...clientv3.Cmp) clientv3.Txn {
	guard := clientv3.Compare(clientv3.CreateRevision(l.key), "=", l.rev)
	return l.store.cli.Txn(ctx).If(append([]clientv3.Cmp{guard}, cmps...)...)
}

// UpdatePartition writes p as the controller: only while this leadership
// holds and the stored partition epoch is still expected (ErrConflict
// otherwise, ErrNotLeader when leadership was lost), bumping the epoch. An
// indeterminate etcd error is resolved by re-reading.
func (l *Leadership) UpdatePartition(ctx context.Context, p Partition, expected int32) (Partition, int64, error) {
	s := l.store
	if l.resigned.Load() {
		return p, 0, fmt.Errorf("%w: resigned", ErrNotLeader)
	}
	key := s.partitionKey(p.Topic, p.Index)
	p.PartitionEpoch = expected + 1
	val, err := json.Marshal(p)
	if err != nil {
		return p, 0, err
	}
	ctx, wcancel, st := splitDeadline(ctx)
	defer wcancel()
	ctx, cancel := withDeadline(ctx)
	defer cancel()
	cur, modRev, err := s.partition(ctx, p.Topic, p.Index)
	if err != nil {
		return p, 0, err
	}
	if cur.PartitionEpoch != expected {
		return cur, 0, fmt.Errorf("%w: partition %s/%d is at epoch %d, expected %d", ErrConflict, p.Topic, p.Index, cur.PartitionEpoch, expected)
	}
	resp, err := l.Txn(ctx, clientv3.Compare(clientv3.ModRevision(key), "=", modRev)).
		Then(clientv3.OpPut(key, string(val))).Commit()
	if err != nil {
		return s.resolvePartitionWrite(ctx, st, p, modRev, err)
	}
	if !resp.Succeeded {
		got, _, rerr := s.partition(ctx, p.Topic, p.Index)
		if rerr != nil {
			return got, 0, fmt.Errorf("%w: partition %s/%d changed, and re-reading it failed: %w", ErrConflict, p.Topic, p.Index, rerr)
		}
		if got.PartitionEpoch == expected {
			return got, 0, fmt.Errorf("%w: controller of election revision %d", ErrNotLeader, l.rev)
		}
		return got, 0, fmt.Errorf("%w: partition %s/%d changed", ErrConflict, p.Topic, p.Index)
	}
	return p, resp.Header.Revision, nil
}

// fence writes value, which key holds at modification revision rev, back
// unchanged, guarded on that revision: it moves the key's revision and
// nothing else, so that a write guarded on rev (or on any revision before
// it) whose outcome is unknown can no longer apply. It reports whether the
// guard held; when not, the key moved on since it was read.
func (s *Store) fence(ctx context.Context, key string, value []byte, rev int64) (bool, error) {
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).
		Then(clientv3.OpPut(key, string(value))).
		Commit()
	if err != nil {
		return false, err
	}
	return resp.Succeeded, nil
}

// FencePartition settles a partition write of unknown outcome sent
// against partition epoch epoch, after resolvePartitionWrite could not
// (ErrIndeterminate): it reads the partition's epoch and, while it is
// still epoch, fences the key (see fence), so that the write, if it is
// still on its way in etcd, can no longer apply after this answer. It
// returns the partition epoch read: epoch means the write did not land
// and never will; a later one, that the partition moved on (this write or
// another).
func (s *Store) FencePartition(ctx context.Context, topic string, index, epoch int32) (int32, error) {
	key := s.partitionKey(topic, index)
	for {
		resp, err := s.cli.Get(ctx, key)
		if err != nil {
			return 0, fmt.Errorf("metadata: %w", err)
		}
		got, rev, err := decodePartition(resp, topic, index)
		if err != nil || got.PartitionEpoch != epoch {
			return got.PartitionEpoch, err
		}
		fenced, err := s.fence(ctx, key, resp.Kvs[0].Value, rev)
		if err != nil {
			return 0, fmt.Errorf("metadata: %w", err)
		}
		if fenced {
			return epoch, nil
		}
	}
}

// Partition reads one partition's current state.
func (s *Store) Partition(ctx context.Context, topic string, index int32) (Partition, error) {
	p, _, err := s.PartitionRevision(ctx, topic, index)
	return p, err
}

// PartitionRevision reads one partition's current state, with the
// revision that wrote it.
func (s *Store) PartitionRevision(ctx context.Context, topic string, index int32) (Partition, int64, error) {
	ctx, cancel := withDeadline(ctx)
	defer cancel()
	return s.partition(ctx, topic, index)
}

// PruneDeletedTopics removes the tombstones of the topic ids given, as the
// controller (ErrNotLeader once leadership is lost), at most 100 per etcd
// transaction. Removing a tombstone that is already gone is no error.
func (l *Leadership) PruneDeletedTopics(ctx context.Context, ids []UUID) error {
	for len(ids) > 0 {
		n := min(len(ids), 100)
		ops := make([]clientv3.Op, 0, n)
		for _, id := range ids[:n] {
			ops = append(ops, clientv3.OpDelete(l.store.deletedTopicKey(id)))
		}
		wctx, cancel := withDeadline(ctx)
		resp, err := l.Txn(wctx).Then(ops...).Commit()
		cancel()
		if err != nil {
			return fmt.Errorf("metadata: pruning deleted-topic tombstones: %w", err)
		}
		if !resp.Succeeded {
			return fmt.Errorf("%w: pruning deleted-topic tombstones", ErrNotLeader)
		}
		ids = ids[n:]
	}
	return nil
}

// ActedIncarnations reads the broker incarnations (registration
// revisions, by broker id) that a controller last recorded acting on
// (Leadership.RecordActedIncarnations), and the revision it read at;
// acted is nil when none is recorded. A record that cannot be decoded is
// ErrUnreadable.
func (s *Store) ActedIncarnations(ctx context.Context) (acted map[int32]int64, rev int64, err error) {
	ctx, cancel := withDeadline(ctx)
	defer cancel()
	resp, err := s.cli.Get(ctx, s.actedIncarnationsKey())
	if err != nil {
		return nil, 0, fmt.Errorf("metadata: reading the controller's acted incarnations: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return nil, resp.Header.Revision, nil
	}
	acted, err = decodeActedIncarnations(resp.Kvs[0].Value)
	return acted, resp.Header.Revision, err
}

// decodeActedIncarnations decodes the record RecordActedIncarnations
// writes: a JSON object of broker id to registration revision. Anything
// else is ErrUnreadable.
func decodeActedIncarnations(b []byte) (map[int32]int64, error) {
	var acted map[int32]int64
	if err := json.Unmarshal(b, &acted); err != nil || acted == nil {
		return nil, fmt.Errorf("%w: the controller's acted incarnations: %v", ErrUnreadable, err)
	}
	return acted, nil
}

// RecordActedIncarnations records, while this leadership holds, the
// broker incarnations the controller has acted on: a broker registered
// again since (a restart, or a lease lost and taken again) has lost its
// in-memory state and maybe its disk, and whichever controller comes
// next treats it as restarted even when the controller that would have
// seen the restart died first (its own restart, say).
func (l *Leadership) RecordActedIncarnations(ctx context.Context, acted map[int32]int64) error {
	val, err := json.Marshal(acted)
	if err != nil {
		return err
	}
	wctx, cancel := withDeadline(ctx)
	defer cancel()
	resp, err := l.Txn(wctx).Then(clientv3.OpPut(l.store.actedIncarnationsKey(), string(val))).Commit()
	if err != nil {
		return fmt.Errorf("metadata: recording the controller's acted incarnations: %w", err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("%w: recording the controller's acted incarnations", ErrNotLeader)
	}
	return nil
}

// Resign gives up leadership.
func (l *Leadership) Resign(ctx context.Context) error {
	ctx, cancel := withDeadline(ctx)
	defer cancel()
	l.resigned.Store(true)
	_, err := l.store.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(l.key), "=", l.rev)).
		Then(clientv3.OpDelete(l.key)).Commit()
	l.reg.Close()
	return err
}

// Controller returns the id of the elected controller, or -1.
func (s *Store) Controller(ctx context.Context) (int32, error) {
	ctx, cancel := withDeadline(ctx)
	defer cancel()
	resp, err := s.cli.Get(ctx, s.controllerPrefix(), clientv3.WithFirstCreate()...)
	if err != nil {
		return -1, fmt.Errorf("metadata: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return -1, nil
	}
	id, err := strconv.Atoi(string(resp.Kvs[0].Value))
	if err != nil {
		return -1, fmt.Errorf("metadata: controller value %q", resp.Kvs[0].Value)
	}
	return int32(id), nil
}

// errUnchanged is what a swapKey mutation returns when the record would
// stay as it is.
var errUnchanged = errors.New("metadata: unchanged")

// putUnlessSame is the op that writes val to key, or errUnchanged when kv
// (nil: the key is missing) holds val already, or is missing and val is
// absent, the record that reads as missing.
func putUnlessSame(kv *mvccpb.KeyValue, key string, val, absent []byte) (clientv3.Op, error) {
	if kv == nil && bytes.Equal(val, absent) || kv != nil && bytes.Equal(kv.Value, val) {
		return clientv3.Op{}, errUnchanged
	}
	return clientv3.OpPut(key, string(val)), nil
}
