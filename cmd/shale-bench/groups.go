package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// commitThroughput has members franz-go group members, one partition each,
// commit their offset as fast as they can for o.duration, and counts the
// commits the coordinator acknowledged: first with CommitOffsetsSync (one
// commit in flight per member, as a consumer commits), then pipelined, 16
// OffsetCommit requests in flight per member on a connection of its own.
func commitThroughput(addr string, o options, members int) (commitRates, error) {
	topic := fmt.Sprintf("commit-bench-%d", time.Now().UnixNano())
	if err := createTopicNamed(addr, topic, members); err != nil {
		return commitRates{}, err
	}
	owned := make([]atomic.Int32, members) // the partition each member commits for, +1; 0: none
	clients := make([]*kgo.Client, 0, members)
	defer func() {
		for _, cl := range clients {
			cl.Close()
		}
	}()
	for i := 0; i < members; i++ {
		cl, err := kgo.NewClient(
			kgo.SeedBrokers(addr),
			kgo.ConsumerGroup(topic),
			kgo.ConsumeTopics(topic),
			kgo.Balancers(kgo.RangeBalancer()),
			kgo.DisableAutoCommit(),
			kgo.SessionTimeout(30*time.Second),
			kgo.RebalanceTimeout(60*time.Second),
			kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, a map[string][]int32) {
				for _, p := range a[topic] {
					owned[i].Store(p + 1)
				}
			}),
			// Eager rebalances revoke everything first: a member
			// owns nothing until the group settles again.
			kgo.OnPartitionsRevoked(func(context.Context, *kgo.Client, map[string][]int32) { owned[i].Store(0) }),
			kgo.OnPartitionsLost(func(context.Context, *kgo.Client, map[string][]int32) { owned[i].Store(0) }),
		)
		if err != nil {
			return commitRates{}, err
		}
		clients = append(clients, cl)
		go func() {
			for !cl.PollFetches(context.Background()).IsClientClosed() {
			}
		}()
	}
	// The group has settled when every member owns a partition in the
	// same generation: counting assignments instead would start while
	// members that joined late still force new generations, and commits
	// would fail with ILLEGAL_GENERATION.
	settled := func() (int, bool) {
		n, gen0 := 0, int32(-1)
		same := true
		for i, cl := range clients {
			if owned[i].Load() == 0 {
				continue
			}
			n++
			_, gen := cl.GroupMetadata()
			if gen0 == -1 {
				gen0 = gen
			}
			same = same && gen == gen0
		}
		return n, n == members && same
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		n, ok := settled()
		if ok {
			break
		}
		if time.Now().After(deadline) {
			return commitRates{}, fmt.Errorf("only %d of %d members own a partition of one generation after 2m", n, members)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// measure runs commit(member, partition, n) on every member that owns
	// a partition until the run's time is up; commit returns how many
	// commits it made.
	measure := func(commit func(i int, p int32, n int64) (int, error)) (throughput, error) {
		var acked, failed atomic.Int64
		var firstErr atomic.Value
		var wg sync.WaitGroup
		start := time.Now()
		stopAt := start.Add(o.duration)
		for i := range clients {
			p := owned[i].Load() - 1
			if p < 0 {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				for n := int64(1); time.Now().Before(stopAt); {
					k, err := commit(i, p, n)
					if err != nil {
						failed.Add(1)
						firstErr.CompareAndSwap(nil, err)
						return
					}
					acked.Add(int64(k))
					n += int64(k)
				}
			}()
		}
		wg.Wait()
		if f := failed.Load(); f > 0 {
			return throughput{}, fmt.Errorf("%d members' commits failed, first: %v", f, firstErr.Load())
		}
		return throughput{records: acked.Load(), elapsed: time.Since(start)}, nil
	}
	syncRate, err := measure(func(i int, p int32, n int64) (int, error) {
		var cerr error
		clients[i].CommitOffsetsSync(context.Background(), map[string]map[int32]kgo.EpochOffset{
			topic: {p: {Epoch: -1, Offset: n}},
		}, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
			cerr = err
			if err == nil {
				cerr = commitResponseErr(resp)
			}
		})
		return 1, cerr
	})
	if err != nil {
		return commitRates{}, err
	}
	conns := make([]*commitConn, len(clients))
	for i, cl := range clients {
		member, gen := cl.GroupMetadata()
		c, err := dialCommitConn(addr, topic, member, gen)
		if err != nil {
			return commitRates{}, err
		}
		defer c.Close()
		conns[i] = c
	}
	const window = 16
	pipelined, err := measure(func(i int, p int32, n int64) (int, error) {
		return window, conns[i].commitWindow(topic, p, n, window)
	})
	return commitRates{sync: syncRate, pipelined: pipelined}, err
}

type commitRates struct{ sync, pipelined throughput }

// commitConn speaks the Kafka protocol directly, to pipeline OffsetCommit
// requests on one connection as a member (its id and generation taken
// from a joined franz-go client).
type commitConn struct {
	net.Conn
	r          *bufio.Reader
	f          *kmsg.RequestFormatter
	buf, one   []byte
	corr       int32
	group      string
	member     string
	generation int32
}

func dialCommitConn(addr, group, member string, generation int32) (*commitConn, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	return &commitConn{Conn: c, r: bufio.NewReaderSize(c, 64<<10), f: kmsg.NewRequestFormatter(kmsg.FormatterClientID("shale-bench")),
		group: group, member: member, generation: generation}, nil
}

// commitWindow writes window OffsetCommit v9 requests at once, committing
// offsets first, first+1, ..., then reads their responses.
func (c *commitConn) commitWindow(topic string, partition int32, first int64, window int) error {
	c.buf = c.buf[:0]
	for k := 0; k < window; k++ {
		req := kmsg.NewPtrOffsetCommitRequest()
		req.Version = 9
		req.Group, req.MemberID, req.Generation = c.group, c.member, c.generation
		req.Topics = []kmsg.OffsetCommitRequestTopic{{Topic: topic, Partitions: []kmsg.OffsetCommitRequestTopicPartition{{Partition: partition, Offset: first + int64(k), LeaderEpoch: -1}}}}
		c.corr++
		// AppendRequest writes the frame's size at the start of what it
		// is given, so each request is formatted on its own.
		c.one = c.f.AppendRequest(c.one[:0], req, c.corr)
		c.buf = append(c.buf, c.one...)
	}
	if _, err := c.Write(c.buf); err != nil {
		return err
	}
	var size [4]byte
	for k := 0; k < window; k++ {
		if _, err := io.ReadFull(c.r, size[:]); err != nil {
			return err
		}
		body := make([]byte, binary.BigEndian.Uint32(size[:]))
		if _, err := io.ReadFull(c.r, body); err != nil {
			return err
		}
		if len(body) < 5 {
			return errors.New("short OffsetCommit response")
		}
		resp := kmsg.OffsetCommitResponse{Version: 9}
		// Header v1: correlation id, then an empty tagged-field section.
		if err := resp.ReadFrom(body[5:]); err != nil {
			return err
		}
		if err := commitResponseErr(&resp); err != nil {
			return err
		}
	}
	return nil
}

func commitResponseErr(resp *kmsg.OffsetCommitResponse) error {
	for _, t := range resp.Topics {
		for _, p := range t.Partitions {
			if p.ErrorCode != 0 {
				return fmt.Errorf("%s/%d: error code %d", t.Topic, p.Partition, p.ErrorCode)
			}
		}
	}
	return nil
}

// rebalanceAfterCrash starts three members of a new group on a 6-partition
// topic, cuts one member's connections without a LeaveGroup (a crash as the
// coordinator sees it), and measures the time until the survivors own
// every partition: session timeout plus the rebalance itself.
func rebalanceAfterCrash(addr string, balancer kgo.GroupBalancer, session time.Duration) (time.Duration, error) {
	topic := fmt.Sprintf("rebalance-bench-%d", time.Now().UnixNano())
	if err := createTopicNamed(addr, topic, 6); err != nil {
		return 0, err
	}
	type member struct {
		cl    *kgo.Client
		cut   *cutDialer
		mu    sync.Mutex
		owned map[int32]bool
	}
	members := make([]*member, 3)
	for i := range members {
		m := &member{cut: &cutDialer{}, owned: map[int32]bool{}}
		change := func(ps map[string][]int32, add bool) {
			m.mu.Lock()
			defer m.mu.Unlock()
			for _, p := range ps[topic] {
				if add {
					m.owned[p] = true
				} else {
					delete(m.owned, p)
				}
			}
		}
		cl, err := kgo.NewClient(
			kgo.SeedBrokers(addr),
			kgo.Dialer(m.cut.dial),
			kgo.ConsumerGroup(topic),
			kgo.ConsumeTopics(topic),
			kgo.Balancers(balancer),
			kgo.SessionTimeout(session),
			kgo.HeartbeatInterval(session/10),
			kgo.RebalanceTimeout(10*time.Second),
			kgo.RetryBackoffFn(func(int) time.Duration { return 50 * time.Millisecond }),
			kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, a map[string][]int32) { change(a, true) }),
			kgo.OnPartitionsRevoked(func(_ context.Context, _ *kgo.Client, r map[string][]int32) { change(r, false) }),
			kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, l map[string][]int32) { change(l, false) }),
		)
		if err != nil {
			return 0, err
		}
		m.cl = cl
		defer cl.Close()
		go func() {
			for !cl.PollFetches(context.Background()).IsClientClosed() {
			}
		}()
		members[i] = m
	}
	owns := func(ms ...*member) (n int, each bool) {
		each = true
		for _, m := range ms {
			m.mu.Lock()
			n += len(m.owned)
			each = each && len(m.owned) > 0
			m.mu.Unlock()
		}
		return n, each
	}
	wait := func(what string, cond func() bool) error {
		deadline := time.Now().Add(time.Minute)
		for !cond() {
			if time.Now().After(deadline) {
				return errors.New("timed out waiting for " + what)
			}
			time.Sleep(5 * time.Millisecond)
		}
		return nil
	}
	if err := wait("three members to share the partitions", func() bool {
		n, each := owns(members...)
		return n == 6 && each
	}); err != nil {
		return 0, err
	}
	time.Sleep(session) // a steady group, heartbeating
	crashed := time.Now()
	members[2].cut.cut()
	err := wait("the survivors to own every partition", func() bool {
		n, _ := owns(members[0], members[1])
		return n == 6
	})
	return time.Since(crashed), err
}

// cutDialer dials normally until cut, then closes every connection it
// made and refuses new ones.
type cutDialer struct {
	mu    sync.Mutex
	cutOf bool
	conns []net.Conn
}

func (d *cutDialer) dial(ctx context.Context, network, host string) (net.Conn, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cutOf {
		return nil, errors.New("cut")
	}
	c, err := (&net.Dialer{}).DialContext(ctx, network, host)
	if err == nil {
		d.conns = append(d.conns, c)
	}
	return c, err
}

func (d *cutDialer) cut() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.cutOf = true
	for _, c := range d.conns {
		c.Close()
	}
}

func createTopicNamed(addr, name string, partitions int) error {
	return createTopicWith(addr, name, partitions, nil)
}

// createTopicWith creates a topic of one replica with the given configs.
func createTopicWith(addr, name string, partitions int, configs map[string]*string) error {
	return withAdmin(addr, func(ctx context.Context, adm *kadm.Client) error {
		resp, err := adm.CreateTopic(ctx, int32(partitions), 1, configs, name)
		if err == nil {
			err = resp.Err
		}
		return err
	})
}

// withAdmin runs fn with an admin client of the cluster at addr and 30 s
// to do its work.
func withAdmin(addr string, fn func(ctx context.Context, adm *kadm.Client) error) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return fn(ctx, kadm.NewClient(cl))
}
