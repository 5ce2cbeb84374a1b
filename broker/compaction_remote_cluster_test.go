package broker_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/shale-log/shale/broker"
	"github.com/shale-log/shale/broker/brokertest"
	"github.com/shale-log/shale/objectstore"
	"github.com/shale-log/shale/tiering"
)

// uncertainLedger is what a compacted partition produced to across a
// leader's loss must read as. A key acknowledged reads once, with its
// last acknowledged value or with one of the values produced after it
// whose produce failed (a failed produce may or may not be in the log);
// a key never acknowledged reads at most once, with one of those.
type uncertainLedger struct {
	mu   sync.Mutex
	keys map[string]*uncertainKey
}

type uncertainKey struct {
	acked   bool
	last    []byte   // the last acknowledged value (nil: a tombstone)
	unknown [][]byte // the values produced since whose produce failed
}

// note records a produce of key's value: acknowledged or failed.
func (l *uncertainLedger) note(key string, value []byte, acked bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.keys == nil {
		l.keys = map[string]*uncertainKey{}
	}
	k := l.keys[key]
	if k == nil {
		k = &uncertainKey{}
		l.keys[key] = k
	}
	if acked {
		k.acked, k.last, k.unknown = true, value, nil
		return
	}
	k.unknown = append(k.unknown, value)
}

func sameValue(a, b []byte) bool { return (a == nil) == (b == nil) && bytes.Equal(a, b) }

// check reports whether recs, a partition read from its start, hold what
// l allows: offsets strictly ascending, no key twice, none never
// produced, each with an allowed value, and every acknowledged key.
func (l *uncertainLedger) check(recs []*kgo.Record) (bool, string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	seen := map[string]int64{}
	prev := int64(-1)
	for _, r := range recs {
		if r.Offset <= prev {
			return false, fmt.Sprintf("offset %d read after %d", r.Offset, prev)
		}
		prev = r.Offset
		key := string(r.Key)
		k, ok := l.keys[key]
		if !ok {
			return false, fmt.Sprintf("key %q at offset %d was never produced", key, r.Offset)
		}
		if at, twice := seen[key]; twice {
			return false, fmt.Sprintf("key %s read at offsets %d and %d (%d records read)", key, at, r.Offset, len(recs))
		}
		seen[key] = r.Offset
		allowed := k.acked && sameValue(r.Value, k.last)
		for _, v := range k.unknown {
			allowed = allowed || sameValue(r.Value, v)
		}
		if !allowed {
			last := "none"
			if k.acked {
				last = showValue(k.last)
			}
			return false, fmt.Sprintf("key %s reads %s at offset %d; its last acknowledged value is %s, %d failed produces after it",
				key, showValue(r.Value), r.Offset, last, len(k.unknown))
		}
	}
	var missing []string
	for key, k := range l.keys {
		if _, ok := seen[key]; k.acked && !ok {
			missing = append(missing, key)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		if len(missing) > 10 {
			missing = append(missing[:10], fmt.Sprintf("and %d more", len(missing)-10))
		}
		return false, fmt.Sprintf("%d records read; acknowledged keys missing: %s", len(recs), strings.Join(missing, ", "))
	}
	return true, ""
}

// segmentObjectsAgainst compares the segment and companion objects of
// part in bucket with what m (with its spilled parts) names: unnamed are
// the objects m does not name, missing those it names and the bucket
// lacks (keys without the partition's prefix).
func segmentObjectsAgainst(ctx context.Context, bucket objectstore.Bucket, part tiering.Partition, m *tiering.Manifest) (unnamed, missing []string, err error) {
	layout := tiering.Layout{}
	prefix := layout.PartitionPrefix(part)
	named := map[string]bool{}
	if err := tiering.WalkSegments(ctx, tiering.BucketSpills{Bucket: bucket}, part, m, 0, nil, func(s tiering.Segment) bool {
		named[layout.SegmentKey(part, s.BaseOffset, s.ID)] = true
		named[layout.CompanionKey(part, s.BaseOffset, s.ID)] = true
		return true
	}); err != nil {
		return nil, nil, err
	}
	listed := map[string]bool{}
	err = bucket.List(ctx, prefix, func(a objectstore.Attrs) error {
		listed[a.Key] = true
		if (strings.HasSuffix(a.Key, ".log") || strings.HasSuffix(a.Key, ".indexes")) && !named[a.Key] {
			unnamed = append(unnamed, strings.TrimPrefix(a.Key, prefix))
		}
		return nil
	})
	for k := range named {
		if !listed[k] {
			missing = append(missing, strings.TrimPrefix(k, prefix))
		}
	}
	sort.Strings(missing)
	return unnamed, missing, err
}

// cleanedPasses is how many compaction passes that cleaned broker nd ran
// in its current run (shale_log_cleaner_passes_total{result="cleaned"}).
func cleanedPasses(t *testing.T, nd *brokertest.Node) float64 {
	t.Helper()
	mfs, err := nd.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "shale_log_cleaner_passes_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "result" && lp.GetValue() == "cleaned" {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// TestTieredCompactedTopicSurvivesLosingItsLeader: a tiered compacted
// topic (remote.storage.enable=true) replicated on three brokers, whose
// leader compacts the remote log in the bucket they share, loses its
// leader (stopped without a controlled shutdown, a remote compaction pass
// of its caught between its uploads and its commit) while a producer
// goes on with acks=all. The new leader goes on compacting the remote
// log from where the cleaner note says, under its own epoch: a consumer
// from the start reads each key once, with its last acknowledged value
// (or, for a key whose last produce failed, possibly that value), no
// acknowledged key missing; the objects the old leader's passes left (the
// uploads of the pass it never committed, and any its committed passes
// replaced that it had not deleted yet) go with the new leader's orphan
// sweeps, leaving none the manifest does not name, and none it names
// missing; the old leader, back, catches up as a follower; and no
// follower ran a compaction pass.
func TestTieredCompactedTopicSurvivesLosingItsLeader(t *testing.T) {
	start := time.Now()
	since := func() time.Duration { return time.Since(start).Round(time.Millisecond) }
	bucket := objectstore.NewMem()

	// The remote compaction pass of the broker armed (its id + 1) stops
	// between its uploads and its commit until released: the broker is
	// stopped meanwhile, and the pass's commit, under a cancelled
	// context, fails, leaving its uploads to the orphan sweeps.
	var armed atomic.Int32
	reached, release := make(chan struct{}), make(chan struct{})
	var releaseOnce sync.Once
	releasePass := func() { releaseOnce.Do(func() { close(release) }) }
	fault := func(node int32, point string) {
		if point != "compact-uploaded" || !armed.CompareAndSwap(node+1, 0) {
			return
		}
		close(reached)
		select {
		case <-release:
		case <-time.After(20 * time.Second):
		}
	}
	c := brokertest.StartCluster(t, 3, func(cfg *broker.Config) {
		node := cfg.NodeID
		cfg.Tiering = broker.TieringConfig{Bucket: bucket, UploadInterval: 50 * time.Millisecond, ChunkBytes: 64 << 10, CacheBytes: 8 << 20,
			ReplacedDeleteDelay: 100 * time.Millisecond,
			// Orphans old enough go within seconds, with sweeps that
			// list everything: those of an old leader's passes lie
			// amid the remote log, below the tail a sweep lists
			// between full ones.
			// (A grace longer than any pass here takes between its
			// first upload and its commit: the sweeps do not know of
			// a pass's uploads.)
			OrphanGrace: 3 * time.Second, FullSweepEvery: time.Second,
			Fault: func(point string) { fault(node, point) }}
		cfg.LogCleanerBackoff = 50 * time.Millisecond
		cfg.LogRetentionCheckInterval = 100 * time.Millisecond
		// Stop is then as close to a crash as the cluster offers: the
		// leader goes with its leaderships, which move only once its
		// registration is gone.
		cfg.ControlledShutdownTimeout = -1
	})
	t.Cleanup(releasePass) // before the cluster's stop (cleanups run last first)
	admin := func() *kadm.Client { return kadm.NewClient(c.Client(kgo.MetadataMinAge(10 * time.Millisecond))) }
	adm := admin()
	const topic = "tiered-compacted-replicated"
	str := kadm.StringPtr
	resp, err := adm.CreateTopic(testCtx(t), 1, 3, map[string]*string{
		"cleanup.policy":            str("compact"),
		"remote.storage.enable":     str("true"),
		"segment.bytes":             str("4096"),
		"local.retention.bytes":     str("1"),
		"min.cleanable.dirty.ratio": str("0.01"),
		"file.delete.delay.ms":      str("1"),
		"delete.retention.ms":       str("3600000"),
		"min.insync.replicas":       str("2"),
	}, topic)
	if err != nil || resp.Err != nil {
		t.Fatalf("create %s: %v %v", topic, err, resp.Err)
	}
	var leader, epoch int32
	brokertest.WaitFor(t, 20*time.Second, "three in-sync replicas, the leader's archive ready", func() (bool, string) {
		var isr []int32
		leader, epoch, isr = partitionState(t, adm, topic)
		if leader < 0 || len(isr) != 3 || c.Brokers[leader].B == nil {
			return false, fmt.Sprintf("leader %d isr %v", leader, isr)
		}
		st := c.Brokers[leader].B.TierStatus(topic)
		return len(st) == 1 && st[0].Tiered && st[0].Leader && !st[0].Loading, fmt.Sprintf("leader %d: %+v", leader, st)
	})
	tds, err := adm.ListTopics(testCtx(t), topic)
	if err != nil {
		t.Fatal(err)
	}
	part := tiering.Partition{Topic: topic, TopicID: tds[topic].ID, Index: 0}

	// acks=all (the default), idempotent, retrying (the default) until
	// each produce's deadline.
	prod := c.Client(kgo.DefaultProduceTopic(topic), kgo.ProducerLinger(0), kgo.MetadataMinAge(50*time.Millisecond))
	var ledger uncertainLedger
	// produce sends one record, its own batch, and notes it acknowledged
	// or failed; it returns the record's offset.
	produce := func(key string, value []byte) (int64, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		r := &kgo.Record{Key: []byte(key), Value: value}
		err := prod.ProduceSync(ctx, r).FirstErr()
		ledger.note(key, value, err == nil)
		return r.Offset, err
	}
	// value is a value of key k in round name, pass i: with random
	// bytes, so that the producer's compression leaves each batch about
	// 130 bytes, some 30 to a segment.
	value := func(name string, i, k int) []byte {
		b := make([]byte, 24)
		rand.Read(b)
		return fmt.Appendf(nil, "%s-%d-k%02d-%x", name, i, k, b)
	}
	mustProduce := func(key string, value []byte) int64 {
		t.Helper()
		off, err := produce(key, value)
		if err != nil {
			t.Fatalf("producing %s: %v", key, err)
		}
		return off
	}
	// fill produces n keys written once, enough to seal the segments
	// holding the records before.
	fill := func(name string, n int) {
		t.Helper()
		for i := 0; i < n; i++ {
			mustProduce(fmt.Sprintf("filler-%s-%03d", name, i), value("f", i, 0))
		}
	}

	// Round a, under the first leader: 40 keys six times over, a
	// tombstone, fillers.
	for i := 0; i < 6; i++ {
		for k := 0; k < 40; k++ {
			mustProduce(fmt.Sprintf("k%02d", k), value("a", i, k))
		}
	}
	mustProduce("k07", nil)
	fill("a", 100)
	t.Logf("round a produced to leader %d (epoch %d) at %s", leader, epoch, since())

	var note1 *tiering.CleanerNote
	brokertest.WaitFor(t, 30*time.Second, "the remote log compacted by the first leader", func() (bool, string) {
		n, err := tiering.ReadCleanerNote(testCtx(t), bucket, tiering.Layout{}, part)
		if err != nil || n == nil || n.FirstDirty <= 0 {
			return false, fmt.Sprintf("cleaner note %+v (%v); %s", n, err, cleanerPasses(c.Brokers[leader]))
		}
		note1 = n
		return true, ""
	})
	m1 := remoteManifest(t, bucket, adm, topic)
	t.Logf("remote log compacted at %s: cleaner note %+v; manifest: %d segments, %d bytes, [%d, %d)",
		since(), *note1, m1.SegmentCount(), m1.Bytes(), m1.Start(), m1.End())
	if note1.LeaderEpoch != epoch {
		t.Errorf("cleaner note of epoch %d, the leader's is %d", note1.LeaderEpoch, epoch)
	}

	// Round b, from a goroutine, across the leader's loss: the 40 keys
	// again and again (k07 revived), until two rounds have gone by under
	// the new leader; then a tombstone for k13.
	armed.Store(leader + 1)
	var failedOver atomic.Bool
	var producedB atomic.Int64
	type roundB struct {
		acked, failed, ackedAfter int
		lastKeyed                 int64 // the offset of the last keyed record acknowledged
		errs                      []string
	}
	doneB := make(chan roundB, 1)
	go func() {
		var res roundB
		note := func(off int64, err error, after bool) {
			producedB.Add(1)
			if err != nil {
				res.failed++
				if len(res.errs) < 5 {
					res.errs = append(res.errs, err.Error())
				}
				return
			}
			res.acked++
			res.lastKeyed = max(res.lastKeyed, off)
			if after {
				res.ackedAfter++
			}
		}
		roundsAfter := 0
		for i := 0; i < 50 && roundsAfter < 2; i++ {
			after := failedOver.Load()
			for k := 0; k < 40; k++ {
				off, err := produce(fmt.Sprintf("k%02d", k), value("b", i, k))
				note(off, err, after)
			}
			if after {
				roundsAfter++
			}
		}
		off, err := produce("k13", nil)
		note(off, err, true)
		doneB <- res
	}()

	select {
	case <-reached:
	case <-time.After(30 * time.Second):
		t.Fatalf("no remote compaction pass of leader %d reached its commit within 30 s (%d records of round b produced; %s)",
			leader, producedB.Load(), cleanerPasses(c.Brokers[leader]))
	}
	brokertest.WaitFor(t, 20*time.Second, "round b under way", func() (bool, string) {
		return producedB.Load() >= 40, fmt.Sprintf("%d records", producedB.Load())
	})
	t.Logf("a pass of leader %d waits to commit, %d records of round b produced, at %s; stopping it", leader, producedB.Load(), since())
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		c.Stop(leader)
	}()
	time.Sleep(500 * time.Millisecond)
	releasePass()
	select {
	case <-stopped:
	case <-time.After(30 * time.Second):
		t.Fatalf("broker %d not stopped within 30 s", leader)
	}
	// The pass it never committed left its uploads.
	unnamed, _, err := segmentObjectsAgainst(testCtx(t), bucket, part, remoteManifest(t, bucket, adm, topic))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("leader %d stopped at %s, leaving %d objects no manifest entry names", leader, since(), len(unnamed))
	if len(unnamed) == 0 {
		t.Errorf("the pass leader %d never committed left no object behind", leader)
	}
	adm = admin()
	var newLeader, newEpoch int32
	brokertest.WaitFor(t, 30*time.Second, "a new leader", func() (bool, string) {
		l, e, isr := partitionState(t, adm, topic)
		newLeader, newEpoch = l, e
		return l >= 0 && l != leader && e > epoch, fmt.Sprintf("leader %d epoch %d isr %v", l, e, isr)
	})
	failedOver.Store(true)
	t.Logf("broker %d leads at epoch %d from %s", newLeader, newEpoch, since())
	var resB roundB
	select {
	case resB = <-doneB:
	case <-time.After(45 * time.Second):
		t.Fatalf("round b not done within 45 s of the new leader (%d records produced)", producedB.Load())
	}
	t.Logf("round b: %d acknowledged (%d under the new leader), %d failed %v, at %s", resB.acked, resB.ackedAfter, resB.failed, resB.errs, since())
	if resB.ackedAfter < 80 {
		t.Fatalf("only %d records of round b acknowledged under the new leader: %v", resB.ackedAfter, resB.errs)
	}
	// Round c: fillers under the new leader, sealing round b.
	fill("c", 100)
	end := endOffset(t, adm, topic)
	t.Logf("round c produced, log end %d, at %s", end, since())

	describe := func() string {
		var s []string
		for _, nd := range c.Brokers {
			if nd.B == nil {
				s = append(s, fmt.Sprintf("broker %d: stopped", nd.ID))
				continue
			}
			st := nd.B.TierStatus(topic)
			if len(st) != 1 {
				continue
			}
			s = append(s, fmt.Sprintf("broker %d: leader %v local [%d, %d) remote [%d, %d) %d segments %d bytes; %s", nd.ID, st[0].Leader,
				st[0].LocalStartOffset, st[0].LogEndOffset, st[0].RemoteStartOffset, st[0].RemoteEndOffset, st[0].RemoteSegments,
				st[0].RemoteBytes, cleanerPasses(nd)))
		}
		return strings.Join(s, "; ")
	}
	check := func(what string, timeout time.Duration) {
		t.Helper()
		brokertest.WaitFor(t, timeout, what, func() (bool, string) {
			recs, ok := readFromLeader(t, c, topic, end)
			why := fmt.Sprintf("read %d records before the deadline", len(recs))
			if ok {
				ok, why = ledger.check(recs)
			}
			if !ok {
				why += "\n" + describe()
			}
			return ok, why
		})
	}
	check("the remote log compacted by the new leader", 60*time.Second)
	t.Logf("read compacted at %s: %s", since(), describe())

	// The new leader's passes, from the old leader's note on.
	brokertest.WaitFor(t, 20*time.Second, "the new leader's cleaner note", func() (bool, string) {
		n, err := tiering.ReadCleanerNote(testCtx(t), bucket, tiering.Layout{}, part)
		if err != nil || n == nil {
			return false, fmt.Sprintf("cleaner note %+v (%v)", n, err)
		}
		return n.LeaderEpoch >= newEpoch && n.FirstDirty > resB.lastKeyed && n.FirstDirty > note1.FirstDirty,
			fmt.Sprintf("cleaner note %+v; the new epoch %d, round b's last keyed record at %d", *n, newEpoch, resB.lastKeyed)
	})

	// What the old leader's passes left goes with the new leader's
	// sweeps; and every object the manifest names is there (a manifest
	// read just before a pass's commit may name objects the pass
	// replaced and deletes a moment later: the wait reads again).
	brokertest.WaitFor(t, 30*time.Second, "every segment object named by the manifest, and there", func() (bool, string) {
		m := remoteManifest(t, bucket, adm, topic)
		unnamed, missing, err := segmentObjectsAgainst(testCtx(t), bucket, part, m)
		if err != nil {
			return false, err.Error()
		}
		return len(unnamed) == 0 && len(missing) == 0, fmt.Sprintf("%d objects no manifest entry names: %v; %d named and missing: %v",
			len(unnamed), unnamed, len(missing), missing)
	})
	m := remoteManifest(t, bucket, adm, topic)
	note, _ := tiering.ReadCleanerNote(testCtx(t), bucket, tiering.Layout{}, part)
	t.Logf("no unnamed object at %s; manifest: %d segments, %d bytes, [%d, %d); cleaner note %+v",
		since(), m.SegmentCount(), m.Bytes(), m.Start(), m.End(), note)

	// The old leader back: it follows, catches up, rejoins the ISR.
	c.Start(leader)
	adm = admin()
	brokertest.WaitFor(t, 30*time.Second, fmt.Sprintf("broker %d back in the ISR, caught up", leader), func() (bool, string) {
		l, _, isr := partitionState(t, adm, topic)
		leo, _, ok := c.Brokers[leader].B.ReplicaOffsets(topic, 0)
		return ok && leo >= end && slices.Contains(isr, leader), fmt.Sprintf("leader %d isr %v; broker %d's log ends at %d of %d", l, isr, leader, leo, end)
	})
	check("the topic read compacted, every broker up", 30*time.Second)
	t.Logf("broker %d caught up at %s", leader, since())
	// Followers never compact a tiered partition's local log (their
	// local logs keep what is on its way up).
	for _, nd := range c.Brokers {
		if nd.ID != newLeader {
			if n := cleanedPasses(t, nd); n != 0 {
				t.Errorf("follower %d ran %v compaction passes", nd.ID, n)
			}
		}
	}
}
