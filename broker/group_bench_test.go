package broker_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker"
)

// BenchmarkGroupOffsetCommit: 100 franz-go members of one group commit
// their partition's offset as fast as they can through a real broker
// (loopback TCP, request decoding, the coordinator, group-committed
// appends to __consumer_offsets), and it reports commits/s.
//
//   - sync: each member commits with CommitOffsetsSync, one at a time, as
//     a consumer does; client and broker share this machine's cores, so
//     this is mostly a measure of round trips.
//   - pipelined: each member, with its member id and generation from its
//     join, writes OffsetCommit requests on its own connection in windows
//     of 16 (the protocol allows pipelining; the broker answers in order):
//     closer to the broker's capacity.
func BenchmarkGroupOffsetCommit(b *testing.B) {
	const members = 100
	br := groupBroker(b, nil, func(c *broker.Config) { c.GroupInitialRebalanceDelay = time.Second })
	admCl, err := kgo.NewClient(kgo.SeedBrokers(br.Addr))
	if err != nil {
		b.Fatal(err)
	}
	defer admCl.Close()
	topic := "commit-bench"
	if _, err := kadm.NewClient(admCl).CreateTopic(context.Background(), members, 1, nil, topic); err != nil {
		b.Fatal(err)
	}
	var clients []*kgo.Client
	var assigned atomic.Int64
	for i := 0; i < members; i++ {
		cl, err := kgo.NewClient(
			kgo.SeedBrokers(br.Addr),
			kgo.ConsumerGroup("bench"),
			kgo.ConsumeTopics(topic),
			kgo.DisableAutoCommit(),
			kgo.SessionTimeout(30*time.Second),
			kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, a map[string][]int32) {
				assigned.Add(int64(len(a[topic])))
			}),
		)
		if err != nil {
			b.Fatal(err)
		}
		clients = append(clients, cl)
		go func() {
			for {
				if fs := cl.PollFetches(context.Background()); fs.IsClientClosed() {
					return
				}
			}
		}()
	}
	defer func() {
		for _, cl := range clients {
			cl.Close()
		}
	}()
	deadline := time.Now().Add(2 * time.Minute)
	for assigned.Load() < members {
		if time.Now().After(deadline) {
			b.Fatalf("only %d partitions assigned", assigned.Load())
		}
		time.Sleep(50 * time.Millisecond)
	}
	// run calls commit(member, n) for b.N commits shared by the members.
	run := func(b *testing.B, name string, perCall int, commit func(i int, n int64) error) {
		var next atomic.Int64
		var failed atomic.Int64
		var firstErr atomic.Value
		var wg sync.WaitGroup
		b.ResetTimer()
		start := time.Now()
		for i := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for n := next.Add(int64(perCall)); n-int64(perCall) < int64(b.N); n = next.Add(int64(perCall)) {
					if err := commit(i, n); err != nil {
						failed.Add(1)
						firstErr.CompareAndSwap(nil, err)
					}
				}
			}()
		}
		wg.Wait()
		elapsed := time.Since(start)
		b.StopTimer()
		if f := failed.Load(); f > 0 {
			b.Fatalf("%d commits failed: %v", f, firstErr.Load())
		}
		done := next.Load()
		if done > int64(b.N) {
			done = int64(b.N) + int64(perCall)*int64(members) // every member's last window ran whole
			done = min(done, next.Load())
		}
		rate := float64(done) / elapsed.Seconds()
		b.ReportMetric(rate, "commits/s")
		fmt.Printf("group offset commits (%s): %d members, %.0f commits/s (%d commits in %v)\n", name, members, rate, done, elapsed.Round(time.Millisecond))
	}
	b.Run("sync", func(b *testing.B) {
		run(b, "franz-go sync", 1, func(i int, n int64) error {
			var cerr error
			clients[i].CommitOffsetsSync(context.Background(), map[string]map[int32]kgo.EpochOffset{
				topic: {int32(i): {Epoch: -1, Offset: n}},
			}, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
				cerr = err
				if err == nil {
					cerr = commitError(resp)
				}
			})
			return cerr
		})
	})
	b.Run("pipelined", func(b *testing.B) {
		const window = 16
		conns := make([]*rawConn, members)
		for i, cl := range clients {
			member, gen := cl.GroupMetadata()
			c, err := dialRaw(br.Addr)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			c.member, c.gen = member, gen
			conns[i] = c
		}
		run(b, "pipelined", window, func(i int, n int64) error {
			return conns[i].commitWindow(topic, int32(i), n, window)
		})
	})
}

func commitError(resp *kmsg.OffsetCommitResponse) error {
	for _, t := range resp.Topics {
		for _, p := range t.Partitions {
			if p.ErrorCode != 0 {
				return fmt.Errorf("partition %d: code %d", p.Partition, p.ErrorCode)
			}
		}
	}
	return nil
}

// rawConn speaks the Kafka protocol directly, to pipeline requests.
type rawConn struct {
	net.Conn
	r      *bufio.Reader
	f      *kmsg.RequestFormatter
	buf    []byte
	one    []byte
	corr   int32
	member string
	gen    int32
}

func dialRaw(addr string) (*rawConn, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	return &rawConn{Conn: c, r: bufio.NewReaderSize(c, 64<<10), f: kmsg.NewRequestFormatter(kmsg.FormatterClientID("bench"))}, nil
}

// commitWindow writes window OffsetCommit v9 requests at once, then reads
// their responses.
func (c *rawConn) commitWindow(topic string, partition int32, first int64, window int) error {
	c.buf = c.buf[:0]
	for k := 0; k < window; k++ {
		req := kmsg.NewPtrOffsetCommitRequest()
		req.Version = 9
		req.Group, req.MemberID, req.Generation = "bench", c.member, c.gen
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
		resp := kmsg.OffsetCommitResponse{Version: 9}
		// Header v1: correlation id, then an empty tagged-field section.
		if err := resp.ReadFrom(body[5:]); err != nil {
			return err
		}
		if err := commitError(&resp); err != nil {
			return err
		}
	}
	return nil
}
