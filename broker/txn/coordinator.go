package txn

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"sort"
	"sync"
	"unicode/utf16"

	"github.com/shale-log/shale/localseg/recordbatch"
)

// Options are the coordinator's collaborators.
type Options struct {
	// Clock drives every timer; nil means the system clock.
	Clock Clock
	// Logger; nil means slog.Default().
	Logger *slog.Logger
	// ProducerIDs allocates producer ids (required).
	ProducerIDs ProducerIDs
	// Markers delivers transaction markers (required).
	Markers Markers
	// Topics answers "does this topic partition exist" for
	// AddPartitionsToTxn and marker delivery; nil accepts every topic
	// (unit tests).
	Topics Topics
	// ScanBudget bounds, with the broker's other readers of batches, the
	// memory of decompressing batches on load; nil means no shared bound.
	ScanBudget *recordbatch.Budget
}

// Coordinator is the transaction coordinator of one broker: one shard per
// __transaction_state partition this broker leads. Each shard's state is
// owned by the shard's goroutine; the Coordinator only routes requests to
// shards. Its methods are safe for concurrent use.
type Coordinator struct {
	cfg     Config
	clock   Clock
	log     *slog.Logger
	pids    ProducerIDs
	markers Markers
	topics  Topics
	budget  *recordbatch.Budget
	metrics *metrics

	mu struct {
		sync.RWMutex
		shards map[int32]*shard
		closed bool
	}
}

// New returns a coordinator with no partitions loaded.
func New(cfg Config, opts Options) (*Coordinator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if opts.ProducerIDs == nil {
		return nil, errors.New("txn: Options.ProducerIDs is required")
	}
	if opts.Markers == nil {
		return nil, errors.New("txn: Options.Markers is required")
	}
	if opts.Clock == nil {
		opts.Clock = SystemClock()
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	c := &Coordinator{
		cfg:     cfg,
		clock:   opts.Clock,
		log:     opts.Logger,
		pids:    opts.ProducerIDs,
		markers: opts.Markers,
		topics:  opts.Topics,
		budget:  opts.ScanBudget,
		metrics: newMetrics(),
	}
	c.mu.shards = map[int32]*shard{}
	return c, nil
}

// Config returns the coordinator's configuration.
func (c *Coordinator) Config() Config { return c.cfg }

// PartitionFor is the __transaction_state partition that holds a
// transactional id, as Kafka computes it (see the package PartitionFor).
func (c *Coordinator) PartitionFor(id string) int32 {
	return PartitionFor(id, c.cfg.NumPartitions)
}

// PartitionFor is Kafka's mapping of a transactional id (or group id) to
// one of n partitions: Utils.abs(id.hashCode()) % n, where String.hashCode
// runs over UTF-16 code units and Utils.abs maps Integer.MIN_VALUE to 0.
func PartitionFor(id string, n int32) int32 {
	h := javaStringHash(id)
	if h == math.MinInt32 {
		h = 0
	} else if h < 0 {
		h = -h
	}
	return h % n
}

func javaStringHash(s string) int32 {
	var h int32
	ascii := true
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			ascii = false
			break
		}
		h = 31*h + int32(s[i])
	}
	if ascii {
		return h
	}
	h = 0
	for _, u := range utf16.Encode([]rune(s)) {
		h = 31*h + int32(u)
	}
	return h
}

// Load starts serving the transactional ids of a __transaction_state
// partition this broker now leads, at coordinatorEpoch (the partition's
// leader epoch, sent with every marker so that partitions fence stale
// coordinators). Its log is read in the background; until that finishes
// the partition's ids answer COORDINATOR_LOAD_IN_PROGRESS. A partition
// already loaded is unloaded first.
func (c *Coordinator) Load(partition int32, coordinatorEpoch int32, log Log) {
	c.mu.Lock()
	if c.mu.closed {
		c.mu.Unlock()
		return
	}
	old := c.mu.shards[partition]
	s := newShard(c, partition, coordinatorEpoch, log)
	c.mu.shards[partition] = s
	c.mu.Unlock()
	if old != nil {
		old.stop()
	}
	s.start()
}

// Unload stops serving a partition (this broker no longer leads it):
// waiting requests get NOT_COORDINATOR, marker deliveries stop, and it
// returns once the partition's goroutines have stopped and no append of
// theirs is in flight.
func (c *Coordinator) Unload(partition int32) {
	c.mu.Lock()
	s := c.mu.shards[partition]
	delete(c.mu.shards, partition)
	c.mu.Unlock()
	if s != nil {
		s.stop()
	}
}

// Loaded reports whether the partition is loaded and serving.
func (c *Coordinator) Loaded(partition int32) bool {
	c.mu.RLock()
	s := c.mu.shards[partition]
	c.mu.RUnlock()
	return s != nil && s.loaded.Load()
}

// Close unloads every partition. Idempotent.
func (c *Coordinator) Close() {
	c.mu.Lock()
	c.mu.closed = true
	shards := c.mu.shards
	c.mu.shards = map[int32]*shard{}
	c.mu.Unlock()
	for _, s := range shards {
		s.stop()
	}
}

// shardFor routes a transactional id to its loaded shard, or returns the
// error code the client should see (NOT_COORDINATOR,
// COORDINATOR_LOAD_IN_PROGRESS).
func (c *Coordinator) shardFor(id string) (*shard, int16) {
	p := c.PartitionFor(id)
	c.mu.RLock()
	s := c.mu.shards[p]
	c.mu.RUnlock()
	if s == nil {
		return nil, codeNotCoordinator
	}
	if !s.loaded.Load() {
		return nil, codeCoordinatorLoadInProgress
	}
	if !s.log.Leads() {
		return nil, codeNotCoordinator
	}
	return s, 0
}

// allShards returns the loaded shards whose partitions this broker can
// prove it leads, in partition order, and whether any partition is still
// loading.
func (c *Coordinator) allShards() ([]*shard, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	var out []*shard
	loading := false
	for _, s := range c.mu.shards {
		switch {
		case !s.loaded.Load():
			loading = true
		case s.log.Leads():
			out = append(out, s)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].partition < out[j].partition })
	return out, loading
}

// topicGone reports whether a partition no longer exists (its topic was
// deleted), so that markers for it are dropped as Kafka drops them.
func (c *Coordinator) topicGone(tp TopicPartition) bool {
	if c.topics == nil {
		return false
	}
	n, ok := c.topics.Partitions(tp.Topic)
	return !ok || tp.Partition >= n
}

// onTxnShard runs fn on the shard coordinating id and waits for its reply,
// as await does. The code is non-zero, and fn does not run, when the id is
// not coordinated here.
func onTxnShard[T any](ctx context.Context, c *Coordinator, id string, fn func(s *shard, reply func(T))) (T, int16) {
	return submitToTxnShard(ctx, c, id, fn)()
}

// submitToTxnShard is onTxnShard that returns once fn is queued, with a
// function that waits for the reply.
func submitToTxnShard[T any](ctx context.Context, c *Coordinator, id string, fn func(s *shard, reply func(T))) func() (T, int16) {
	s, code := c.shardFor(id)
	if code != 0 {
		var zero T
		return func() (T, int16) { return zero, code }
	}
	return submit(ctx, s, func(reply func(T)) { fn(s, reply) })
}

// await runs fn on the shard's goroutine and waits for its reply (which fn
// may give later, after an append). The code is non-zero when no reply
// came: the shard stopped (NOT_COORDINATOR) or ctx ended
// (COORDINATOR_NOT_AVAILABLE).
func await[T any](ctx context.Context, s *shard, fn func(reply func(T))) (T, int16) {
	return submit(ctx, s, fn)()
}

// submit queues fn for the shard's goroutine and returns at once with a
// function that waits for fn's reply, as await does.
func submit[T any](ctx context.Context, s *shard, fn func(reply func(T))) func() (T, int16) {
	ch := make(chan T, 1)
	reply := func(v T) {
		select {
		case ch <- v:
		default: // a second reply is a bug; the first one stands
		}
	}
	var zero T
	select {
	case s.ops <- func() { fn(reply) }:
	case <-s.ctx.Done():
		return func() (T, int16) { return zero, codeNotCoordinator }
	case <-ctx.Done():
		return func() (T, int16) { return zero, codeCoordinatorNotAvailable }
	}
	return func() (T, int16) {
		select {
		case v := <-ch:
			return v, 0
		case <-s.ctx.Done():
		case <-ctx.Done():
		}
		select {
		case v := <-ch:
			return v, 0
		default:
		}
		if s.ctx.Err() != nil {
			return zero, codeNotCoordinator
		}
		return zero, codeCoordinatorNotAvailable
	}
}
