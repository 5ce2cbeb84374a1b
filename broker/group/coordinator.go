package group

import (
	"github.com/shale-log/shale/localseg/recordbatch"

	"context"
	"log/slog"
	"math"
	"sort"
	"sync"
	"unicode/utf16"

	"github.com/twmb/franz-go/pkg/kerr"
)

// Options are the coordinator's collaborators.
type Options struct {
	// Clock drives every timer; nil means the system clock.
	Clock Clock
	// Logger; nil means slog.Default().
	Logger *slog.Logger
	// Topics answers "does this topic exist"; nil accepts every topic
	// (unit tests).
	Topics Topics
	// ScanBudget bounds, with the broker's other readers of batches, the
	// memory of decompressing batches on load; nil means no shared bound
	// (each batch is still capped).
	ScanBudget *recordbatch.Budget
}

// Coordinator is the group coordinator of one broker: one shard per
// __consumer_offsets partition this broker leads. Each shard's state is
// owned by the shard's goroutine; the Coordinator only routes requests to
// shards. Its methods are safe for concurrent use.
type Coordinator struct {
	cfg    Config
	clock  Clock
	log    *slog.Logger
	topics Topics
	budget *recordbatch.Budget

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
	if opts.Clock == nil {
		opts.Clock = SystemClock()
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	c := &Coordinator{cfg: cfg, clock: opts.Clock, log: opts.Logger, topics: opts.Topics, budget: opts.ScanBudget}
	c.mu.shards = map[int32]*shard{}
	return c, nil
}

// Config returns the coordinator's configuration.
func (c *Coordinator) Config() Config { return c.cfg }

// PartitionFor is the __consumer_offsets partition that holds a group, as
// Kafka computes it: Utils.abs(groupId.hashCode()) % partitions, where
// String.hashCode runs over UTF-16 code units and Utils.abs maps
// Integer.MIN_VALUE to 0.
func (c *Coordinator) PartitionFor(group string) int32 {
	return PartitionFor(group, c.cfg.OffsetsTopicNumPartitions)
}

// PartitionFor is Kafka's group-to-partition mapping for n partitions.
func PartitionFor(group string, n int32) int32 {
	h := javaStringHash(group)
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

// Load starts serving the groups of an offsets partition this broker now
// leads: its log is read in the background, and until that finishes the
// partition's groups answer COORDINATOR_LOAD_IN_PROGRESS. A partition
// already loaded is unloaded first.
func (c *Coordinator) Load(partition int32, log Log) {
	c.mu.Lock()
	if c.mu.closed {
		c.mu.Unlock()
		return
	}
	old := c.mu.shards[partition]
	s := newShard(c, partition, log)
	c.mu.shards[partition] = s
	c.mu.Unlock()
	if old != nil {
		old.stop()
	}
	s.start()
}

// Unload stops serving an offsets partition (this broker no longer leads
// it): waiting requests get NOT_COORDINATOR, and it returns once the
// partition's goroutines have stopped and no append of theirs is in flight.
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

// shardFor routes a group to its loaded shard, or returns the error code
// the client should see (NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS).
func (c *Coordinator) shardFor(group string) (*shard, int16) {
	p := c.PartitionFor(group)
	c.mu.RLock()
	s := c.mu.shards[p]
	c.mu.RUnlock()
	if s == nil {
		return nil, kerr.NotCoordinator.Code
	}
	if !s.loaded.Load() {
		return nil, kerr.CoordinatorLoadInProgress.Code
	}
	if !s.log.Leads() {
		return nil, kerr.NotCoordinator.Code
	}
	return s, 0
}

// groupCount is the number of groups the loaded shards hold.
func (c *Coordinator) groupCount() int64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	var n int64
	for _, s := range c.mu.shards {
		n += s.numGroups.Load()
	}
	return n
}

// allShards returns the loaded shards whose partitions this broker can
// prove it leads (Log.Leads), in partition order, and whether any
// partition is still loading.
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

// onGroupShard runs fn on the shard coordinating group and waits for its
// reply, as await does. The code is non-zero, and fn does not run, when the
// group id is empty (INVALID_GROUP_ID) or the group is not coordinated here.
func onGroupShard[T any](ctx context.Context, c *Coordinator, group string, fn func(s *shard, reply func(T))) (T, int16) {
	return submitToGroupShard(ctx, c, group, fn)()
}

// submitToGroupShard is onGroupShard that returns once fn is queued, with
// a function that waits for the reply (see submit).
func submitToGroupShard[T any](ctx context.Context, c *Coordinator, group string, fn func(s *shard, reply func(T))) func() (T, int16) {
	code := codeInvalidGroupID
	var s *shard
	if group != "" {
		s, code = c.shardFor(group)
	}
	if code != 0 {
		var zero T
		return func() (T, int16) { return zero, code }
	}
	return submit(ctx, s, func(reply func(T)) { fn(s, reply) })
}

// await runs fn on the shard's goroutine and waits for its reply (which fn
// may give later, after a join round or an append). The code is non-zero
// when no reply came: the shard stopped (NOT_COORDINATOR) or ctx ended.
func await[T any](ctx context.Context, s *shard, fn func(reply func(T))) (T, int16) {
	return submit(ctx, s, fn)()
}

// submit queues fn for the shard's goroutine and returns at once with a
// function that waits for fn's reply, as await does. Operations submitted
// one after another from one goroutine run in that order.
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
		return func() (T, int16) { return zero, kerr.NotCoordinator.Code }
	case <-ctx.Done():
		return func() (T, int16) { return zero, kerr.CoordinatorNotAvailable.Code }
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
			return zero, kerr.NotCoordinator.Code
		}
		return zero, kerr.CoordinatorNotAvailable.Code
	}
}
