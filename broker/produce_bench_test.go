package broker_test

import (
	"bufio"
	"encoding/binary"
	"io"
	"net"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker"
	"github.com/shale-log/shale/broker/brokertest"
	"github.com/shale-log/shale/localseg/recordbatch"
)

// produceFrame is a pre-encoded acks=1 Produce request of one 32 KiB batch
// of 100-byte records.
func produceFrame(b testing.TB, topic string) []byte { return produceFrameAcks(b, topic, 1) }

// produceFrameAcks is produceFrame with the given acks.
func produceFrameAcks(b testing.TB, topic string, acks int16) []byte {
	recs := make([]recordbatch.Record, 300)
	for i := range recs {
		recs[i].Value = make([]byte, 100)
	}
	batch, err := recordbatch.Build(nil, recordbatch.BuildOptions{ProducerID: -1, ProducerEpoch: -1, BaseSequence: -1, BaseTimestamp: time.Now().UnixMilli()}, recs)
	if err != nil {
		b.Fatal(err)
	}
	req := kmsg.NewPtrProduceRequest()
	req.Version, req.Acks, req.TimeoutMillis = 9, acks, 10000
	req.Topics = []kmsg.ProduceRequestTopic{{Topic: topic, Partitions: []kmsg.ProduceRequestTopicPartition{{Partition: 0, Records: batch}}}}
	var f kmsg.RequestFormatter
	return f.AppendRequest(nil, req, 1)
}

// pipeline sends n copies of frame on c with up to 8 in flight and reads
// the responses.
func pipeline(b testing.TB, c net.Conn, frame []byte, n int) {
	done := make(chan error, 1)
	go func() {
		br := bufio.NewReader(c)
		var size [4]byte
		buf := make([]byte, 64<<10)
		for i := 0; i < n; i++ {
			if _, err := io.ReadFull(br, size[:]); err != nil {
				done <- err
				return
			}
			if _, err := io.ReadFull(br, buf[:binary.BigEndian.Uint32(size[:])]); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	for i := 0; i < n; i++ {
		if _, err := c.Write(frame); err != nil {
			b.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}

// cpuTime is the CPU time the process has used. On a shared machine wall
// time measures the neighbours; CPU time per MB measures the code.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// pipelineCPU is pipeline, reporting the process's CPU time per MB of
// frames sent (cpu-ms/MB): the broker's and the client's together, so the
// loopback ceiling's figure is the client's share and a trivial server's.
func pipelineCPU(b *testing.B, c net.Conn, frame []byte) {
	start := cpuTime()
	pipeline(b, c, frame, b.N)
	if mb := float64(len(frame)) * float64(b.N) / 1e6; mb > 0 {
		b.ReportMetric(float64((cpuTime()-start).Microseconds())/1e3/mb, "cpu-ms/MB")
	}
}

// BenchmarkProduceConnection measures acks=1 Produce requests on one
// connection (allocations per request are the broker's: the client side is
// pre-encoded), beside the same bytes through a loopback server that only
// reads frames and answers each with a fixed response: the ceiling of
// this connection on this machine. acks=all: the same requests answered
// once fsynced (the broker alone in sync), through the group commit.
func BenchmarkProduceConnection(b *testing.B) {
	b.Run("ceiling=loopback", func(b *testing.B) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		defer ln.Close()
		go func() {
			s, err := ln.Accept()
			if err != nil {
				return
			}
			defer s.Close()
			br := bufio.NewReader(s)
			var size [4]byte
			buf := make([]byte, 1<<20)
			resp := make([]byte, 60)
			binary.BigEndian.PutUint32(resp, 56)
			for {
				if _, err := io.ReadFull(br, size[:]); err != nil {
					return
				}
				if _, err := io.ReadFull(br, buf[:binary.BigEndian.Uint32(size[:])]); err != nil {
					return
				}
				s.Write(resp)
			}
		}()
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		frame := produceFrame(b, "bench")
		b.SetBytes(int64(len(frame)))
		b.ReportAllocs()
		b.ResetTimer()
		pipelineCPU(b, c, frame)
	})
	b.Run("shale", func(b *testing.B) {
		c := benchTopicConn(b)
		frame := produceFrame(b, "bench")
		pipeline(b, c, frame, 100) // warm up
		b.SetBytes(int64(len(frame)))
		b.ReportAllocs()
		b.ResetTimer()
		pipelineCPU(b, c, frame)
	})
	b.Run("shale/acks=all", func(b *testing.B) {
		c := benchTopicConn(b)
		frame := produceFrameAcks(b, "bench", -1)
		pipeline(b, c, frame, 100) // warm up
		b.SetBytes(int64(len(frame)))
		b.ReportAllocs()
		b.ResetTimer()
		pipelineCPU(b, c, frame)
	})
}

// benchTopicConn starts a broker with unpoisoned buffers (as in
// production), creates its topic "bench" of one partition, and returns a
// connection to it, closed when b ends.
func benchTopicConn(b testing.TB) net.Conn {
	broker.SetPoisonBuffers(false)
	b.Cleanup(func() { broker.SetPoisonBuffers(true) })
	br := brokertest.Start(b)
	if _, err := br.Admin().CreateTopic(b.Context(), 1, 1, nil, "bench"); err != nil {
		b.Fatal(err)
	}
	c, err := net.Dial("tcp", br.Addr)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return c
}

// Pipelined produce requests of one partition each, acks=1 and acks=all
// (the broker alone in sync: answered by the group commit), allocate
// nothing per request in the broker: the call a request is decoded into
// comes back to its connection once its answer is written and no wait
// refers to it, its place in the response order is in the call, its
// append's write ticket is one the log reuses, and its durability wait is
// a slot of the call. What is left is per group of requests (the log's
// vectored write) or per sync. Allocations are counted for the whole
// process, less those of as long a time idle right after (the embedded
// etcd's, a few hundred a second). Before, 3 or more per request for
// acks=1 and 4 or more for acks=all.
func TestPipelinedProduceAllocatesLittlePerRequest(t *testing.T) {
	c := benchTopicConn(t)
	mallocs := func() uint64 {
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.Mallocs
	}
	for _, acks := range []int16{1, -1} {
		frame := produceFrameAcks(t, "bench", acks)
		pipeline(t, c, frame, 200) // the connection's calls and the log's tickets
		const n = 2000
		start, before := time.Now(), mallocs()
		pipeline(t, c, frame, n)
		took, run := time.Since(start), mallocs()-before
		before = mallocs()
		time.Sleep(took)
		idle := mallocs() - before
		per := (float64(run) - float64(idle)) / n
		t.Logf("acks=%d: %.2f allocations per request (%d in %s, %d idle as long)", acks, per, run, took, idle)
		if per > 1 && !raceEnabled {
			t.Errorf("acks=%d: %.2f allocations per request", acks, per)
		}
	}
}
