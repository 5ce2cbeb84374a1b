package tiering

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/shale-log/shale/objectstore"
)

// listKeys returns the keys under prefix with the given suffix.
func listKeys(t *testing.T, b objectstore.Bucket, suffix string) []string {
	t.Helper()
	var out []string
	b.List(context.Background(), "", func(a objectstore.Attrs) error {
		if strings.HasSuffix(a.Key, suffix) {
			out = append(out, a.Key)
		}
		return nil
	})
	return out
}

func TestArchiverUploadsSealedSegmentsBelowTheLimitOnce(t *testing.T) {
	log, _ := testLog(t, 2000, 40)
	b := objectstore.NewMem()
	a, ms := newTestArchiver(t, b, log)
	segs := log.Segments()
	if len(segs) < 4 {
		t.Fatalf("only %d segments", len(segs))
	}
	// Only segments ending at or below the limit go.
	limit := segs[1].NextOffset
	if n := uploadAll(t, a, 0, limit); n != 2 {
		t.Fatalf("uploaded %d below the limit", n)
	}
	if ms.Current().End() != limit {
		t.Fatalf("manifest ends at %d", ms.Current().End())
	}
	n := uploadAll(t, a, 0, log.LogEndOffset())
	if n != len(segs)-3 {
		t.Fatalf("uploaded %d more of %d sealed", n, len(segs)-1)
	}
	m := ms.Current()
	if m.End() != segs[len(segs)-2].NextOffset || len(listKeys(t, b, ".log")) != len(segs)-1 || len(listKeys(t, b, ".indexes")) != len(segs)-1 {
		t.Fatalf("manifest %+v, objects %v", m, listKeys(t, b, ""))
	}
	// Each object is the local segment byte for byte.
	for i, s := range m.Segments {
		ss, err := log.OpenSealed(s.BaseOffset)
		if err != nil {
			t.Fatal(err)
		}
		want := make([]byte, ss.Size)
		ss.ReadAt(want, 0)
		ss.Close()
		got, err := objectstore.ReadAll(context.Background(), b, a.cfg.Layout.SegmentKey(testPartition, s.BaseOffset, s.ID), 1<<30)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("segment %d differs (%v)", i, err)
		}
		comp, _ := objectstore.ReadAll(context.Background(), b, a.cfg.Layout.CompanionKey(testPartition, s.BaseOffset, s.ID), 1<<30)
		if _, err := DecodeCompanion(comp, &s); err != nil {
			t.Fatal(err)
		}
	}
}

func TestArchiverFencedLeaderDeletesItsUploadAndStops(t *testing.T) {
	log, _ := testLog(t, 2000, 20)
	b := objectstore.NewMem()
	old, _ := newTestArchiver(t, b, log)
	nw, _ := newTestArchiver(t, b, log)
	if n := uploadAll(t, nw, 5, log.Segments()[0].NextOffset); n != 1 {
		t.Fatalf("new leader uploaded %d", n)
	}
	before := len(listKeys(t, b, ""))
	// The old leader (epoch 4) still sees an empty manifest and tries.
	_, err := old.UploadNext(context.Background(), 4, log.LogEndOffset())
	if !errors.Is(err, ErrFenced) {
		t.Fatalf("old leader: %v", err)
	}
	if after := len(listKeys(t, b, "")); after != before {
		t.Fatalf("fenced upload left %d objects", after-before)
	}
}

func TestArchiverKilledBeforeCommitLeavesAnOrphanNotAGap(t *testing.T) {
	log, _ := testLog(t, 2000, 20)
	fb := &faultyBucket{Bucket: objectstore.NewMem()}
	a, ms := newTestArchiver(t, fb, log)
	// The manifest PUT fails: segment and companion were written.
	fb.add(&fault{op: "put", match: "/manifest", n: 1})
	if _, err := a.UploadNext(context.Background(), 0, log.LogEndOffset()); !errors.Is(err, errInjected) {
		t.Fatalf("upload: %v", err)
	}
	if ms.Current().End() != 0 {
		t.Fatal("manifest moved")
	}
	// A fresh archiver (the broker restarted) uploads the segment again
	// under a new name; the first copy is an orphan.
	a2, ms2 := newTestArchiver(t, fb, log)
	uploadAll(t, a2, 0, log.Segments()[0].NextOffset)
	m := ms2.Current()
	if len(m.Segments) != 1 || m.End() != log.Segments()[0].NextOffset {
		t.Fatalf("manifest %+v", m)
	}
	orphans := PlanOrphans(m, nil, listAttrs(t, fb, a2.cfg.Layout.PartitionPrefix(testPartition)), time.Now().Add(time.Hour), time.Minute)
	if len(orphans) != 2 {
		t.Fatalf("orphans %v", orphans)
	}
	for _, k := range orphans {
		if strings.Contains(k, "manifest") || m.Segments[0].ID == mustID(t, k) {
			t.Fatalf("would delete a committed object %s", k)
		}
	}
}

func mustID(t *testing.T, key string) [16]byte {
	id, ok := parseObjectID(key)
	if !ok {
		t.Fatalf("no id in %s", key)
	}
	return id
}

func listAttrs(t *testing.T, b objectstore.Bucket, prefix string) []objectstore.Attrs {
	t.Helper()
	var out []objectstore.Attrs
	if err := b.List(context.Background(), prefix, func(a objectstore.Attrs) error { out = append(out, a); return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}
