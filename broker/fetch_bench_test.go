package broker_test

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
	"golang.org/x/sys/unix"
)

// segsIn is how many TCP segments the socket has received.
func segsIn(b *testing.B, c net.Conn) uint32 {
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		b.Fatal(err)
	}
	var info *unix.TCPInfo
	rc.Control(func(fd uintptr) { info, err = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) })
	if err != nil {
		b.Fatal(err)
	}
	return info.Segs_in
}

// threadSwitches is how many times the threads of this process were
// switched out (voluntarily or not), from /proc/self/task/*/status.
func threadSwitches(b *testing.B) int64 {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		b.Fatal(err)
	}
	var n int64
	for _, t := range tasks {
		st, err := os.ReadFile("/proc/self/task/" + t.Name() + "/status")
		if err != nil {
			continue // the thread exited
		}
		for _, line := range strings.Split(string(st), "\n") {
			if v, ok := strings.CutPrefix(line, "voluntary_ctxt_switches:"); ok {
				k, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
				n += k
			} else if v, ok := strings.CutPrefix(line, "nonvoluntary_ctxt_switches:"); ok {
				k, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
				n += k
			}
		}
	}
	return n
}

// BenchmarkFetchConnection measures hot fetches of one partition on one
// connection, one at a time, answered with sendfile: bytes per second, the
// TCP segments the client received per fetch (packets/op; on loopback a
// segment carries up to 64 KiB, so a 1 MiB answer needs 16 or 17) and the
// thread switches of the process, broker and client, per fetch
// (switches/op; a thread that waits in a system call long enough loses its
// P to another thread, and takes one back after).
func BenchmarkFetchConnection(b *testing.B) {
	for _, size := range []int{16 << 10, 1 << 20} {
		b.Run(fmt.Sprintf("bytes=%d", size), func(b *testing.B) {
			c := benchTopicConn(b)
			pipeline(b, c, produceFrame(b, "bench"), 256) // 8 MiB of 32 KiB batches
			req := kmsg.NewPtrFetchRequest()
			req.Version, req.ReplicaID, req.MaxBytes = 12, -1, int32(size)
			req.Topics = []kmsg.FetchRequestTopic{{Topic: "bench", Partitions: []kmsg.FetchRequestTopicPartition{{Partition: 0, PartitionMaxBytes: int32(size), CurrentLeaderEpoch: -1, LastFetchedEpoch: -1, LogStartOffset: -1}}}}
			var f kmsg.RequestFormatter
			r := bufio.NewReaderSize(c, 64<<10)
			body := make([]byte, 2<<20)
			fetch := func() int {
				if _, err := c.Write(f.AppendRequest(nil, req, 1)); err != nil {
					b.Fatal(err)
				}
				var hdr [4]byte
				if _, err := io.ReadFull(r, hdr[:]); err != nil {
					b.Fatal(err)
				}
				n := int(binary.BigEndian.Uint32(hdr[:]))
				if _, err := io.ReadFull(r, body[:n]); err != nil {
					b.Fatal(err)
				}
				return n
			}
			n := fetch() // warm up
			before, switches := segsIn(b, c), threadSwitches(b)
			b.SetBytes(int64(n))
			b.ResetTimer()
			for range b.N {
				fetch()
			}
			b.StopTimer()
			b.ReportMetric(float64(segsIn(b, c)-before)/float64(b.N), "packets/op")
			b.ReportMetric(float64(threadSwitches(b)-switches)/float64(b.N), "switches/op")
		})
	}
}
