package main

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/shale-log/shale/broker/brokertest"
	"github.com/shale-log/shale/objectstore"
	"github.com/shale-log/shale/objectstore/miniotest"
	"github.com/shale-log/shale/tiering"
)

// TestSIGKILLDuringRemoteCompactionLosesNothing runs a `shale broker`
// process with a MinIO store and a tiered compacted topic, which kills
// itself with SIGKILL in its first compaction of the remote log that
// rewrites something: after the new segments' objects are PUT and before
// the manifest commit names them ("compact-uploaded"), and after the
// commit before the cleaner note is written ("compact-committed").
// Restarted without the fault, the broker compacts again; consumers from
// the start (franz-go and kcat) read every acknowledged key once with its
// last value, offsets ascending; the objects the kill left behind that no
// manifest names (the new segments of the pass that never committed, or
// the segments its commit replaced, whose deletion was to come minutes
// later) go with the orphan sweeps, every object the manifest names is
// there, and the restarted leader's pass wrote a cleaner note.
func TestSIGKILLDuringRemoteCompactionLosesNothing(t *testing.T) {
	for _, point := range []string{"compact-uploaded", "compact-committed"} {
		t.Run(point, func(t *testing.T) { killDuringRemoteCompaction(t, point) })
	}
}

func killDuringRemoteCompaction(t *testing.T, point string) {
	brokertest.KcatPath(t) // fails when CI=true and it is missing
	srv := miniotest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	begun := time.Now()
	etcdAddr := startTestEtcd(t, ctx)
	const bucketName, topic = "compacted", "tck"
	// Orphans older than a second go at the next sweep, and about every
	// two seconds a sweep lists all of the partition's objects: where
	// the objects a compaction left are, among the named ones.
	env := slices.Concat(miniotest.Env(), []string{"SHALE_TEST_ORPHAN_GRACE=1s", "SHALE_TEST_FULL_SWEEP_EVERY=2s", "SHALE_TEST_REPLACED_DELETE_DELAY=500ms"})
	p := &brokerProc{t: t, id: 0, dataDir: t.TempDir(), kafkaAddr: freeAddr(t), httpAddr: freeAddr(t), etcd: etcdAddr,
		objectStore: srv.URL(bucketName, "") + "&create_bucket=true", env: slices.Concat(env, []string{"SHALE_TEST_KILL_AT=" + point}),
		// A compaction pass is due at each look of the archive loop
		// 200ms after the last; local retention deletes uploaded
		// segments at its next check, so that fetches read the
		// compacted remote log.
		extra: []string{"--log-cleaner-backoff", "200ms", "--retention-check-interval", "200ms"}}
	startClusterBroker(t, p)
	t.Cleanup(func() { p.kill(syscall.SIGKILL) })
	defer func() {
		if t.Failed() {
			t.Logf("broker:\n%s", tail(p.earlier.String()+p.stderr.String(), 8000))
		}
	}()

	adm, err := kgo.NewClient(kgo.SeedBrokers(p.kafkaAddr))
	if err != nil {
		t.Fatal(err)
	}
	configs := map[string]*string{
		"cleanup.policy":            ptr("compact"),
		"remote.storage.enable":     ptr("true"),
		"segment.bytes":             ptr("4096"),
		"local.retention.bytes":     ptr("1"),
		"min.cleanable.dirty.ratio": ptr("0.01"),
		"file.delete.delay.ms":      ptr("1"),
	}
	if _, err := kadm.NewClient(adm).CreateTopic(ctx, 1, 1, configs, topic); err != nil {
		t.Fatal(err)
	}
	tds, err := kadm.NewClient(adm).ListTopics(ctx, topic)
	if err != nil || tds[topic].Err != nil {
		t.Fatalf("listing %s: %v %v", topic, err, tds[topic].Err)
	}
	adm.Close()
	part := tiering.Partition{Topic: topic, TopicID: tds[topic].ID, Index: 0}
	bucket, err := objectstore.NewS3(ctx, objectstore.S3Options{Bucket: bucketName, Endpoint: srv.Endpoint, Region: "us-east-1", PathStyle: true,
		AccessKey: miniotest.AccessKey, SecretKey: miniotest.SecretKey})
	if err != nil {
		t.Fatal(err)
	}
	defer bucket.Close()

	// The workload: 40 keys written 6 times over, a tombstone, then 80
	// unique fillers that seal the segments holding them.
	var work []keyValue
	for i := range 6 {
		for k := range 40 {
			work = append(work, keyValue{fmt.Sprintf("k%02d", k), fmt.Sprintf("a-%d-%s", i, strings.Repeat("v", 60))})
		}
	}
	work = append(work, keyValue{"k07", tombstoneValue})
	for i := range 80 {
		work = append(work, keyValue{fmt.Sprintf("filler-%03d", i), strings.Repeat("f", 60)})
	}
	keys := &compactedKeys{acked: map[string]string{}, maybe: map[string]map[string]bool{}}
	exited := func() bool {
		select {
		case <-p.exited:
			return true
		default:
			return false
		}
	}
	// produce sends work[next:] in batches of 40 (acks=all, idempotent),
	// and returns where it stopped: at the first record not acknowledged
	// when the broker died.
	produce := func(cl *kgo.Client, next int) int {
		for next < len(work) {
			batch := work[next:min(next+40, len(work))]
			failed, err := keys.send(ctx, cl, topic, batch)
			if failed < 0 {
				next += len(batch)
				continue
			}
			if !exited() {
				t.Fatalf("producing to the live broker: %v", err)
			}
			return next + failed
		}
		return next
	}
	// tick produces one record of a new key that seals the segment
	// before it (3 KB, a segment of 4 KB each): the archive loop runs its
	// looks (compaction passes, orphan sweeps) at each seal besides
	// every upload interval (30s, which no flag or hook shortens).
	ticks := 0
	tick := func(cl *kgo.Client) error {
		ticks++
		_, err := keys.send(ctx, cl, topic, []keyValue{{fmt.Sprintf("tick-%04d", ticks), strings.Repeat("t", 3000)}})
		return err
	}

	// Produce until the broker dies at the fault point: in the middle of
	// the workload, or after it at a tick.
	cl := newKillableProducer(t, p)
	next := produce(cl, 0)
	for !exited() {
		if ctx.Err() != nil || time.Since(begun) > 60*time.Second {
			t.Fatalf("the broker did not die at %s", point)
		}
		if err := tick(cl); err != nil && !exited() {
			t.Fatalf("producing to the live broker: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	cl.Close()
	if !strings.Contains(p.stderr.String(), "SHALE_TEST_KILL_AT: killing the process at "+point) {
		t.Fatalf("the broker exited, not at the fault point")
	}
	killed, killedAt := time.Since(begun), time.Now()

	// What the kill left: objects inside the manifest's offsets that it
	// does not name, the new segments of the pass (compact-uploaded) or
	// those its commit replaced (compact-committed).
	m, unnamed, missing, err := compactionObjects(ctx, bucket, part)
	if err != nil {
		t.Fatal(err)
	}
	if len(missing) > 0 {
		t.Fatalf("killed at %s: the manifest names objects not in the bucket: %v", point, missing)
	}
	var left []string
	for _, k := range unnamed {
		if base, err := strconv.ParseInt(strings.SplitN(filepath.Base(k), "-", 2)[0], 10, 64); err == nil && base < m.End() {
			left = append(left, k)
		}
	}
	if len(left) < 2 {
		t.Fatalf("killed at %s: no compaction's objects among those the manifest [%d, %d) does not name: %v", point, m.Start(), m.End(), unnamed)
	}
	t.Logf("killed at %s %v after the start, %d of %d workload records sent; the manifest [%d, %d) of %d segments does not name %d objects inside it",
		point, killed.Round(time.Millisecond), next, len(work), m.Start(), m.End(), m.SegmentCount(), len(left))

	// Restart without the fault, send the rest of the workload, and tick
	// until the restarted leader has compacted the remote log again.
	p.env = env
	startClusterBroker(t, p)
	restarted := time.Now()
	cl = newKillableProducer(t, p)
	defer cl.Close()
	if next = produce(cl, next); next < len(work) {
		t.Fatalf("the restarted broker died")
	}
	brokertest.WaitFor(t, 60*time.Second, "every key read once, with its last acknowledged value", func() (bool, string) {
		if err := tick(cl); err != nil {
			t.Fatalf("producing to the restarted broker: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
		recs, err := consumeKeys(ctx, p.kafkaAddr, topic)
		if err != nil {
			return false, err.Error()
		}
		if diff := keys.check(recs); diff != "" {
			return false, diff
		}
		return true, ""
	})
	compacted := time.Since(restarted)

	// Then the orphans go: no .log or .indexes object the manifest does
	// not name, and every one it names there. (The objects the restarted
	// broker's own passes replaced go with them, ReplacedDeleteDelay after
	// each pass: 500 ms here.)
	brokertest.WaitFor(t, 30*time.Second, "the objects no manifest names deleted", func() (bool, string) {
		if err := tick(cl); err != nil {
			t.Fatalf("producing to the restarted broker: %v", err)
		}
		time.Sleep(300 * time.Millisecond)
		m, unnamed, missing, err = compactionObjects(ctx, bucket, part)
		if err != nil {
			return false, err.Error()
		}
		// (A commit and a sweep between the read and the listing
		// can delete what the manifest read names: looked at again.)
		return len(unnamed) == 0 && len(missing) == 0, fmt.Sprintf("objects the manifest [%d, %d) does not name: %v; named and not there: %v",
			m.Start(), m.End(), unnamed, missing)
	})
	swept := time.Since(restarted)
	note, err := tiering.ReadCleanerNote(ctx, bucket, tiering.Layout{}, part)
	if err != nil || note == nil || note.FirstDirty <= 0 || note.FirstDirty > m.End() || !note.CleanedAt.After(killedAt) {
		t.Fatalf("cleaner note %+v (%v): want one of a pass of the restarted broker (after %v), first dirty in (0, %d]",
			note, err, killedAt.UTC(), m.End())
	}

	// kcat (librdkafka) reads the same from the start.
	out := brokertest.Kcat(t, "", "-b", p.kafkaAddr, "-C", "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%o %k=%s\n")
	var recs []keyRead
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		off, kv, ok1 := strings.Cut(line, " ")
		k, v, ok2 := strings.Cut(kv, "=")
		o, err := strconv.ParseInt(off, 10, 64)
		if !ok1 || !ok2 || err != nil {
			t.Fatalf("kcat printed %q", line)
		}
		if v == "" { // kcat prints a null value as nothing; no value sent is empty
			v = tombstoneValue
		}
		recs = append(recs, keyRead{offset: o, key: k, value: v})
	}
	if diff := keys.check(recs); diff != "" {
		t.Fatalf("kcat: %s", diff)
	}
	t.Logf("killed %v after the start; after the restart, every key read once with its last value at %v, orphans gone at %v; "+
		"%d keys, %d records read; the remote log [%d, %d), %d segments, %d bytes; cleaner note at epoch %d, first dirty %d; %d ticks",
		killed.Round(time.Millisecond), compacted.Round(time.Millisecond), swept.Round(time.Millisecond), len(keys.acked), len(recs),
		m.Start(), m.End(), m.SegmentCount(), m.Bytes(), note.LeaderEpoch, note.FirstDirty, ticks)
}

// tombstoneValue stands for a null value.
const tombstoneValue = "<tombstone>"

type keyValue struct{ key, value string }

// keyRead is a record read: its offset, key and value (tombstoneValue
// when null).
type keyRead struct {
	offset     int64
	key, value string
}

// compactedKeys is what producers to a compacted topic were told: each
// key's last acknowledged value, and the values sent after it that were
// not acknowledged (the broker died first: in the log or not).
type compactedKeys struct {
	acked map[string]string
	maybe map[string]map[string]bool
}

// send produces records and notes what was acknowledged; it returns the
// index of the first record not acknowledged (-1: none) and its error.
func (c *compactedKeys) send(ctx context.Context, cl *kgo.Client, topic string, records []keyValue) (int, error) {
	var recs []*kgo.Record
	for _, kv := range records {
		r := &kgo.Record{Topic: topic, Key: []byte(kv.key)}
		if kv.value != tombstoneValue {
			r.Value = []byte(kv.value)
		}
		recs = append(recs, r)
	}
	failed, first := -1, error(nil)
	// The results are in the order of recs, which is the log's for the
	// records written (one partition, an idempotent producer).
	for i, res := range cl.ProduceSync(ctx, recs...) {
		kv := records[i]
		if res.Err == nil {
			c.acked[kv.key] = kv.value
			delete(c.maybe, kv.key)
			continue
		}
		if failed < 0 {
			failed, first = i, res.Err
		}
		if c.maybe[kv.key] == nil {
			c.maybe[kv.key] = map[string]bool{}
		}
		c.maybe[kv.key][kv.value] = true
	}
	return failed, first
}

// check describes how recs, read from the start, differ from a compacted
// log of what was acknowledged ("" when they do not): offsets ascending,
// each key once, with its last acknowledged value or one sent after it.
func (c *compactedKeys) check(recs []keyRead) string {
	seen := map[string]int{}
	for i, r := range recs {
		if i > 0 && r.offset <= recs[i-1].offset {
			return fmt.Sprintf("offset %d read after %d", r.offset, recs[i-1].offset)
		}
		if seen[r.key]++; seen[r.key] > 1 {
			return fmt.Sprintf("key %s read again at offset %d (%d records read)", r.key, r.offset, len(recs))
		}
		if v, ok := c.acked[r.key]; (!ok || v != r.value) && !c.maybe[r.key][r.value] {
			return fmt.Sprintf("key %s at offset %d: %.30q, neither its last acknowledged value (%.30q) nor one sent after it", r.key, r.offset, r.value, v)
		}
	}
	for k := range c.acked {
		if seen[k] != 1 {
			return fmt.Sprintf("acknowledged key %s read %d times (%d records read)", k, seen[k], len(recs))
		}
	}
	return ""
}

// newKillableProducer is an idempotent acks=all producer to p. An
// idempotent producer keeps retrying what the dead broker may have
// written until it can tell: it is closed when p exits, failing them.
func newKillableProducer(t *testing.T, p *brokerProc) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(p.kafkaAddr), kgo.ProducerBatchCompression(kgo.NoCompression()),
		kgo.RequestTimeoutOverhead(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	exited := p.exited
	go func() {
		<-exited
		cl.Close()
	}()
	return cl
}

// consumeKeys reads the topic's partition 0 from the start to its high
// watermark.
func consumeKeys(ctx context.Context, addr, topic string) ([]keyRead, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil {
		return nil, err
	}
	end, _ := ends.Lookup(topic, 0)
	if end.Err != nil {
		return nil, end.Err
	}
	var out []keyRead
	for len(out) == 0 && end.Offset > 0 || len(out) > 0 && out[len(out)-1].offset < end.Offset-1 {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return out, fmt.Errorf("read %d records in 20 s, not to offset %d", len(out), end.Offset-1)
		}
		if err := fs.Err(); err != nil {
			return out, err
		}
		fs.EachRecord(func(r *kgo.Record) {
			v := string(r.Value)
			if r.Value == nil {
				v = tombstoneValue
			}
			out = append(out, keyRead{offset: r.Offset, key: string(r.Key), value: v})
		})
	}
	return out, nil
}

// compactionObjects reads part's manifest (with its spilled parts) and
// lists its objects: the .log and .indexes objects the manifest does not
// name, and those it names that are not there.
func compactionObjects(ctx context.Context, bucket objectstore.Bucket, part tiering.Partition) (m *tiering.Manifest, unnamed, missing []string, err error) {
	l := tiering.Layout{}
	if m, err = tiering.LoadManifest(ctx, bucket, l, part); err != nil {
		return nil, nil, nil, err
	}
	named := map[string]bool{}
	if err := tiering.WalkSegments(ctx, tiering.BucketSpills{Bucket: bucket, Layout: l}, part, m, 0, nil, func(s tiering.Segment) bool {
		named[l.SegmentKey(part, s.BaseOffset, s.ID)] = true
		named[l.CompanionKey(part, s.BaseOffset, s.ID)] = true
		return true
	}); err != nil {
		return nil, nil, nil, err
	}
	// Listed after the manifest was read: the broker puts a segment's
	// objects before the commit that names them.
	there := map[string]bool{}
	if err := bucket.List(ctx, l.PartitionPrefix(part), func(a objectstore.Attrs) error {
		if strings.HasSuffix(a.Key, ".log") || strings.HasSuffix(a.Key, ".indexes") {
			there[a.Key] = true
			if !named[a.Key] {
				unnamed = append(unnamed, a.Key)
			}
		}
		return nil
	}); err != nil {
		return nil, nil, nil, err
	}
	for k := range named {
		if !there[k] {
			missing = append(missing, k)
		}
	}
	slices.Sort(unnamed)
	slices.Sort(missing)
	return m, unnamed, missing, nil
}
