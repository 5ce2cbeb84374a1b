package tiering

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"sync"
	"testing"

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

func benchRemoteRead(b *testing.B, bucket objectstore.Bucket) {
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
	m := ms.Current()
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
			pieces = append(pieces, piece{a.cfg.Layout.SegmentKey(testPartition, s.BaseOffset, s.ID), off, min(chunk, s.Size-off)})
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
			r, err := NewReader(ReaderConfig{Bucket: bucket, Layout: a.cfg.Layout, ChunkBytes: chunk, CacheBytes: 256 << 20})
			if err != nil {
				b.Fatal(err)
			}
			replay(b, r)
			r.Close()
		}
	})
	b.Run("warm", func(b *testing.B) {
		r, err := NewReader(ReaderConfig{Bucket: bucket, Layout: a.cfg.Layout, ChunkBytes: chunk, CacheBytes: 256 << 20})
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
