package metadata

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// A topic, or an addition of partitions, takes one etcd write per
// partition, and an etcd transaction holds at most --max-txn-ops
// operations (128 by default) and --max-request-bytes (1.5 MiB). So the
// partition records are written in chunks that fit any etcd's defaults, and
// the topic record is written last, as the commit point:
//
//  1. a marker creating/<topic> (value: the topic id) is put with a lease
//     of its own, if no topic record and no marker exist; the same
//     transaction deletes partition records a crashed creation left (for
//     an addition: those past the topic's PartitionCount);
//  2. the partition records go in chunks, each only while the marker is
//     ours;
//  3. the topic record, with its PartitionCount, is put and the marker
//     deleted in one transaction, only while the marker is ours.
//
// Readers (Cache) show a topic's partitions only under its record, with its
// id and below its PartitionCount, so a creation that stops half-way is
// never seen. Its marker goes with its lease (the creator crashed) and the
// controller deletes what it left (CleanAbandonedCreations); a later
// creation of the same name deletes it first.

const (
	// chunkOps and chunkBytes bound one transaction of partition
	// records, well inside etcd's default limits (128 operations,
	// 1.5 MiB).
	chunkOps   = 100
	chunkBytes = 512 << 10
)

// creatingTTL is the lease of a creation's marker, in seconds. The
// creator renews it while it writes, so a creation may take longer; it is
// how long after the creator stopped (crashed, or lost etcd) the marker
// lasts: until then another creation of the name, or an addition to the
// topic, is refused as one under way (a client retries), and the
// controller leaves its leftovers alone. A broker killed while it added
// partitions held the next addition back for a minute when the lease was
// 60 s and not renewed.
var creatingTTL int64 = 10

// afterChunk, when set (tests), is called after each chunk a creation
// writes; an error stops the creation there.
var afterChunk func(i int) error

// chunk splits ops into transactions of at most chunkOps operations and
// chunkBytes bytes of keys and values; an op larger than chunkBytes alone
// gets a transaction of its own (etcd refuses it if too large).
func chunk(ops []clientv3.Op) [][]clientv3.Op {
	var out [][]clientv3.Op
	var cur []clientv3.Op
	size := 0
	for _, op := range ops {
		n := len(op.KeyBytes()) + len(op.ValueBytes())
		if len(cur) > 0 && (len(cur) == chunkOps || size+n > chunkBytes) {
			out = append(out, cur)
			cur, size = nil, 0
		}
		cur = append(cur, op)
		size += n
	}
	if len(cur) > 0 {
		out = append(out, cur)
	}
	return out
}

// creation is one chunked write under a creating/ marker.
type creation struct {
	s      *Store
	key    string // the marker
	marker string // its value
	lease  clientv3.LeaseID
	// stopRenewing ends the renewals of the lease.
	stopRenewing context.CancelFunc
}

// ours compares the marker with ours: the key under our lease. Its value
// (the topic id, and for an addition the count it starts from) may be
// another creation's too: two additions from the same count write the
// same value; the lease is this creation's alone.
func (c *creation) ours() clientv3.Cmp {
	return clientv3.Compare(clientv3.LeaseValue(c.key), "=", c.lease)
}

// grantCreation takes the marker's lease and renews it until the
// creation's release (or the client's end).
func (s *Store) grantCreation(ctx context.Context, name, marker string) (*creation, error) {
	gctx, cancel := withDeadline(ctx)
	defer cancel()
	l, err := s.cli.Grant(gctx, creatingTTL)
	if err != nil {
		return nil, fmt.Errorf("metadata: %w", err)
	}
	rctx, stop := context.WithCancel(s.cli.Ctx())
	renewals, err := s.cli.KeepAlive(rctx, l.ID)
	if err != nil {
		stop() // the lease expires unrenewed
		return nil, fmt.Errorf("metadata: %w", err)
	}
	go func() {
		for range renewals {
		}
	}()
	return &creation{s: s, key: s.creatingKey(name), marker: marker, lease: l.ID, stopRenewing: stop}, nil
}

// maxSettleRoom bounds the time a creation keeps, before its caller's
// deadline, for what follows its writes (see splitDeadline).
const maxSettleRoom = time.Second

// settle holds the deadlines of what follows a creation's writes: the
// settle of an indeterminate commit (creation.settle), then the release of
// the marker's lease. Zero: the caller has no deadline (resolveTimeout each).
type settle struct{ resolve, release time.Time }

// splitDeadline returns the context of a creation's writes: when ctx has a
// deadline (a Kafka request's timeout), it ends earlier by a quarter of the
// time left, at most maxSettleRoom, so that the settle of a commit cut
// off and the release of the marker both fit before that deadline, and
// the answer does not come seconds after it.
func splitDeadline(ctx context.Context) (context.Context, context.CancelFunc, settle) {
	d, ok := ctx.Deadline()
	if !ok {
		wctx, cancel := context.WithCancel(ctx)
		return wctx, cancel, settle{}
	}
	room := min(max(time.Until(d)/4, 0), maxSettleRoom)
	wctx, cancel := context.WithDeadline(ctx, d.Add(-room))
	return wctx, cancel, settle{resolve: d.Add(-room / 2), release: d}
}

// context is resolveContext's, ending by at too when it is set.
func (settle) context(ctx context.Context, at time.Time) (context.Context, context.CancelFunc) {
	rctx, cancel := resolveContext(ctx)
	if at.IsZero() {
		return rctx, cancel
	}
	dctx, dcancel := context.WithDeadline(rctx, at)
	return dctx, func() { dcancel(); cancel() }
}

// release revokes the marker's lease (the marker goes with it), by the
// deadline st gives. Best effort, since the lease expires anyway; but
// until it does, a retry of a failed creation would be refused as another
// creation under way. So a revocation that does not make the deadline
// (etcd slow or unreachable) is tried again in the background, for
// resolveTimeout at most and no longer than the client lives.
func (c *creation) release(ctx context.Context, st settle) {
	c.stopRenewing()
	cli := c.s.cli
	if cli.Ctx().Err() != nil {
		return // the client is closing: the lease expires
	}
	rctx, cancel := st.context(ctx, st.release)
	_, err := cli.Revoke(rctx, c.lease)
	cancel()
	if err == nil || rctx.Err() == nil {
		return // revoked, or refused (the lease expired already)
	}
	go func() {
		bctx, cancel := context.WithTimeout(cli.Ctx(), resolveTimeout)
		defer cancel()
		cli.Revoke(bctx, c.lease)
	}()
}

// settle learns whether the commit of a creation (or an addition), whose
// etcd call failed with err after it may have been sent, applied; shows
// tells whether a topic record read shows it. A re-read alone is no
// answer: the commit may still be on its way in etcd (held in a leader
// that lost its quorum, say) and apply after the re-read, and the marker's
// release, which would stop it, may not make the deadline. So the commit's
// own guard is fenced: the marker is deleted while it is still ours, in
// one transaction that reads the topic record when it is not. The commit
// is guarded on the marker being ours and deletes it, so:
//
//   - the marker deleted: the commit had not applied, and now never will
//     (err is returned);
//   - the marker not ours: the commit applied, or the marker's lease ran
//     out; either way nothing can apply any more, and the topic record
//     read in the same transaction tells which: the revision of the
//     record that shows it, or err.
//
// When the fence's own call fails (by the deadline st gives), the error
// wraps ErrIndeterminate: the commit may have applied, or may yet.
func (c *creation) settle(ctx context.Context, st settle, what string, err error, topicKey string, shows func(Topic) bool) (int64, error) {
	rctx, cancel := st.context(ctx, st.resolve)
	defer cancel()
	resp, ferr := c.s.cli.Txn(rctx).
		If(c.ours()).
		Then(clientv3.OpDelete(c.key)).
		Else(clientv3.OpGet(topicKey)).
		Commit()
	switch {
	case ferr != nil:
		return 0, indeterminateErr(what, err, "fencing it", ferr)
	case resp.Succeeded:
		return 0, fmt.Errorf("metadata: %s: %w", what, err)
	}
	if got := resp.Responses[0].GetResponseRange(); got != nil && len(got.Kvs) == 1 {
		var t Topic
		if json.Unmarshal(got.Kvs[0].Value, &t) == nil && shows(t) {
			return got.Kvs[0].ModRevision, nil
		}
	}
	return 0, fmt.Errorf("metadata: %s: %w", what, err)
}

// retryUnavailable runs write until it succeeds, fails otherwise than
// with etcd unable to answer now (IsUnavailable: a server-side timeout of
// an overloaded etcd, a leader change), or ctx ends; between tries it
// waits, from 50 ms doubling up to a second. Only for a write that may
// apply twice: a try that failed so may have applied.
func retryUnavailable(ctx context.Context, write func() error) error {
	wait := 50 * time.Millisecond
	for {
		err := write()
		if err == nil || !IsUnavailable(err) || ctx.Err() != nil {
			return err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		wait = min(2*wait, time.Second)
	}
}

// start puts the marker, under its lease, with ops, if cmps hold and no
// marker exists; it reports whether it did. A try that failed with etcd
// unable to answer now is tried again (retryUnavailable): when the marker
// read then is under our lease, an earlier try applied (with ops, in the
// same transaction).
func (c *creation) start(ctx context.Context, what string, cmps []clientv3.Cmp, ops ...clientv3.Op) (bool, error) {
	var ok bool
	err := retryUnavailable(ctx, func() error {
		wctx, cancel := withDeadline(ctx)
		defer cancel()
		resp, err := c.s.cli.Txn(wctx).
			If(append(slices.Clone(cmps), clientv3.Compare(clientv3.CreateRevision(c.key), "=", 0))...).
			Then(append([]clientv3.Op{clientv3.OpPut(c.key, c.marker, clientv3.WithLease(c.lease))}, ops...)...).
			Else(clientv3.OpGet(c.key)).
			Commit()
		if err != nil {
			return err
		}
		ok = resp.Succeeded
		if got := resp.Responses[0].GetResponseRange(); !ok && got != nil && len(got.Kvs) == 1 && got.Kvs[0].Lease == int64(c.lease) {
			ok = true
		}
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("metadata: %s: %w", what, err)
	}
	return ok, nil
}

// writeChunks puts ops in chunks while the marker is ours. A chunk whose
// write failed with etcd unable to answer now is written again
// (retryUnavailable): its puts apply twice as well as once, and nobody
// sees them before the commit.
func (c *creation) writeChunks(ctx context.Context, what string, ops []clientv3.Op) error {
	for i, ch := range chunk(ops) {
		if i > 0 && afterChunk != nil {
			if err := afterChunk(i); err != nil {
				return err
			}
		}
		var resp *clientv3.TxnResponse
		err := retryUnavailable(ctx, func() error {
			wctx, cancel := withDeadline(ctx)
			defer cancel()
			var err error
			resp, err = c.s.cli.Txn(wctx).If(c.ours()).Then(ch...).Commit()
			return err
		})
		if err != nil && isTooLarge(err) {
			return fmt.Errorf("%w: %s: %w", ErrTooLarge, what, err)
		}
		if err != nil {
			return fmt.Errorf("metadata: %s: %w", what, err)
		}
		if !resp.Succeeded {
			return fmt.Errorf("metadata: %s: the creation's marker expired", what)
		}
	}
	return nil
}

func (s *Store) partitionOps(t Topic, parts []Partition) ([]clientv3.Op, error) {
	ops := make([]clientv3.Op, 0, len(parts))
	for _, p := range parts {
		p.Topic, p.TopicID = t.Name, t.ID
		pv, err := json.Marshal(p)
		if err != nil {
			return nil, err
		}
		ops = append(ops, clientv3.OpPut(s.partitionKey(t.Name, p.Index), string(pv)))
	}
	return ops, nil
}

// CreateTopic creates a topic and its partitions (numbered 0..n-1), the
// topic record last (see above). It returns the revision of that write.
func (s *Store) CreateTopic(ctx context.Context, t Topic, parts []Partition) (int64, error) {
	t.PartitionCount = int32(len(parts))
	tv, err := json.Marshal(t)
	if err != nil {
		return 0, err
	}
	ops, err := s.partitionOps(t, parts)
	if err != nil {
		return 0, err
	}
	key := s.topicKey(t.Name)
	ctx, wcancel, st := splitDeadline(ctx)
	defer wcancel()
	c, err := s.grantCreation(ctx, t.Name, t.ID.String())
	if err != nil {
		return 0, err
	}
	defer c.release(ctx, st)
	what := fmt.Sprintf("creating topic %s with %d partitions", t.Name, len(parts))
	// 1. The marker, and no leftovers.
	ok, err := c.start(ctx, what,
		[]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(key), "=", 0)},
		clientv3.OpDelete(s.partitionPrefix(t.Name), clientv3.WithPrefix()))
	if err != nil {
		return 0, err
	}
	if !ok {
		// The topic exists, or another creation of it is under way.
		return 0, fmt.Errorf("%w: %s", ErrTopicExists, t.Name)
	}
	// 2. The partitions.
	if err := c.writeChunks(ctx, what, ops); err != nil {
		return 0, err
	}
	// 3. The topic record: the commit point.
	wctx, cancel := withDeadline(ctx)
	defer cancel()
	resp, err := s.cli.Txn(wctx).
		If(c.ours(), clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, string(tv)), clientv3.OpDelete(c.key)).
		Commit()
	if err != nil && isTooLarge(err) {
		return 0, fmt.Errorf("%w: %s: %w", ErrTooLarge, what, err)
	}
	if err != nil {
		// Indeterminate: the topic may have been created, or may yet.
		return c.settle(ctx, st, what, err, key, func(got Topic) bool { return got.ID == t.ID })
	}
	if !resp.Succeeded {
		return 0, fmt.Errorf("metadata: %s: the creation's marker expired", what)
	}
	return resp.Header.Revision, nil
}

// topicKV reads a topic record with its modification revision.
func (s *Store) topicKV(ctx context.Context, name string) (Topic, int64, error) {
	ctx, cancel := withDeadline(ctx)
	defer cancel()
	resp, err := s.cli.Get(ctx, s.topicKey(name))
	if err != nil {
		return Topic{}, 0, fmt.Errorf("metadata: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return Topic{}, 0, fmt.Errorf("%w: %s", ErrUnknownTopic, name)
	}
	var t Topic
	if err := json.Unmarshal(resp.Kvs[0].Value, &t); err != nil {
		return Topic{}, 0, fmt.Errorf("metadata: topic %s: %w", name, err)
	}
	return t, resp.Kvs[0].ModRevision, nil
}

// CreatePartitions adds partitions seen.. to a topic, only if it still has
// exactly seen partitions (ErrConflict otherwise): the records past the
// topic's PartitionCount first, in chunks, then the topic record's new
// count (see above).
func (s *Store) CreatePartitions(ctx context.Context, name string, seen int, add []Partition) (int64, error) {
	t, rev, err := s.topicKV(ctx, name)
	if err != nil {
		return 0, err
	}
	what := fmt.Sprintf("adding %d partitions to %s", len(add), name)
	ops, err := s.partitionOps(t, add)
	if err != nil {
		return 0, err
	}
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(s.topicKey(name)), "=", rev)}
	if t.PartitionCount == 0 {
		// A record from before PartitionCount: every partition record
		// counts, so the count is what the caller saw only if partition
		// seen-1 exists and partition seen does not. The count is
		// written now, so that what this addition writes stays unseen
		// until it is done.
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(s.partitionKey(name, int32(seen))), "=", 0))
		if seen > 0 {
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(s.partitionKey(name, int32(seen-1))), ">", 0))
		}
	} else if int(t.PartitionCount) != seen {
		return 0, fmt.Errorf("%w: partitions of %s changed", ErrConflict, name)
	}
	ctx, wcancel, st := splitDeadline(ctx)
	defer wcancel()
	c, err := s.grantCreation(ctx, name, t.ID.String()+"+"+fmt.Sprint(seen))
	if err != nil {
		return 0, err
	}
	defer c.release(ctx, st)
	counted := t
	counted.PartitionCount = int32(seen)
	cv, err := json.Marshal(counted)
	if err != nil {
		return 0, err
	}
	// 1. The marker, the count made explicit, and no leftovers past it.
	ok, err := c.start(ctx, what, cmps,
		clientv3.OpPut(s.topicKey(name), string(cv)),
		clientv3.OpDelete(s.partitionKey(name, int32(seen)), clientv3.WithRange(clientv3.GetPrefixRangeEnd(s.partitionPrefix(name)))))
	if err != nil {
		return 0, err
	}
	if !ok {
		return 0, fmt.Errorf("%w: partitions of %s changed", ErrConflict, name)
	}
	// 2. The new partitions, unseen past the count.
	if err := c.writeChunks(ctx, what, ops); err != nil {
		return 0, err
	}
	// 3. The new count, re-read so that a config change meanwhile is
	// kept.
	for {
		cur, rev, err := s.topicKV(ctx, name)
		if err != nil {
			return 0, err
		}
		if cur.ID != t.ID {
			return 0, fmt.Errorf("%w: topic %s was replaced", ErrConflict, name)
		}
		cur.PartitionCount = int32(seen + len(add))
		tv, err := json.Marshal(cur)
		if err != nil {
			return 0, err
		}
		wctx, cancel := withDeadline(ctx)
		resp, err := s.cli.Txn(wctx).
			If(c.ours(), clientv3.Compare(clientv3.ModRevision(s.topicKey(name)), "=", rev)).
			Then(clientv3.OpPut(s.topicKey(name), string(tv)), clientv3.OpDelete(c.key)).
			Else(clientv3.OpGet(c.key)).
			Commit()
		cancel()
		if err != nil && isTooLarge(err) {
			return 0, fmt.Errorf("%w: %s: %w", ErrTooLarge, what, err)
		}
		if err != nil {
			// Indeterminate: the partitions were added if the topic
			// record, still this topic, counts them (no other
			// addition could start while the marker was ours).
			return c.settle(ctx, st, what, err, s.topicKey(name), func(got Topic) bool {
				return got.ID == t.ID && int(got.PartitionCount) >= seen+len(add)
			})
		}
		if resp.Succeeded {
			return resp.Header.Revision, nil
		}
		if got := resp.Responses[0].GetResponseRange(); got == nil || len(got.Kvs) == 0 || got.Kvs[0].Lease != int64(c.lease) {
			return 0, fmt.Errorf("metadata: %s: the creation's marker expired", what)
		}
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		// The topic record changed (a config): again.
	}
}

// CleanAbandonedCreations deletes, as the controller, the partition
// records a creation or an addition left when it stopped half-way (its
// marker gone with its lease): those of a topic with no record, and those
// past a topic's PartitionCount. It returns how many topics it cleaned.
func (l *Leadership) CleanAbandonedCreations(ctx context.Context) (int, error) {
	s := l.store
	rctx, cancel := withDeadline(ctx)
	parts, err := s.cli.Get(rctx, s.partitionsPrefix(), clientv3.WithPrefix(), clientv3.WithKeysOnly())
	var topics, markers *clientv3.GetResponse
	if err == nil {
		topics, err = s.cli.Get(rctx, s.topicsPrefix(), clientv3.WithPrefix())
	}
	if err == nil {
		markers, err = s.cli.Get(rctx, s.creatingPrefix(), clientv3.WithPrefix(), clientv3.WithKeysOnly())
	}
	cancel()
	if err != nil {
		return 0, fmt.Errorf("metadata: %w", err)
	}
	type rec struct {
		t   Topic
		ok  bool
		rev int64
	}
	byName := map[string]rec{}
	for _, kv := range topics.Kvs {
		var t Topic
		ok := json.Unmarshal(kv.Value, &t) == nil
		byName[strings.TrimPrefix(string(kv.Key), s.topicsPrefix())] = rec{t, ok, kv.ModRevision}
	}
	creating := map[string]bool{}
	for _, kv := range markers.Kvs {
		creating[strings.TrimPrefix(string(kv.Key), s.creatingPrefix())] = true
	}
	// The first leftover index of each topic that has one.
	from := map[string]int32{}
	for _, kv := range parts.Kvs {
		name, index, ok := parsePartitionKey(strings.TrimPrefix(string(kv.Key), s.partitionsPrefix()))
		if !ok || creating[name] {
			continue
		}
		r, exists := byName[name]
		switch {
		case !exists:
			from[name] = 0
		case r.ok && r.t.PartitionCount > 0 && index >= r.t.PartitionCount:
			if f, seen := from[name]; !seen || index < f {
				from[name] = index
			}
		}
	}
	cleaned := 0
	var errs []error
	for name, f := range from {
		topicCmp := clientv3.Compare(clientv3.CreateRevision(s.topicKey(name)), "=", 0)
		if r, exists := byName[name]; exists {
			topicCmp = clientv3.Compare(clientv3.ModRevision(s.topicKey(name)), "=", r.rev)
			f = r.t.PartitionCount
		}
		wctx, cancel := withDeadline(ctx)
		resp, err := l.Txn(wctx, topicCmp, clientv3.Compare(clientv3.CreateRevision(s.creatingKey(name)), "=", 0)).
			Then(clientv3.OpDelete(s.partitionKey(name, f), clientv3.WithRange(clientv3.GetPrefixRangeEnd(s.partitionPrefix(name))))).
			Commit()
		cancel()
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("metadata: cleaning the leftovers of topic %s: %w", name, err))
		case resp.Succeeded:
			cleaned++
		}
		// Not succeeded: the topic or a marker changed meanwhile (or
		// leadership was lost); looked at again next time.
	}
	return cleaned, errors.Join(errs...)
}
