package txn

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/localseg/recordbatch"
)

// fakeClock fires timers only when the test advances it.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	seq    int
	timers []*fakeTimer
}

type fakeTimer struct {
	c       *fakeClock
	when    time.Time
	seq     int
	f       func()
	stopped bool
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Unix(1_700_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	t := &fakeTimer{c: c, when: c.now.Add(d), seq: c.seq, f: f}
	c.timers = append(c.timers, t)
	return t
}

func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := !t.stopped
	t.stopped = true
	return was
}

// pending counts the timers not yet fired or stopped.
func (c *fakeClock) pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, t := range c.timers {
		if !t.stopped {
			n++
		}
	}
	return n
}

// Advance moves time forward, firing due timers in order (each callback
// runs synchronously, so its post to a shard is queued on return).
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	target := c.now.Add(d)
	for {
		sort.Slice(c.timers, func(i, j int) bool {
			if !c.timers[i].when.Equal(c.timers[j].when) {
				return c.timers[i].when.Before(c.timers[j].when)
			}
			return c.timers[i].seq < c.timers[j].seq
		})
		live := c.timers[:0]
		for _, t := range c.timers {
			if !t.stopped {
				live = append(live, t)
			}
		}
		c.timers = live
		if len(c.timers) == 0 || c.timers[0].when.After(target) {
			break
		}
		t := c.timers[0]
		c.timers = c.timers[1:]
		t.stopped = true
		c.now = t.when
		c.mu.Unlock()
		t.f()
		c.mu.Lock()
	}
	c.now = target
	c.mu.Unlock()
}

// memLog is an in-memory Log with fault injection.
type memLog struct {
	mu      sync.Mutex
	batches [][]byte
	start   int64
	next    int64
	appends int
	// failAppends fails that many appends with failErr.
	failAppends int
	failErr     error
	// gate, when set, blocks each Append until a value is received.
	gate chan struct{}
	// scanGate, when set, blocks Scan until closed.
	scanGate chan struct{}
	// unproven makes Leads report false.
	unproven atomic.Bool
	// scanFails fails that many Scans.
	scanFails atomic.Int32
}

func (l *memLog) Leads() bool { return !l.unproven.Load() }

func (l *memLog) Append(ctx context.Context, recs []recordbatch.Record) (int64, error) {
	l.mu.Lock()
	gate := l.gate
	l.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.failAppends > 0 {
		l.failAppends--
		return 0, l.failErr
	}
	b, err := recordbatch.Build(nil, recordbatch.BuildOptions{BaseOffset: l.next, ProducerID: -1, ProducerEpoch: -1, BaseSequence: -1, BaseTimestamp: 1}, recs)
	if err != nil {
		return 0, err
	}
	base := l.next
	l.batches = append(l.batches, b)
	l.next += int64(len(recs))
	l.appends++
	return base, nil
}

// failNext makes the next n appends fail with err.
func (l *memLog) failNext(n int, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.failAppends, l.failErr = n, err
}

// addBatch appends a raw batch (as another writer, a Kafka tool, would).
func (l *memLog) addBatch(b []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	recordbatch.Batch(b).SetBaseOffset(l.next)
	l.batches = append(l.batches, b)
	l.next = recordbatch.Batch(b).NextOffset()
}

func (l *memLog) Scan(ctx context.Context, fn func(recordbatch.Batch) error) error {
	if l.scanGate != nil {
		select {
		case <-l.scanGate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if l.scanFails.Add(-1) >= 0 {
		return errors.New("memlog: disk error")
	}
	l.mu.Lock()
	bs := append([][]byte(nil), l.batches...)
	l.mu.Unlock()
	for _, b := range bs {
		if err := fn(recordbatch.Batch(b)); err != nil {
			return err
		}
	}
	return nil
}

func (l *memLog) DeleteBefore(off int64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if off < l.start || off > l.next {
		return errors.New("memlog: offset out of range")
	}
	l.start = off
	keep := l.batches[:0]
	for _, b := range l.batches {
		if recordbatch.Batch(b).NextOffset() > off {
			keep = append(keep, b)
		}
	}
	l.batches = keep
	return nil
}

func (l *memLog) stats() (start, next int64, appends int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.start, l.next, l.appends
}

// records decodes every record in the log, in order.
func (l *memLog) records(t testing.TB) []decoded {
	t.Helper()
	var out []decoded
	err := l.Scan(context.Background(), func(b recordbatch.Batch) error {
		return recordbatch.Records(context.Background(), b, recordbatch.ValidateOptions{}, func(r recordbatch.Record) error {
			d, err := decodeRecord(r.Key, r.Value)
			if err != nil {
				return err
			}
			out = append(out, d)
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// markerCall is one WriteMarkers call.
type markerCall struct {
	pid              int64
	epoch            int16
	coordinatorEpoch int32
	commit           bool
	partitions       []TopicPartition
}

// fakeMarkers records WriteMarkers calls and answers 0, or the codes
// queued for a partition (one per call, kfake-style fault budget).
type fakeMarkers struct {
	mu    sync.Mutex
	calls []markerCall
	fail  map[TopicPartition][]int16
	// gate, when set, blocks each call until a value is received.
	gate chan struct{}
}

func newFakeMarkers() *fakeMarkers { return &fakeMarkers{fail: map[TopicPartition][]int16{}} }

func (m *fakeMarkers) WriteMarkers(ctx context.Context, pid int64, epoch int16, coordinatorEpoch int32, commit bool, partitions []TopicPartition) map[TopicPartition]int16 {
	m.mu.Lock()
	gate := m.gate
	m.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			out := map[TopicPartition]int16{}
			for _, tp := range partitions {
				out[tp] = codeRequestTimedOut
			}
			return out
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls = append(m.calls, markerCall{pid, epoch, coordinatorEpoch, commit, slices.Clone(partitions)})
	out := map[TopicPartition]int16{}
	for _, tp := range partitions {
		var code int16
		if q := m.fail[tp]; len(q) > 0 {
			code, m.fail[tp] = q[0], q[1:]
		}
		out[tp] = code
	}
	return out
}

// failWith queues codes for a partition's next calls.
func (m *fakeMarkers) failWith(tp TopicPartition, codes ...int16) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.fail[tp] = append(m.fail[tp], codes...)
}

func (m *fakeMarkers) setGate(g chan struct{}) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.gate = g
}

func (m *fakeMarkers) snapshot() []markerCall {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.calls)
}

// fakePIDs hands out producer ids 1000, 1001, ...
type fakePIDs struct {
	next  atomic.Int64
	calls atomic.Int64
	fail  atomic.Bool
}

func newFakePIDs() *fakePIDs {
	p := &fakePIDs{}
	p.next.Store(1000)
	return p
}

func (p *fakePIDs) NextProducerID(context.Context) (int64, error) {
	p.calls.Add(1)
	if p.fail.Load() {
		return -1, errors.New("no producer id block")
	}
	return p.next.Add(1) - 1, nil
}

// fakeTopics knows a fixed set of topics and their partition counts.
type fakeTopics struct {
	mu sync.Mutex
	m  map[string]int32
}

func newFakeTopics(m map[string]int32) *fakeTopics { return &fakeTopics{m: m} }

func (f *fakeTopics) Partitions(topic string) (int32, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, ok := f.m[topic]
	return n, ok
}

func (f *fakeTopics) remove(topic string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.m, topic)
}

// env is a coordinator with one transaction state partition over a
// memLog, driven by a fake clock.
type env struct {
	t       testing.TB
	clock   *fakeClock
	log     *memLog
	markers *fakeMarkers
	pids    *fakePIDs
	topics  *fakeTopics
	c       *Coordinator
	cfg     Config
	opts    Options
	epoch   int32 // the coordinator epoch Load gets
}

func testConfig() Config {
	cfg := DefaultConfig()
	cfg.NumPartitions = 1
	return cfg
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newEnv(t testing.TB, mutate ...func(*Config)) *env {
	t.Helper()
	cfg := testConfig()
	for _, m := range mutate {
		m(&cfg)
	}
	e := &env{
		t:       t,
		clock:   newFakeClock(),
		log:     &memLog{},
		markers: newFakeMarkers(),
		pids:    newFakePIDs(),
		topics:  newFakeTopics(map[string]int32{"a": 3, "b": 2, offsetsTopic: 50}),
		cfg:     cfg,
		epoch:   7,
	}
	e.opts = Options{Clock: e.clock, Logger: quietLogger(), ProducerIDs: e.pids, Markers: e.markers, Topics: e.topics}
	e.start()
	return e
}

// start (re)creates the coordinator over the same log, as a broker
// restart or a coordinator move does.
func (e *env) start() {
	e.t.Helper()
	if e.c != nil {
		e.c.Close()
	}
	c, err := New(e.cfg, e.opts)
	if err != nil {
		e.t.Fatal(err)
	}
	e.c = c
	e.t.Cleanup(c.Close)
	c.Load(0, e.epoch, e.log)
	e.waitLoaded(0)
}

func (e *env) waitLoaded(p int32) {
	e.t.Helper()
	e.waitFor("partition loaded", func() bool { return e.c.Loaded(p) })
}

// waitFor polls cond (real time) until it holds.
func (e *env) waitFor(what string, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(200 * time.Microsecond)
	}
}

func (e *env) shard() *shard {
	e.c.mu.RLock()
	defer e.c.mu.RUnlock()
	return e.c.mu.shards[0]
}

// onLoop runs fn on the shard's goroutine (for inspecting state).
func (e *env) onLoop(fn func(s *shard)) {
	e.t.Helper()
	s := e.shard()
	if _, code := await(context.Background(), s, func(reply func(struct{})) { fn(s); reply(struct{}{}) }); code != 0 {
		e.t.Fatalf("onLoop: code %d", code)
	}
}

// settle waits until the shard has no append queued or in flight.
func (e *env) settle() {
	e.t.Helper()
	e.waitFor("appends settled", func() bool {
		busy := false
		e.onLoop(func(s *shard) { busy = s.appending || len(s.pending) > 0 })
		return !busy
	})
}

// idle waits until no transaction of the shard is completing or being
// written.
func (e *env) idle() {
	e.t.Helper()
	e.waitFor("completions done", func() bool {
		busy := false
		e.onLoop(func(s *shard) {
			busy = s.appending || len(s.pending) > 0
			for _, x := range s.txns {
				if x.pending() {
					busy = true
				}
			}
		})
		return !busy
	})
}

// advance moves the clock and waits for the timers' appends.
func (e *env) advance(d time.Duration) {
	e.t.Helper()
	e.clock.Advance(d)
	e.onLoop(func(*shard) {})
	e.settle()
}

// entry returns a copy of an id's state (ok false when unknown).
func (e *env) entry(id string) (txnEntry, bool) {
	var out txnEntry
	var ok bool
	e.onLoop(func(s *shard) {
		if x := s.txns[id]; x != nil && x.stored {
			out, ok = *x, true
		}
	})
	return out, ok
}

func (e *env) stats() shardStats {
	var st shardStats
	e.onLoop(func(s *shard) { st = s.stats })
	return st
}

var ctx = context.Background()

// --- request helpers ---

func (e *env) initReq(version int16, id string, timeoutMs int32, pid int64, epoch int16) *kmsg.InitProducerIDResponse {
	r := kmsg.NewPtrInitProducerIDRequest()
	r.Version = version
	if id != "\x00" {
		r.TransactionalID = &id
	}
	r.TransactionTimeoutMillis = timeoutMs
	r.ProducerID, r.ProducerEpoch = pid, epoch
	return e.c.InitProducerID(ctx, r)
}

// init initializes id (v4, no KIP-360 fields) and requires success.
func (e *env) init(id string) (int64, int16) {
	e.t.Helper()
	r := e.initReq(4, id, 60_000, -1, -1)
	if r.ErrorCode != 0 {
		e.t.Fatalf("init %q: code %d", id, r.ErrorCode)
	}
	return r.ProducerID, r.ProducerEpoch
}

func (e *env) addReq(version int16, id string, pid int64, epoch int16, parts map[string][]int32) *kmsg.AddPartitionsToTxnResponse {
	r := kmsg.NewPtrAddPartitionsToTxnRequest()
	r.Version = version
	r.TransactionalID, r.ProducerID, r.ProducerEpoch = id, pid, epoch
	topics := make([]string, 0, len(parts))
	for t := range parts {
		topics = append(topics, t)
	}
	sort.Strings(topics)
	for _, t := range topics {
		rt := kmsg.NewAddPartitionsToTxnRequestTopic()
		rt.Topic, rt.Partitions = t, parts[t]
		r.Topics = append(r.Topics, rt)
	}
	return e.c.AddPartitionsToTxn(ctx, r)
}

// addCodes returns "topic-partition" -> code.
func addCodes(r *kmsg.AddPartitionsToTxnResponse) map[TopicPartition]int16 {
	out := map[TopicPartition]int16{}
	for _, t := range r.Topics {
		for _, p := range t.Partitions {
			out[TopicPartition{t.Topic, p.Partition}] = p.ErrorCode
		}
	}
	return out
}

// add adds partitions (v3) and returns the single code they all got.
func (e *env) add(id string, pid int64, epoch int16, parts map[string][]int32) int16 {
	e.t.Helper()
	codes := addCodes(e.addReq(3, id, pid, epoch, parts))
	var code int16 = -2
	for _, c := range codes {
		if code != -2 && c != code {
			e.t.Fatalf("mixed codes %v", codes)
		}
		code = c
	}
	return code
}

func (e *env) end(version int16, id string, pid int64, epoch int16, commit bool) int16 {
	r := kmsg.NewPtrEndTxnRequest()
	r.Version = version
	r.TransactionalID, r.ProducerID, r.ProducerEpoch, r.Commit = id, pid, epoch, commit
	return e.c.EndTxn(ctx, r).ErrorCode
}

func (e *env) addOffsets(id string, pid int64, epoch int16, group string) int16 {
	r := kmsg.NewPtrAddOffsetsToTxnRequest()
	r.Version = 3
	r.TransactionalID, r.ProducerID, r.ProducerEpoch, r.Group = id, pid, epoch, group
	return e.c.AddOffsetsToTxn(ctx, r).ErrorCode
}

func (e *env) describe(id string) kmsg.DescribeTransactionsResponseTransactionState {
	r := kmsg.NewPtrDescribeTransactionsRequest()
	r.TransactionalIDs = []string{id}
	return e.c.DescribeTransactions(ctx, r).TransactionStates[0]
}

func tps(topic string, parts ...int32) []TopicPartition {
	out := make([]TopicPartition, len(parts))
	for i, p := range parts {
		out[i] = TopicPartition{topic, p}
	}
	return out
}

// waitRetryTimer waits until the shard has a timer beyond its two
// periodic scans (a marker or completion retry waiting on its backoff).
func (e *env) waitRetryTimer() {
	e.t.Helper()
	e.waitFor("a retry timer", func() bool {
		n := 0
		e.onLoop(func(s *shard) { n = len(s.timers) })
		return n > 2
	})
}

// waitCalls waits until WriteMarkers has been called n times.
func (e *env) waitCalls(n int) []markerCall {
	e.t.Helper()
	e.waitFor("marker calls", func() bool { return len(e.markers.snapshot()) >= n })
	return e.markers.snapshot()
}

// seed writes an id's record straight into the log (before a start).
func (e *env) seed(id string, m txnMeta) {
	e.t.Helper()
	rec := recordbatch.Record{Key: appendKey(nil, id), Value: appendValue(nil, &m)}
	if _, err := e.log.Append(ctx, []recordbatch.Record{rec}); err != nil {
		e.t.Fatal(err)
	}
}
