package tiering

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/shale-log/shale/localseg"
	"github.com/shale-log/shale/objectstore"
)

func sampleManifest() *Manifest {
	return &Manifest{
		CommitID: [16]byte{9}, LeaderEpoch: 3, LogStartOffset: 5, CommittedAtMs: 1_700_000_000_000,
		Spills: []Spill{{BaseOffset: 0, NextOffset: 10, Count: 2, Bytes: 4096, ID: [16]byte{7}}},
		Segments: []Segment{
			{BaseOffset: 10, NextOffset: 20, Size: 1000, CompanionSize: 100, MaxTimestamp: 55, UploadEpoch: 2, ID: [16]byte{1},
				Epochs: []localseg.EpochEntry{{Epoch: 1, StartOffset: 4}, {Epoch: 2, StartOffset: 15}}},
			{BaseOffset: 18, NextOffset: 30, Size: 2000, CompanionSize: 120, MaxTimestamp: -1, UploadEpoch: 3, ID: [16]byte{2},
				Epochs: []localseg.EpochEntry{{Epoch: 3, StartOffset: 18}}},
		},
	}
}

func TestManifestRoundTrips(t *testing.T) {
	m := sampleManifest()
	got, err := DecodeManifest(EncodeManifest(m, false), false)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, m) {
		t.Fatalf("got %+v\nwant %+v", got, m)
	}
	if m.End() != 30 || m.Start() != 5 || m.Bytes() != 7096 {
		t.Fatalf("end %d start %d bytes %d", m.End(), m.Start(), m.Bytes())
	}
	empty, err := DecodeManifest(EncodeManifest(&Manifest{}, false), false)
	if err != nil || len(empty.Segments) != 0 || empty.Start() != -1 {
		t.Fatalf("empty manifest: %+v, %v", empty, err)
	}
}

func TestManifestDecodeRejectsDamage(t *testing.T) {
	good := EncodeManifest(sampleManifest(), false)
	for i := range good {
		bad := append([]byte(nil), good...)
		bad[i] ^= 0x40
		if _, err := DecodeManifest(bad, false); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("flipped byte %d accepted: %v", i, err)
		}
	}
	for n := 0; n < len(good); n++ {
		if _, err := DecodeManifest(good[:n], false); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("truncated to %d accepted", n)
		}
	}
	if _, err := DecodeManifest(good, true); !errors.Is(err, ErrCorrupt) {
		t.Fatal("a manifest read as a spilled part")
	}
}

func TestCommitRefusesOverlappingOrEmptyEntries(t *testing.T) {
	m := sampleManifest()
	m.Segments[1].NextOffset = 20 // not above the previous entry
	if err := m.check(false); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("check: %v", err)
	}
}

func sampleCompanion() (*Companion, *Segment) {
	return &Companion{
			OffsetIndex:      []localseg.IndexEntry{{RelOffset: 1, Position: 80}, {RelOffset: 4, Position: 300}},
			TimeIndex:        []localseg.TimeEntry{{Timestamp: 100, RelOffset: 0}, {Timestamp: 150, RelOffset: 5}},
			ProducerSnapshot: []byte("SHPS-opaque"),
			Epochs:           []localseg.EpochEntry{{Epoch: 0, StartOffset: 0}, {Epoch: 1, StartOffset: 12}},
		},
		&Segment{BaseOffset: 10, NextOffset: 20, Size: 1000}
}

func TestCompanionRoundTrips(t *testing.T) {
	c, seg := sampleCompanion()
	got, err := DecodeCompanion(EncodeCompanion(c), seg)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, c) {
		t.Fatalf("got %+v\nwant %+v", got, c)
	}
}

func TestCompanionDecodeRejectsDamageAndForeignSegments(t *testing.T) {
	c, seg := sampleCompanion()
	good := EncodeCompanion(c)
	for i := range good {
		bad := append([]byte(nil), good...)
		bad[i] ^= 0x01
		if _, err := DecodeCompanion(bad, seg); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("flipped byte %d accepted: %v", i, err)
		}
	}
	small := *seg
	small.Size = 200 // an index position past the segment's end
	if _, err := DecodeCompanion(good, &small); !errors.Is(err, ErrCorrupt) {
		t.Fatal("index pointing outside the segment accepted")
	}
}

func TestDescriptorsRoundTripAndRejectNonsense(t *testing.T) {
	if _, err := DecodeArchiveDescriptor([]byte(`{"format":"shale-tiered-storage","version":1,"created_at":"2026-01-01T00:00:00Z"}`)); err != nil {
		t.Fatal(err)
	}
	d, err := DecodeTopicDescriptor([]byte(`{"name":"t","id":"AQIDAAAAAAAAAAAAAAAAAA","partitions":3,"configs":{"retention.ms":"-1"},"updated_at":"2026-01-01T00:00:00Z"}`))
	if err != nil || d.Partitions != 3 {
		t.Fatalf("%+v %v", d, err)
	}
	if id, _ := d.TopicID(); id != [16]byte{1, 2, 3} {
		t.Fatalf("id %v", id)
	}
	for _, bad := range []string{``, `{}`, `{"format":"other","version":1}`, `{"name":"t","id":"short","partitions":1}`, `{"name":"t","id":"AQIDAAAAAAAAAAAAAAAAAA","partitions":1} {}`} {
		_, e1 := DecodeArchiveDescriptor([]byte(bad))
		_, e2 := DecodeTopicDescriptor([]byte(bad))
		if !errors.Is(e1, ErrCorrupt) || !errors.Is(e2, ErrCorrupt) {
			t.Fatalf("%q accepted: %v %v", bad, e1, e2)
		}
	}
}

// ReadTopic (a bucket reader that knows the topic's name and id) reads back
// what PutTopic wrote, and says ErrNotFound for a topic the bucket lacks.
func TestReadTopicReadsWhatPutTopicWrote(t *testing.T) {
	ctx := context.Background()
	b := objectstore.NewMem()
	l := Layout{Prefix: "archive"}
	id := [16]byte{1, 2, 3}
	d := TopicDescriptor{Name: "orders", ID: TopicDir("orders", id)[len("orders-"):], Partitions: 4}
	if err := PutTopic(ctx, b, l, d); err != nil {
		t.Fatal(err)
	}
	got, err := ReadTopic(ctx, b, l, "orders", id)
	if err != nil || got.Name != "orders" || got.Partitions != 4 {
		t.Fatalf("ReadTopic: %+v %v", got, err)
	}
	if _, err := ReadTopic(ctx, b, l, "orders", [16]byte{9}); !errors.Is(err, objectstore.ErrNotFound) {
		t.Fatalf("ReadTopic of a missing topic: %v", err)
	}
}

func TestKeysFollowTheDocumentedLayout(t *testing.T) {
	l := Layout{Prefix: "/shale/"}
	p := Partition{Topic: "orders", TopicID: [16]byte{1, 2, 3}, Index: 7}
	id := [16]byte{0xab}
	for got, want := range map[string]string{
		l.ArchiveKey():                  "shale/shale-archive.json",
		l.TopicKey("orders", p.TopicID): "shale/orders-AQIDAAAAAAAAAAAAAAAAAA/topic.json",
		l.ManifestKey(p):                "shale/orders-AQIDAAAAAAAAAAAAAAAAAA/7/manifest",
		l.SegmentKey(p, 42, id):         "shale/orders-AQIDAAAAAAAAAAAAAAAAAA/7/00000000000000000042-ab000000000000000000000000000000.log",
		l.CompanionKey(p, 42, id):       "shale/orders-AQIDAAAAAAAAAAAAAAAAAA/7/00000000000000000042-ab000000000000000000000000000000.indexes",
		Layout{}.ManifestKey(p):         "orders-AQIDAAAAAAAAAAAAAAAAAA/7/manifest",
	} {
		if got != want {
			t.Errorf("got %s, want %s", got, want)
		}
	}
	if got, ok := parseObjectID(l.SegmentKey(p, 42, id)); !ok || got != id {
		t.Fatalf("parse: %v %v", got, ok)
	}
}

// TestTopicOfKey: every key and list prefix under a topic's directory
// names that topic (a name with dashes too, and an id with dashes among
// its base64url digits); the archive descriptor, the prefix above the
// topics and keys outside the layout name none.
func TestTopicOfKey(t *testing.T) {
	id := [16]byte{1, 2, 3}
	dashed := [16]byte{0xfb, 0xef, 0xbe, 0, 0, 0, 0xfb, 0xef, 0xbe} // "----AAAA----..."
	if !strings.Contains(TopicDir("t", dashed)[2:], "-") {
		t.Fatalf("%s: no dash in the id", TopicDir("t", dashed))
	}
	for _, l := range []Layout{{Prefix: "/shale/"}, {}} {
		for _, key := range []string{l.ManifestKey(Partition{Topic: "a-b", TopicID: dashed}), l.TopicPrefix("a-b", dashed)} {
			if got, ok := l.TopicOfKey(key); !ok || got != "a-b" {
				t.Errorf("layout %q: TopicOfKey(%s) = %q, %v; want a-b", l.Prefix, key, got, ok)
			}
		}
		p := Partition{Topic: "web-clicks-v2", TopicID: id, Index: 7}
		for _, key := range []string{l.TopicKey(p.Topic, id), l.DeletedKey(p.Topic, id), l.TopicPrefix(p.Topic, id),
			l.PartitionPrefix(p), l.ManifestKey(p), l.SegmentKey(p, 42, id), l.CompanionKey(p, 42, id), l.SpillKey(p, 42, id)} {
			if got, ok := l.TopicOfKey(key); !ok || got != p.Topic {
				t.Errorf("layout %q: TopicOfKey(%s) = %q, %v; want %s", l.Prefix, key, got, ok, p.Topic)
			}
		}
		for _, key := range []string{l.ArchiveKey(), l.join(""), l.join("orders") + "/x", l.join("orders-short") + "/x", l.join(TopicDir("t", id)),
			l.join("orders-AQIDAAAAAAAAAAAAAAAA!A") + "/x"} {
			if got, ok := l.TopicOfKey(key); ok {
				t.Errorf("layout %q: TopicOfKey(%s) = %q, want none", l.Prefix, key, got)
			}
		}
	}
	if got, ok := (Layout{Prefix: "shale"}).TopicOfKey("other/" + TopicDir("t", id) + "/topic.json"); ok {
		t.Errorf("a key outside the prefix names topic %q", got)
	}
}
