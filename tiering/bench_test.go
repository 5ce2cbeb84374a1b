package tiering

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"net"
	"runtime/metrics"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/shale-log/shale/localseg"
	"github.com/shale-log/shale/objectstore"
	"github.com/shale-log/shale/objectstore/faulty"
	"github.com/shale-log/shale/objectstore/miniotest"
)

// BenchmarkRemoteRead replays a partition that lives only in the object
// store (the filesystem backend, and a real MinIO) through the Reader, cold (a new cache
// each round) and warm, beside the ceiling: raw ranged GETs of the same
// bytes in chunk-sized pieces, one at a time and four in flight.
func BenchmarkRemoteRead(b *testing.B) {
	b.Run("fs", func(b *testing.B) {
		bucket, err := objectstore.NewFS(b.TempDir())
		if err != nil {
			b.Fatal(err)
		}
		benchRemoteRead(b, bucket)
	})
	b.Run("minio", func(b *testing.B) {
		benchRemoteRead(b, miniotest.Start(b).NewS3(b, nil))
	})
}

// uploadBenchLog uploads 64 MiB in 16 KiB batches, 8 MiB segments.
func uploadBenchLog(b *testing.B, bucket objectstore.Bucket) (*Manifest, Layout) {
	log, err := localseg.Open(b.TempDir(), localseg.Config{SegmentBytes: 8 << 20, RetentionMs: -1}, localseg.Options{Logger: quietLogger()})
	if err != nil {
		b.Fatal(err)
	}
	defer log.Close()
	for i := range 4096 { // 64 MiB in 16 KiB batches, 8 MiB segments
		if _, err := log.AppendAsLeader(testBatch(b, 4, 4<<10, int64(i)), 0); err != nil {
			b.Fatal(err)
		}
	}
	log.Roll()
	a, ms := newTestArchiver(b, bucket, log)
	uploadAll(b, a, 0, log.LogEndOffset())
	return ms.Current(), a.cfg.Layout
}

func benchRemoteRead(b *testing.B, bucket objectstore.Bucket) {
	m, layout := uploadBenchLog(b, bucket)
	const chunk = 4 << 20
	replay := func(b *testing.B, r *Reader) {
		for off := m.Start(); off < m.End(); {
			parts, err := r.Read(context.Background(), testPartition, m, off, 1<<20, math.MaxInt64, true)
			if err != nil || parts == nil {
				b.Fatalf("at %d: %v", off, err)
			}
			off = lastWholeBatchEnd(parts, off)
		}
	}
	type piece struct {
		key      string
		off, len int64
	}
	var pieces []piece
	for _, s := range m.Segments {
		for off := int64(0); off < s.Size; off += chunk {
			pieces = append(pieces, piece{layout.SegmentKey(testPartition, s.BaseOffset, s.ID), off, min(chunk, s.Size-off)})
		}
	}
	rawGet := func(b *testing.B, p piece) {
		body, err := bucket.Get(context.Background(), p.key, p.off, p.len)
		if err != nil {
			b.Fatal(err)
		}
		buf := make([]byte, p.len)
		if _, err := io.ReadFull(body, buf); err != nil {
			b.Fatal(err)
		}
		body.Close()
	}
	b.Run("ceiling-get-sequential", func(b *testing.B) {
		b.SetBytes(m.Bytes())
		for b.Loop() {
			for _, p := range pieces {
				rawGet(b, p)
			}
		}
	})
	b.Run("ceiling-get-parallel4", func(b *testing.B) {
		b.SetBytes(m.Bytes())
		for b.Loop() {
			ch := make(chan piece)
			var wg sync.WaitGroup
			for range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for p := range ch {
						rawGet(b, p)
					}
				}()
			}
			for _, p := range pieces {
				ch <- p
			}
			close(ch)
			wg.Wait()
		}
	})
	b.Run("cold", func(b *testing.B) {
		b.SetBytes(m.Bytes())
		for b.Loop() {
			r, err := NewReader(ReaderConfig{Bucket: bucket, Layout: layout, ChunkBytes: chunk, CacheBytes: 256 << 20})
			if err != nil {
				b.Fatal(err)
			}
			replay(b, r)
			r.Close()
		}
	})
	b.Run("warm", func(b *testing.B) {
		r, err := NewReader(ReaderConfig{Bucket: bucket, Layout: layout, ChunkBytes: chunk, CacheBytes: 256 << 20})
		if err != nil {
			b.Fatal(err)
		}
		defer r.Close()
		replay(b, r)
		r.Wait()
		b.SetBytes(m.Bytes())
		b.ResetTimer()
		for b.Loop() {
			replay(b, r)
		}
	})
}

// lastWholeBatchEnd is the offset after the last whole batch in parts,
// read from the batch headers in place (a consumer's cost is not what is
// measured).
func lastWholeBatchEnd(parts [][]byte, off int64) int64 {
	var total int64
	for _, p := range parts {
		total += int64(len(p))
	}
	// at reads n bytes at pos of the parts as one buffer.
	at := func(pos int64, dst []byte) {
		for _, p := range parts {
			if pos >= int64(len(p)) {
				pos -= int64(len(p))
				continue
			}
			c := copy(dst, p[pos:])
			dst, pos = dst[c:], 0
			if len(dst) == 0 {
				return
			}
		}
	}
	var hdr [27]byte
	for pos := int64(0); pos+27 <= total; {
		at(pos, hdr[:])
		length := int64(binary.BigEndian.Uint32(hdr[8:]))
		if pos+length+12 > total {
			break
		}
		off = int64(binary.BigEndian.Uint64(hdr[0:])) + int64(int32(binary.BigEndian.Uint32(hdr[23:]))) + 1
		pos += length + 12
	}
	return off
}

// BenchmarkUpload uploads 32 MiB of sealed 8 MiB segments with their
// companions and manifest commits to the filesystem store, beside the
// ceiling: raw Puts of the same segment bytes. It reports the PUTs per
// segment.
func BenchmarkUpload(b *testing.B) {
	log, err := localseg.Open(b.TempDir(), localseg.Config{SegmentBytes: 8 << 20, RetentionMs: -1}, localseg.Options{Logger: quietLogger()})
	if err != nil {
		b.Fatal(err)
	}
	defer log.Close()
	for i := range 2048 {
		if _, err := log.AppendAsLeader(testBatch(b, 4, 4<<10, int64(i)), 0); err != nil {
			b.Fatal(err)
		}
	}
	log.Roll()
	segs := log.Segments()
	segs = segs[:len(segs)-1]
	var total int64
	for _, s := range segs {
		total += s.Size
	}
	fsb, err := objectstore.NewFS(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	bucket := faulty.New(fsb)
	l := Layout{Prefix: "bench"}
	b.Run("ceiling-put", func(b *testing.B) {
		b.SetBytes(total)
		n := 0
		for b.Loop() {
			for _, s := range segs {
				ss, err := log.OpenSealed(s.BaseOffset)
				if err != nil {
					b.Fatal(err)
				}
				n++
				key := fmt.Sprintf("raw/%d/%d", n, s.BaseOffset)
				if _, err := bucket.Put(context.Background(), key, io.NewSectionReader(ss, 0, ss.Size), ss.Size, objectstore.PutOptions{}); err != nil {
					b.Fatal(err)
				}
				ss.Close()
			}
		}
	})
	b.Run("archiver", func(b *testing.B) {
		b.SetBytes(total)
		puts, uploaded := bucket.Calls(faulty.Put), 0
		i := int32(0)
		for b.Loop() {
			i++
			p := Partition{Topic: "bench", TopicID: [16]byte{1}, Index: i}
			ms := NewManifestStore(bucket, l.ManifestKey(p), nil)
			a := NewArchiver(ArchiverConfig{Bucket: bucket, Layout: l, Partition: p, Manifest: ms, Source: log, Logger: quietLogger()})
			for {
				k, err := a.UploadNext(context.Background(), 0, log.LogEndOffset())
				if err != nil {
					b.Fatal(err)
				}
				if k == 0 {
					break
				}
				uploaded += k
			}
		}
		b.ReportMetric(float64(bucket.Calls(faulty.Put)-puts)/float64(uploaded), "puts/segment")
	})
}

// BenchmarkHotTrafficBesideAColdReplay measures what a cold replay
// through the Reader (from a real MinIO, a new cache each pass, fetches of
// 16 MiB, read-ahead at its defaults) costs hot traffic in the same
// process: requests of 16 KiB, one every 2 ms at most, over a loopback
// connection to an echo of 8 bytes, each round trip timed from its send
// (two goroutines woken by the network, as a produce wakes its
// connection's reader and then its client). Beside the round trip it
// prints how long the process's goroutines waited runnable for a
// processor (p99, the upper bound of the runtime's own histogram bucket,
// far finer than the buckets /metrics exports), which tells the wait the
// Go scheduler adds from the wait for the machine's CPUs. The ceiling is
// the same requests alone; the replay's MB/s is printed beside.
func BenchmarkHotTrafficBesideAColdReplay(b *testing.B) {
	bucket := miniotest.Start(b).NewS3(b, nil)
	m, layout := uploadBenchLog(b, bucket)
	run := func(b *testing.B, load func()) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		defer ln.Close()
		go echo(ln)
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		before := schedLatencies()
		stop := make(chan struct{})
		done := make(chan []time.Duration)
		go func() { done <- pingEvery(c, 2*time.Millisecond, stop) }()
		for b.Loop() {
			load()
		}
		close(stop)
		rtts := <-done
		if len(rtts) == 0 {
			b.Fatal("no round trip")
		}
		slices.Sort(rtts)
		b.ReportMetric(float64(rtts[len(rtts)/2])/1e6, "hot-p50-ms")
		b.ReportMetric(float64(rtts[len(rtts)*99/100])/1e6, "hot-p99-ms")
		b.ReportMetric(histogramQuantile(before, schedLatencies(), 0.99)*1e3, "sched-p99-ms")
	}
	b.Run("ceiling-alone", func(b *testing.B) {
		run(b, func() { time.Sleep(time.Second) })
	})
	b.Run("replay", func(b *testing.B) {
		b.SetBytes(m.Bytes())
		run(b, func() {
			r, err := NewReader(ReaderConfig{Bucket: bucket, Layout: layout, ChunkBytes: 4 << 20, CacheBytes: 256 << 20})
			if err != nil {
				b.Fatal(err)
			}
			defer r.Close()
			for off := m.Start(); off < m.End(); {
				d, err := r.ReadShared(context.Background(), testPartition, m, off, 16<<20, math.MaxInt64, true)
				if err != nil || d.Bufs == nil {
					b.Fatalf("at %d: %v", off, err)
				}
				off = lastWholeBatchEnd(d.Bufs, off)
				d.Release()
			}
		})
	})
}

// echo answers each 16 KiB request of each connection ln accepts with
// 8 bytes.
func echo(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			buf := make([]byte, 16<<10)
			for {
				if _, err := io.ReadFull(c, buf); err != nil {
					return
				}
				if _, err := c.Write(buf[:8]); err != nil {
					return
				}
			}
		}()
	}
}

// pingEvery sends a 16 KiB request on c at most every interval and waits
// for its 8-byte answer, until stop is closed or c fails; it returns the
// round trips.
func pingEvery(c net.Conn, interval time.Duration, stop <-chan struct{}) []time.Duration {
	req := make([]byte, 16<<10)
	var rtts []time.Duration
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return rtts
		case <-tick.C:
		}
		sent := time.Now()
		if _, err := c.Write(req); err != nil {
			return rtts
		}
		if _, err := io.ReadFull(c, req[:8]); err != nil {
			return rtts
		}
		rtts = append(rtts, time.Since(sent))
	}
}

// schedLatencies is the runtime's histogram of how long goroutines waited
// runnable for a processor, since the process started.
func schedLatencies() *metrics.Float64Histogram {
	s := []metrics.Sample{{Name: "/sched/latencies:seconds"}}
	metrics.Read(s)
	return s[0].Value.Float64Histogram()
}

// histogramQuantile is the upper bound of the bucket holding quantile q
// of what after counted beyond before (the same histogram, read twice).
func histogramQuantile(before, after *metrics.Float64Histogram, q float64) float64 {
	var total uint64
	for i := range after.Counts {
		total += after.Counts[i] - before.Counts[i]
	}
	var seen uint64
	for i := range after.Counts {
		seen += after.Counts[i] - before.Counts[i]
		if total > 0 && float64(seen) >= q*float64(total) {
			return after.Buckets[i+1]
		}
	}
	return 0
}
