package tiering

import (
	"testing"
)

func FuzzDecodeManifest(f *testing.F) {
	f.Add(EncodeManifest(sampleManifest(), false), false)
	f.Add(EncodeManifest(&Manifest{Segments: sampleManifest().Segments}, true), true)
	f.Add([]byte("SHMF"), false)
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

func FuzzDecodeCompanion(f *testing.F) {
	c, seg := sampleCompanion()
	f.Add(EncodeCompanion(c), seg.BaseOffset, seg.NextOffset, seg.Size)
	f.Add([]byte("SHCI\x00\x01\x00\x00\x00\x00\x00\x00"), int64(0), int64(1), int64(1))
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
	})
}

func FuzzDecodeDescriptors(f *testing.F) {
	f.Add([]byte(`{"format":"shale-tiered-storage","version":1,"created_at":"2026-01-01T00:00:00Z"}`))
	f.Add([]byte(`{"name":"t","id":"AQIDAAAAAAAAAAAAAAAAAA","partitions":3,"configs":{"a":"b"},"updated_at":"2026-01-01T00:00:00Z"}`))
	f.Add([]byte(`{"name":"t","id":"AQIDAAAAAAAAAAAAAAAAAA","deleted_at":"2026-01-01T00:00:00Z"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		DecodeArchiveDescriptor(data)
		if d, err := DecodeTopicDescriptor(data); err == nil {
			if _, err := d.TopicID(); err != nil {
				t.Fatal("accepted a descriptor with a bad id")
			}
		}
		DecodeDeletionMarker(data)
	})
}
