package tiering

import (
	"bytes"
	"context"
	"encoding/binary"
	"math"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/shale-log/shale/localseg"
	"github.com/shale-log/shale/localseg/recordbatch"
	"github.com/shale-log/shale/objectstore"
)

func FuzzDecodeManifest(f *testing.F) {
	f.Add(EncodeManifest(sampleManifest(), false), false)
	f.Add(EncodeManifest(&Manifest{Segments: sampleManifest().Segments}, true), true)
	f.Add([]byte("SHMF"), false)
	spilled := &Manifest{Segments: []Segment{synthSegment(900)}}
	for i := 0; i < 3; i++ {
		sp, _ := newSpill([]Segment{synthSegment(2 * i), synthSegment(2*i + 1)}, 0, 0)
		sp.part = nil
		spilled.Spills = append(spilled.Spills, sp)
	}
	f.Add(EncodeManifest(spilled, false), false)
	f.Fuzz(func(t *testing.T, data []byte, spill bool) {
		m, err := DecodeManifest(data, spill)
		if err != nil {
			return
		}
		again, err := DecodeManifest(EncodeManifest(m, spill), spill)
		if err != nil || len(again.Segments) != len(m.Segments) {
			t.Fatalf("a decoded manifest does not round-trip: %v", err)
		}
	})
}

// FuzzLoadSpill: a spilled part read from the bucket is decoded and held
// against the reference the manifest has for it; whatever is accepted is
// the part the reference names.
func FuzzLoadSpill(f *testing.F) {
	s, err := newSpill([]Segment{synthSegment(0), synthSegment(1), synthSegment(2)}, 1, 2)
	if err != nil {
		f.Fatal(err)
	}
	good := EncodeManifest(s.part, true)
	f.Add(good, s.BaseOffset, s.NextOffset, s.Count, s.Bytes)
	f.Add(good, s.BaseOffset, s.NextOffset, s.Count+1, s.Bytes)
	f.Add(EncodeManifest(&Manifest{Spills: []Spill{{BaseOffset: 0, NextOffset: 30, Count: 3, Bytes: 3000, MaxTimestamp: -1}}, Segments: s.part.Segments}, false), int64(0), int64(30), uint32(3), int64(3000))
	f.Add([]byte("SHMS"), int64(0), int64(1), uint32(1), int64(1))
	f.Fuzz(func(t *testing.T, data []byte, base, next int64, count uint32, size int64) {
		b := objectstore.NewMem()
		l := Layout{Prefix: "p"}
		ref := Spill{BaseOffset: base, NextOffset: next, Count: count, Bytes: size, ID: s.ID}
		key := l.SpillKey(testPartition, base, s.ID)
		if _, err := b.Put(context.Background(), key, bytes.NewReader(data), int64(len(data)), objectstore.PutOptions{}); err != nil {
			t.Fatal(err)
		}
		part, err := BucketSpills{b, l}.LoadSpill(context.Background(), testPartition, ref)
		if err != nil {
			return
		}
		if len(part.Spills) != 0 || uint32(len(part.Segments)) != count || part.Segments[0].BaseOffset != base || part.Segments[len(part.Segments)-1].NextOffset != next {
			t.Fatalf("accepted a part that is not the one referenced: %+v", part)
		}
		for _, seg := range part.Segments {
			if seg.BaseOffset < base || seg.NextOffset > next {
				t.Fatalf("entry [%d, %d) outside [%d, %d)", seg.BaseOffset, seg.NextOffset, base, next)
			}
		}
	})
}

func FuzzDecodeCompanion(f *testing.F) {
	c, seg := sampleCompanion()
	f.Add(EncodeCompanion(c), seg.BaseOffset, seg.NextOffset, seg.Size)
	f.Add([]byte("SHCI\x00\x01\x00\x00\x00\x00\x00\x00"), int64(0), int64(1), int64(1))
	c, seg = abortedSample()
	f.Add(EncodeCompanion(c), seg.BaseOffset, seg.NextOffset, seg.Size)
	f.Add(encodeSections([]uint16{sectionAbortedTxns, 99}, [][]byte{abortedSection(c.AbortedTxns[1:]...), []byte("x")}), seg.BaseOffset, seg.NextOffset, seg.Size)
	f.Fuzz(func(t *testing.T, data []byte, base, next, size int64) {
		seg := &Segment{BaseOffset: base, NextOffset: next, Size: size}
		got, err := DecodeCompanion(data, seg)
		if err != nil {
			return
		}
		for _, e := range got.OffsetIndex {
			if int64(e.Position) >= size {
				t.Fatalf("entry %+v outside a segment of %d bytes", e, size)
			}
		}
		for i, e := range got.AbortedTxns {
			if e.LastOffset < base || e.LastOffset >= next || e.FirstOffset < 0 || e.FirstOffset > e.LastOffset ||
				e.LastStableOffset < 0 || e.LastStableOffset > e.LastOffset+1 || (i > 0 && e.LastOffset <= got.AbortedTxns[i-1].LastOffset) {
				t.Fatalf("aborted transaction %d %+v in a segment [%d, %d)", i, e, base, next)
			}
		}
		again, err := DecodeCompanion(EncodeCompanion(got), seg)
		if err != nil || !slices.Equal(again.AbortedTxns, got.AbortedTxns) || !slices.Equal(again.OffsetIndex, got.OffsetIndex) ||
			!slices.Equal(again.TimeIndex, got.TimeIndex) || !slices.Equal(again.Epochs, got.Epochs) ||
			!bytes.Equal(again.ProducerSnapshot, got.ProducerSnapshot) {
			t.Fatalf("a decoded companion does not round-trip: %v", err)
		}
	})
}

// FuzzOpenTxnFloor reads arbitrary bytes as a segment's producer snapshot
// for the oldest open transaction: an answer or none, never a panic.
func FuzzOpenTxnFloor(f *testing.F) {
	f.Add(testSnapshot())
	f.Add(testSnapshot([2]int64{1, -1}, [2]int64{2, 30}, [2]int64{3, 12}))
	f.Add([]byte("SHPS\x00\x01\x00\x00\x00\x00\xff\xff\xff\xff"))
	f.Fuzz(func(t *testing.T, snap []byte) {
		if floor, ok := openTxnFloor(snap); ok && floor < 0 {
			t.Fatalf("floor %d", floor)
		}
	})
}

func FuzzDecodeDescriptors(f *testing.F) {
	f.Add([]byte(`{"format":"shale-tiered-storage","version":1,"created_at":"2026-01-01T00:00:00Z"}`))
	f.Add([]byte(`{"name":"t","id":"AQIDAAAAAAAAAAAAAAAAAA","partitions":3,"configs":{"a":"b"},"updated_at":"2026-01-01T00:00:00Z"}`))
	f.Add([]byte(`{"name":"t","id":"AQIDAAAAAAAAAAAAAAAAAA","deleted_at":"2026-01-01T00:00:00Z"}`))
	f.Add([]byte(`{"leader_epoch":3,"uploads_from":4096,"swept_at":"2026-01-01T00:00:00Z"}`))
	f.Add([]byte(`{"leader_epoch":3,"first_dirty":4096,"horizon":-1,"cleaned_at":"2026-01-01T00:00:00Z"}`))
	f.Add([]byte(`{"leader_epoch":3,"next_offset":4096,"started_at":"2026-01-01T00:00:00Z","completed_at":"0001-01-01T00:00:00Z","damaged":1}`))
	f.Add([]byte(`{"cluster":"c1","partition":7,"groups":[{"group":"g","offsets":[{"topic":"t","topic_id":"AQIDAAAAAAAAAAAAAAAAAA","partition":2,"offset":42}]}],"updated_at":"2026-01-01T00:00:00Z"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		DecodeArchiveDescriptor(data)
		if d, err := DecodeTopicDescriptor(data); err == nil {
			if _, err := d.TopicID(); err != nil {
				t.Fatal("accepted a descriptor with a bad id")
			}
		}
		DecodeDeletionMarker(data)
		if n, err := DecodeSweepNote(data); err == nil && (n.UploadsFrom < 0 || n.LeaderEpoch < 0) {
			t.Fatalf("accepted a sweep note %+v", n)
		}
		if n, err := DecodeCleanerNote(data); err == nil && (n.FirstDirty < 0 || n.LeaderEpoch < 0 || n.Horizon < -1) {
			t.Fatalf("accepted a cleaner note %+v", n)
		}
		if n, err := DecodeScrubNote(data); err == nil && (n.Next < 0 || n.LeaderEpoch < 0 || n.Damaged < 0) {
			t.Fatalf("accepted a scrub note %+v", n)
		}
		if s, err := DecodeGroupShard(data); err == nil {
			for _, g := range s.Groups {
				for _, o := range g.Offsets {
					if o.Offset < 0 || o.Partition < 0 || g.Group == "" {
						t.Fatalf("accepted a group offset %+v", o)
					} else if _, err := ParseTopicID(o.TopicID); err != nil {
						t.Fatalf("accepted a group offset with a bad topic id %+v", o)
					}
				}
			}
		}
	})
}

// FuzzReadSegment reads arbitrary bytes as a remote segment: the reader
// returns batches or an error, never panics or reads out of bounds.
func FuzzReadSegment(f *testing.F) {
	good := bytes.Join([][]byte{testBatch(f, 2, 10, 1), testBatch(f, 1, 30, 2)}, nil)
	recordbatch.Batch(good).SetBaseOffset(0)
	f.Add(good, uint32(0), uint32(0), int64(0), int64(3))
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff}, uint32(1), uint32(5), int64(1), int64(2))
	// One reader for every input (a cache per input is slow); each input
	// gets its own segment id so cached chunks never mix.
	b := objectstore.NewMem()
	r, err := NewReader(ReaderConfig{Bucket: b, ChunkBytes: 7, CacheBytes: 1 << 20, ReadAhead: -1})
	if err != nil {
		f.Fatal(err)
	}
	defer r.Close()
	var n atomic.Uint64
	f.Fuzz(func(t *testing.T, data []byte, rel, pos uint32, offset, span int64) {
		if len(data) == 0 || span <= 0 || span > 1<<20 {
			return
		}
		seg := Segment{BaseOffset: 0, NextOffset: span, Size: int64(len(data))}
		binary.BigEndian.PutUint64(seg.ID[:], n.Add(1))
		comp := &Companion{}
		if int64(rel) < span && int64(pos) < seg.Size && rel > 0 && pos > 0 {
			comp.OffsetIndex = []localseg.IndexEntry{{RelOffset: rel, Position: pos}}
		}
		cb := EncodeCompanion(comp)
		seg.CompanionSize = int64(len(cb))
		l := Layout{}
		ctx := context.Background()
		b.Put(ctx, l.SegmentKey(testPartition, 0, seg.ID), bytes.NewReader(data), int64(len(data)), objectstore.PutOptions{})
		b.Put(ctx, l.CompanionKey(testPartition, 0, seg.ID), bytes.NewReader(cb), int64(len(cb)), objectstore.PutOptions{})
		defer b.Delete(ctx, l.SegmentKey(testPartition, 0, seg.ID))
		defer b.Delete(ctx, l.CompanionKey(testPartition, 0, seg.ID))
		m := &Manifest{Segments: []Segment{seg}}
		parts, err := r.Read(ctx, testPartition, m, offset, 1<<10, math.MaxInt64, true)
		if err != nil {
			return
		}
		n := 0
		for _, p := range parts {
			n += len(p)
		}
		if n > len(data) {
			t.Fatalf("returned %d bytes of a %d-byte segment", n, len(data))
		}
	})
}
