package tiering

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shale-log/shale/localseg"
	"github.com/shale-log/shale/objectstore"
)

// verifyEnv is a remote log the archiver uploaded from a real local log
// into an in-memory bucket.
type verifyEnv struct {
	b    objectstore.Bucket
	l    Layout
	ms   *ManifestStore
	m    *Manifest
	segs []Segment // every entry, spilled ones included, in order
}

// newVerifyEnv uploads every sealed segment of log to a new in-memory
// bucket.
func newVerifyEnv(t *testing.T, log *localseg.Log) *verifyEnv {
	t.Helper()
	b := objectstore.NewMem()
	a, _ := newTestArchiver(t, b, log)
	if n := uploadAll(t, a, 0, log.LogEndOffset()); n < 3 {
		t.Fatalf("uploaded %d segments; the tests need 3", n)
	}
	return envOf(t, b)
}

// envOf is the test partition's remote log in b as it stands.
func envOf(t *testing.T, b objectstore.Bucket) *verifyEnv {
	t.Helper()
	ms, l := loadedStore(t, b)
	m := ms.Current()
	segs := walked(t, BucketSpills{b, l}, m)
	if len(segs) != m.SegmentCount() {
		t.Fatalf("walked %d entries, the manifest counts %d", len(segs), m.SegmentCount())
	}
	return &verifyEnv{b: b, l: l, ms: ms, m: m, segs: segs}
}

// clone is a copy of e in a bucket of its own, to damage.
func (e *verifyEnv) clone(t *testing.T) *verifyEnv {
	t.Helper()
	dst := objectstore.NewMem()
	for _, a := range listAttrs(t, e.b, "") {
		putObject(t, dst, a.Key, readObject(t, e.b, a.Key))
	}
	return envOf(t, dst)
}

// spilledVerifyEnv is a copy of a remote log of some 120 segments, most
// of them in spilled parts (the manifests spilled at 4 KiB). The log is
// uploaded once for the tests (uploading takes a while with -race).
func spilledVerifyEnv(t *testing.T) *verifyEnv {
	t.Helper()
	spilledBase.mu.Lock()
	defer spilledBase.mu.Unlock()
	if spilledBase.e == nil {
		setSmallSpills(t)
		log, _ := testLog(t, 300, 120)
		e := newVerifyEnv(t, log)
		if len(e.m.Spills) < 2 || len(e.m.Segments) == 0 || e.m.Spills[0].Count < 3 {
			t.Fatalf("%d spilled parts (the first of %d segments) and %d segments of its own", len(e.m.Spills), e.m.Spills[0].Count, len(e.m.Segments))
		}
		spilledBase.e = e
	}
	return spilledBase.e.clone(t)
}

var spilledBase struct {
	mu sync.Mutex
	e  *verifyEnv
}

func (e *verifyEnv) segKey(s Segment) string {
	return e.l.SegmentKey(testPartition, s.BaseOffset, s.ID)
}
func (e *verifyEnv) compKey(s Segment) string {
	return e.l.CompanionKey(testPartition, s.BaseOffset, s.ID)
}
func (e *verifyEnv) spillKey(s Spill) string { return e.l.SpillKey(testPartition, s.BaseOffset, s.ID) }
func (e *verifyEnv) manifestKey() string     { return e.l.ManifestKey(testPartition) }

// own is the last entry of the manifest itself (not spilled).
func (e *verifyEnv) own() Segment { return e.m.Segments[len(e.m.Segments)-1] }

// verify runs VerifyPartition on b (e's bucket when nil).
func (e *verifyEnv) verify(t *testing.T, ctx context.Context, b objectstore.Bucket, opts VerifyOptions) (*Verification, error) {
	t.Helper()
	if b == nil {
		b = e.b
	}
	return VerifyPartition(ctx, b, e.l, testPartition, opts)
}

func (e *verifyEnv) mustVerify(t *testing.T, b objectstore.Bucket, opts VerifyOptions) *Verification {
	t.Helper()
	v, err := e.verify(t, context.Background(), b, opts)
	if err != nil {
		t.Fatalf("VerifyPartition (deep %v): %v", opts.Deep, err)
	}
	return v
}

// requireCounts fails t unless v counts what e's manifest names, and
// read every segment (deep) but those of unread bytes.
func (e *verifyEnv) requireCounts(t *testing.T, v *Verification, deep bool, unread ...Segment) {
	t.Helper()
	if v.Partition != testPartition || v.Start != e.m.Start() || v.End != e.m.End() {
		t.Fatalf("verified %v [%d, %d); the manifest is %v [%d, %d)", v.Partition, v.Start, v.End, testPartition, e.m.Start(), e.m.End())
	}
	if v.Segments != e.m.SegmentCount() || v.Bytes != e.m.Bytes() {
		t.Fatalf("%d segments of %d bytes; the manifest names %d of %d", v.Segments, v.Bytes, e.m.SegmentCount(), e.m.Bytes())
	}
	want := int64(0)
	if deep {
		want = e.m.Bytes()
		for _, s := range unread {
			want -= s.Size
		}
	}
	if v.ReadBytes != want {
		t.Fatalf("read %d bytes (deep %v), want %d", v.ReadBytes, deep, want)
	}
}

func readObject(t *testing.T, b objectstore.Bucket, key string) []byte {
	t.Helper()
	data, err := objectstore.ReadAll(context.Background(), b, key, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func putObject(t *testing.T, b objectstore.Bucket, key string, data []byte) {
	t.Helper()
	if _, err := b.Put(context.Background(), key, bytes.NewReader(data), int64(len(data)), objectstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
}

func deleteObject(t *testing.T, b objectstore.Bucket, key string) {
	t.Helper()
	if err := b.Delete(context.Background(), key); err != nil {
		t.Fatal(err)
	}
}

// wantProblem is a Problem expected: its key and offsets, and a part of
// its text.
type wantProblem struct {
	key        string
	base, next int64
	what       string
}

func requireProblems(t *testing.T, v *Verification, want ...wantProblem) {
	t.Helper()
	ok := len(v.Problems) == len(want)
	for i := 0; ok && i < len(want); i++ {
		p, w := v.Problems[i], want[i]
		ok = p.Key == w.key && p.BaseOffset == w.base && p.NextOffset == w.next && strings.Contains(p.What, w.what)
	}
	if !ok {
		var got, exp strings.Builder
		for _, p := range v.Problems {
			fmt.Fprintf(&got, "\n\t%s [%d, %d): %s", p.Key, p.BaseOffset, p.NextOffset, p.What)
		}
		for _, w := range want {
			fmt.Fprintf(&exp, "\n\t%s [%d, %d): ...%s...", w.key, w.base, w.next, w.what)
		}
		t.Fatalf("problems:%s\nwant:%s", got.String(), exp.String())
	}
}

func segProblem(e *verifyEnv, s Segment, what string) wantProblem {
	return wantProblem{e.segKey(s), s.BaseOffset, s.NextOffset, what}
}

func compProblem(e *verifyEnv, s Segment, what string) wantProblem {
	return wantProblem{e.compKey(s), s.BaseOffset, s.NextOffset, what}
}

// A remote log as the archiver uploaded it checks out, quick and deep:
// with spilled parts, and with transactions (aborted ones among them).
func TestVerifyPartitionCleanRemoteLog(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  func(t *testing.T) *verifyEnv
	}{
		{"segments", func(t *testing.T) *verifyEnv {
			log, _ := testLog(t, 2000, 40)
			return newVerifyEnv(t, log)
		}},
		{"spilled parts", spilledVerifyEnv},
		{"transactions", func(t *testing.T) *verifyEnv {
			e := newVerifyEnv(t, txnLog(t))
			aborted := 0
			for _, s := range e.segs {
				c, err := DecodeCompanion(readObject(t, e.b, e.compKey(s)), &s)
				if err != nil {
					t.Fatal(err)
				}
				aborted += len(c.AbortedTxns)
			}
			if aborted == 0 {
				t.Fatal("no aborted transaction uploaded")
			}
			return e
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := tc.env(t)
			for _, deep := range []bool{false, true} {
				var called []Segment
				v := e.mustVerify(t, nil, VerifyOptions{Deep: deep, Segment: func(s Segment) { called = append(called, s) }})
				requireProblems(t, v)
				e.requireCounts(t, v, deep)
				if v.Unnamed != 0 || v.UnnamedBytes != 0 {
					t.Fatalf("%d unnamed objects (%d bytes) in a clean log", v.Unnamed, v.UnnamedBytes)
				}
				if len(called) != len(e.segs) {
					t.Fatalf("Segment called %d times for %d entries", len(called), len(e.segs))
				}
				for i := range called {
					if called[i].ID != e.segs[i].ID {
						t.Fatalf("Segment call %d is [%d, %d), the entry [%d, %d)", i, called[i].BaseOffset, called[i].NextOffset, e.segs[i].BaseOffset, e.segs[i].NextOffset)
					}
				}
				// No damage is an empty list, not null.
				if js, err := json.Marshal(v); err != nil || !bytes.Contains(js, []byte(`"problems":[]`)) {
					t.Fatalf("%s (%v)", js, err)
				}
			}
		})
	}
}

// An empty bucket is an empty log: nothing to check, nothing wrong.
func TestVerifyPartitionWithoutAManifest(t *testing.T) {
	v, err := VerifyPartition(context.Background(), objectstore.NewMem(), Layout{Prefix: "archive"}, testPartition, VerifyOptions{Deep: true})
	if err != nil || v.Start != -1 || v.End != 0 || v.Segments != 0 || len(v.Problems) != 0 {
		t.Fatalf("%+v, %v", v, err)
	}
}

// Each kind of damage is reported once, on the damaged object's key with
// the offsets the manifest gives it, and nothing else is.
func TestVerifyPartitionReportsDamage(t *testing.T) {
	base := spilledVerifyEnv(t)
	for _, tc := range []struct {
		name string
		// damage damages e and returns the problems a quick and a deep
		// verification find.
		damage func(t *testing.T, e *verifyEnv) (quick, deep []wantProblem)
		// spillDamaged: a spilled part does not read, and its objects
		// count as unnamed (see
		// TestVerifyPartitionDoesNotCountTheObjectsOfAMissingPartAsUnnamed).
		spillDamaged bool
	}{
		{name: "spilled segment missing", damage: func(t *testing.T, e *verifyEnv) ([]wantProblem, []wantProblem) {
			s := e.segs[1]
			deleteObject(t, e.b, e.segKey(s))
			w := []wantProblem{segProblem(e, s, "segment object is missing")}
			return w, w
		}},
		{name: "segment missing", damage: func(t *testing.T, e *verifyEnv) ([]wantProblem, []wantProblem) {
			s := e.own()
			deleteObject(t, e.b, e.segKey(s))
			w := []wantProblem{segProblem(e, s, "segment object is missing")}
			return w, w
		}},
		{name: "companion missing", damage: func(t *testing.T, e *verifyEnv) ([]wantProblem, []wantProblem) {
			s := e.segs[2]
			deleteObject(t, e.b, e.compKey(s))
			w := []wantProblem{compProblem(e, s, "companion object is missing")}
			return w, w
		}},
		{name: "segment longer", damage: func(t *testing.T, e *verifyEnv) ([]wantProblem, []wantProblem) {
			s := e.own()
			putObject(t, e.b, e.segKey(s), append(readObject(t, e.b, e.segKey(s)), 0))
			w := []wantProblem{segProblem(e, s, fmt.Sprintf("holds %d bytes, the manifest says %d", s.Size+1, s.Size))}
			return w, w
		}},
		{name: "segment shorter", damage: func(t *testing.T, e *verifyEnv) ([]wantProblem, []wantProblem) {
			s := e.segs[0]
			putObject(t, e.b, e.segKey(s), readObject(t, e.b, e.segKey(s))[:s.Size-1])
			w := []wantProblem{segProblem(e, s, fmt.Sprintf("holds %d bytes, the manifest says %d", s.Size-1, s.Size))}
			return w, w
		}},
		{name: "companion of another size", damage: func(t *testing.T, e *verifyEnv) ([]wantProblem, []wantProblem) {
			s := e.own()
			putObject(t, e.b, e.compKey(s), append(readObject(t, e.b, e.compKey(s)), 0))
			w := []wantProblem{compProblem(e, s, fmt.Sprintf("holds %d bytes, the manifest says %d", s.CompanionSize+1, s.CompanionSize))}
			return w, w
		}},
		{name: "companion garbage of the same size", damage: func(t *testing.T, e *verifyEnv) ([]wantProblem, []wantProblem) {
			s := e.segs[3]
			putObject(t, e.b, e.compKey(s), bytes.Repeat([]byte{0xa5}, int(s.CompanionSize)))
			w := []wantProblem{compProblem(e, s, "companion: bad magic")}
			return w, w
		}},
		{name: "companion with a flipped byte", damage: func(t *testing.T, e *verifyEnv) ([]wantProblem, []wantProblem) {
			s := e.own()
			data := readObject(t, e.b, e.compKey(s))
			data[len(data)-1] ^= 0x10
			putObject(t, e.b, e.compKey(s), data)
			w := []wantProblem{compProblem(e, s, "checksum mismatch")}
			return w, w
		}},
		{name: "bit rot in a segment", damage: func(t *testing.T, e *verifyEnv) ([]wantProblem, []wantProblem) {
			s := e.own()
			data := readObject(t, e.b, e.segKey(s))
			data[len(data)-50] ^= 0x04 // in the last record's value
			putObject(t, e.b, e.segKey(s), data)
			return nil, []wantProblem{segProblem(e, s, "")}
		}},
		{name: "bit rot in a spilled segment", damage: func(t *testing.T, e *verifyEnv) ([]wantProblem, []wantProblem) {
			s := e.segs[4]
			data := readObject(t, e.b, e.segKey(s))
			data[len(data)/2] ^= 0x80
			putObject(t, e.b, e.segKey(s), data)
			return nil, []wantProblem{segProblem(e, s, "")}
		}},
		{name: "segment holding another's batches", damage: func(t *testing.T, e *verifyEnv) ([]wantProblem, []wantProblem) {
			// Another entry's bytes, of the same size: the offsets are
			// not the entry's.
			s := e.own()
			for _, other := range e.segs[:len(e.segs)-1] {
				if other.Size == s.Size {
					putObject(t, e.b, e.segKey(s), readObject(t, e.b, e.segKey(other)))
					return nil, []wantProblem{segProblem(e, s, "")}
				}
			}
			t.Skip("no two entries of the same size")
			return nil, nil
		}},
		{name: "several", damage: func(t *testing.T, e *verifyEnv) ([]wantProblem, []wantProblem) {
			a, b := e.segs[1], e.own()
			deleteObject(t, e.b, e.compKey(a))
			data := readObject(t, e.b, e.segKey(b))
			data[len(data)-30] ^= 0x01
			putObject(t, e.b, e.segKey(b), data)
			quick := []wantProblem{compProblem(e, a, "missing")}
			return quick, append(quick, segProblem(e, b, ""))
		}},
		{name: "spilled part missing", spillDamaged: true, damage: func(t *testing.T, e *verifyEnv) ([]wantProblem, []wantProblem) {
			s := e.m.Spills[1]
			deleteObject(t, e.b, e.spillKey(s))
			w := []wantProblem{{e.spillKey(s), s.BaseOffset, s.NextOffset, "is missing"}}
			return w, w
		}},
		{name: "spilled part garbage", spillDamaged: true, damage: func(t *testing.T, e *verifyEnv) ([]wantProblem, []wantProblem) {
			s := e.m.Spills[0]
			putObject(t, e.b, e.spillKey(s), bytes.Repeat([]byte{0x5a}, 300))
			w := []wantProblem{{e.spillKey(s), s.BaseOffset, s.NextOffset, "bad magic"}}
			return w, w
		}},
		{name: "spilled part of another range", spillDamaged: true, damage: func(t *testing.T, e *verifyEnv) ([]wantProblem, []wantProblem) {
			s, other := e.m.Spills[0], e.m.Spills[1]
			putObject(t, e.b, e.spillKey(s), readObject(t, e.b, e.spillKey(other)))
			w := []wantProblem{{e.spillKey(s), s.BaseOffset, s.NextOffset, "does not match its reference"}}
			return w, w
		}},
		{name: "manifest garbage", damage: func(t *testing.T, e *verifyEnv) ([]wantProblem, []wantProblem) {
			putObject(t, e.b, e.manifestKey(), []byte("not a manifest at all"))
			w := []wantProblem{{e.manifestKey(), -1, -1, "bad magic"}}
			return w, w
		}},
		{name: "manifest with a flipped byte", damage: func(t *testing.T, e *verifyEnv) ([]wantProblem, []wantProblem) {
			data := readObject(t, e.b, e.manifestKey())
			data[len(data)-3] ^= 0x01
			putObject(t, e.b, e.manifestKey(), data)
			w := []wantProblem{{e.manifestKey(), -1, -1, "checksum mismatch"}}
			return w, w
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := base.clone(t)
			quick, deep := tc.damage(t, e)
			for _, d := range []bool{false, true} {
				v := e.mustVerify(t, nil, VerifyOptions{Deep: d})
				want := map[bool][]wantProblem{false: quick, true: deep}[d]
				requireProblems(t, v, want...)
				for _, p := range v.Problems {
					if p.What == "" {
						t.Fatalf("a problem without its text: %+v", p)
					}
				}
				if strings.HasPrefix(tc.name, "manifest") {
					if v.Segments != 0 || v.Start != -1 || v.Unnamed != 0 {
						t.Fatalf("a manifest that does not read: %+v", v)
					}
					continue
				}
				if !tc.spillDamaged {
					// A segment missing or of the wrong size is not read.
					var unread []Segment
					for _, s := range e.segs {
						for _, w := range quick {
							if w.key == e.segKey(s) {
								unread = append(unread, s)
							}
						}
					}
					e.requireCounts(t, v, d, unread...)
					if v.Unnamed != 0 {
						t.Fatalf("%d unnamed objects", v.Unnamed)
					}
				}
			}
		})
	}
}

// A companion's offset index entry that decodes (ascending, inside the
// segment) but does not point at the start of the batch holding its
// offset is damage a deep verification finds on the companion.
func TestVerifyPartitionChecksTheOffsetIndex(t *testing.T) {
	log, _ := testLog(t, 2000, 40)
	e := newVerifyEnv(t, log)
	for _, s := range e.segs {
		data := readObject(t, e.b, e.compKey(s))
		c, err := DecodeCompanion(data, &s)
		if err != nil {
			t.Fatal(err)
		}
		if len(c.OffsetIndex) < 2 {
			continue
		}
		if !bytes.Equal(EncodeCompanion(c), data) {
			t.Fatal("the companion does not round-trip")
		}
		for _, tc := range []struct {
			name   string
			change func(c *Companion) localseg.IndexEntry
		}{
			{"mid-batch", func(c *Companion) localseg.IndexEntry {
				last := &c.OffsetIndex[len(c.OffsetIndex)-1]
				last.Position++
				return *last
			}},
			{"an offset of another batch", func(c *Companion) localseg.IndexEntry {
				// The first entry is of a batch after the first (at
				// byte 0, which is not indexed): the segment's first
				// offset at its start.
				first := &c.OffsetIndex[0]
				if first.RelOffset == 0 || first.Position == 0 {
					t.Fatalf("the first index entry is %+v", *first)
				}
				first.RelOffset = 0
				return *first
			}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				e := e.clone(t)
				bad := *c
				bad.OffsetIndex = append([]localseg.IndexEntry(nil), c.OffsetIndex...)
				entry := tc.change(&bad)
				enc := EncodeCompanion(&bad)
				if _, err := DecodeCompanion(enc, &s); err != nil || len(enc) != len(data) {
					t.Fatalf("%d bytes, was %d (%v)", len(enc), len(data), err)
				}
				putObject(t, e.b, e.compKey(s), enc)
				requireProblems(t, e.mustVerify(t, nil, VerifyOptions{}))
				v := e.mustVerify(t, nil, VerifyOptions{Deep: true})
				requireProblems(t, v, compProblem(e, s, fmt.Sprintf("offset index entry (offset %d, byte %d) is not at the start of the batch", s.BaseOffset+int64(entry.RelOffset), entry.Position)))
				e.requireCounts(t, v, true)
			})
		}
		return
	}
	t.Fatal("no companion with an offset index of two entries")
}

// The aborted transactions of a companion are checked against the
// segment's markers (deep only: they decode).
func TestVerifyPartitionChecksAbortedTxnsAgainstTheMarkers(t *testing.T) {
	e := newVerifyEnv(t, txnLog(t))
	for _, s := range e.segs {
		data := readObject(t, e.b, e.compKey(s))
		c, err := DecodeCompanion(data, &s)
		if err != nil {
			t.Fatal(err)
		}
		if len(c.AbortedTxns) == 0 || c.AbortedTxns[0].LastOffset == s.BaseOffset {
			continue
		}
		if !bytes.Equal(EncodeCompanion(c), data) {
			t.Fatal("the companion does not round-trip")
		}
		for _, tc := range []struct {
			name   string
			change func(*localseg.AbortedTxn)
		}{
			{"another producer", func(a *localseg.AbortedTxn) { a.ProducerID = 999 }},
			{"a marker that is not there", func(a *localseg.AbortedTxn) {
				// The segment's first offset is a data batch (txnLog's
				// markers follow data).
				a.LastOffset, a.FirstOffset, a.LastStableOffset = s.BaseOffset, s.BaseOffset, s.BaseOffset
			}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				e := e.clone(t)
				bad := *c
				bad.AbortedTxns = append([]localseg.AbortedTxn(nil), c.AbortedTxns...)
				tc.change(&bad.AbortedTxns[0])
				enc := EncodeCompanion(&bad)
				if _, err := DecodeCompanion(enc, &s); err != nil || len(enc) != len(data) {
					t.Fatalf("%d bytes, was %d (%v)", len(enc), len(data), err)
				}
				putObject(t, e.b, e.compKey(s), enc)
				requireProblems(t, e.mustVerify(t, nil, VerifyOptions{}))
				v := e.mustVerify(t, nil, VerifyOptions{Deep: true})
				at := bad.AbortedTxns[0]
				requireProblems(t, v, compProblem(e, s, fmt.Sprintf("aborted transaction of producer %d: no marker of it at offset %d", at.ProducerID, at.LastOffset)))
			})
		}
		return
	}
	t.Fatal("no companion with aborted transactions")
}

// Objects no manifest names (a failed upload's, say) are counted, and are
// no damage; other keys under the prefix are not counted.
func TestVerifyPartitionCountsUnnamedObjects(t *testing.T) {
	log, _ := testLog(t, 2000, 40)
	e := newVerifyEnv(t, log)
	prefix := e.l.PartitionPrefix(testPartition)
	putObject(t, e.b, prefix+"00000000000000000099-0123456789abcdef0123456789abcdef.log", make([]byte, 1234))
	putObject(t, e.b, prefix+"00000000000000000099-0123456789abcdef0123456789abcdef.indexes", make([]byte, 66))
	putObject(t, e.b, prefix+"spill-00000000000000000000-fedcba9876543210fedcba9876543210.manifest", make([]byte, 100))
	putObject(t, e.b, prefix+"swept.json", []byte("{}"))
	putObject(t, e.b, prefix+"notes.txt", []byte("not an object of the log"))
	for _, deep := range []bool{false, true} {
		v := e.mustVerify(t, nil, VerifyOptions{Deep: deep})
		requireProblems(t, v)
		e.requireCounts(t, v, deep)
		if v.Unnamed != 3 || v.UnnamedBytes != 1234+66+100 {
			t.Fatalf("%d unnamed objects of %d bytes, want 3 of %d", v.Unnamed, v.UnnamedBytes, 1234+66+100)
		}
	}
}

// getHook calls hook once, before the first Get of a key with the suffix
// given.
type getHook struct {
	objectstore.Bucket
	suffix string
	hook   func(key string)
	mu     sync.Mutex
	fired  int
}

func (h *getHook) Get(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
	h.mu.Lock()
	fire := h.fired == 0 && strings.HasSuffix(key, h.suffix)
	if fire {
		h.fired++
	}
	h.mu.Unlock()
	if fire {
		h.hook(key)
	}
	return h.Bucket.Get(ctx, key, off, n)
}

// dropFirst is retention dropping the first remote segment, as the
// leader's does: a commit without its entry, then its objects deleted.
func (e *verifyEnv) dropFirst(t *testing.T) *Manifest {
	t.Helper()
	if _, err := e.ms.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	pol := RetentionPolicy{RetentionMs: -1, RetentionBytes: e.m.Bytes() - e.segs[0].Size}
	m, err := ApplyRetention(context.Background(), e.b, e.l, testPartition, e.ms, BucketSpills{e.b, e.l}, 0, pol, time.Now(), 0, nil)
	if err != nil || m == nil || m.SegmentCount() != len(e.segs)-1 || m.LogStartOffset != e.segs[0].NextOffset {
		t.Fatalf("retention: %+v, %v", m, err)
	}
	requireExist(t, e.b, []string{e.segKey(e.segs[0]), e.compKey(e.segs[0])}, false)
	return m
}

// Retention that drops a segment while the verification runs (after it
// listed the objects) deleted objects the manifest no longer names: no
// damage. Damage to what it still names is reported all the same.
func TestVerifyPartitionBesideRetention(t *testing.T) {
	for _, spilled := range []bool{false, true} {
		t.Run(fmt.Sprintf("spilled %v", spilled), func(t *testing.T) {
			var base *verifyEnv
			if spilled {
				base = spilledVerifyEnv(t)
			} else {
				log, _ := testLog(t, 2000, 40)
				base = newVerifyEnv(t, log)
			}
			for _, deep := range []bool{false, true} {
				e := base.clone(t)
				damaged := e.own()
				deleteObject(t, e.b, e.compKey(damaged))
				h := &getHook{Bucket: e.b, suffix: ".indexes", hook: func(key string) {
					if key != e.compKey(e.segs[0]) {
						t.Errorf("the first companion read is %s, not the first entry's", key)
					}
					e.dropFirst(t)
				}}
				v := e.mustVerify(t, h, VerifyOptions{Deep: deep})
				if h.fired != 1 {
					t.Fatal("retention did not run")
				}
				requireProblems(t, v, compProblem(e, damaged, "companion object is missing"))
				// As the manifest was when read; the dropped segment was
				// not there to read.
				e.requireCounts(t, v, deep, e.segs[0])
			}
		})
	}
}

// A store that fails is an error wrapping ErrUnavailable, not damage.
func TestVerifyPartitionStoreFailures(t *testing.T) {
	base := spilledVerifyEnv(t)
	later := base.segKey(base.segs[len(base.segs)/2])
	for _, tc := range []struct {
		name string
		f    fault
		deep bool
	}{
		{"segment get", fault{op: "get", match: ".log", n: 1}, true},
		{"a later segment get", fault{op: "get", match: later, n: 1}, true},
		{"companion get", fault{op: "get", match: ".indexes", n: 1}, false},
		{"spilled part get", fault{op: "get", match: "/spill-", n: 1}, false},
		{"manifest get", fault{op: "get", match: "/manifest", n: 1}, false},
		{"manifest head", fault{op: "head", match: "/manifest", n: 1}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := base.clone(t)
			fb := &faultyBucket{Bucket: e.b}
			rule := tc.f
			f := fb.add(&rule)
			v, err := e.verify(t, context.Background(), fb, VerifyOptions{Deep: tc.deep})
			if !errors.Is(err, ErrUnavailable) || v != nil || f.fired != 1 {
				t.Fatalf("%+v, %v (the fault fired %d times)", v, err, f.fired)
			}
			// The same store, answering: no damage.
			requireProblems(t, e.mustVerify(t, fb, VerifyOptions{Deep: tc.deep}))
		})
	}
	t.Run("listing", func(t *testing.T) {
		e := base.clone(t)
		v, err := e.verify(t, context.Background(), listFails{e.b}, VerifyOptions{})
		if !errors.Is(err, ErrUnavailable) || !errors.Is(err, errInjected) || v != nil {
			t.Fatalf("%+v, %v", v, err)
		}
	})
	t.Run("quick reads no segment", func(t *testing.T) {
		e := base.clone(t)
		fb := &faultyBucket{Bucket: e.b}
		f := fb.add(&fault{op: "get", match: ".log", n: 1000})
		requireProblems(t, e.mustVerify(t, fb, VerifyOptions{}))
		if f.fired != 0 {
			t.Fatalf("a quick verification read %d segments", f.fired)
		}
	})
}

type listFails struct{ objectstore.Bucket }

func (l listFails) List(ctx context.Context, prefix string, fn func(objectstore.Attrs) error) error {
	return errInjected
}

func (l listFails) ListAfter(ctx context.Context, prefix, after string, fn func(objectstore.Attrs) error) error {
	return errInjected
}

// A bound on the read rate still verifies everything; a cancelled
// context ends the run with an error, before, between and while
// segments are read.
func TestVerifyPartitionPacedAndCancelled(t *testing.T) {
	log, _ := testLog(t, 2000, 40)
	e := newVerifyEnv(t, log)
	t.Run("paced", func(t *testing.T) {
		e := e.clone(t)
		s := e.own()
		data := readObject(t, e.b, e.segKey(s))
		data[len(data)-40] ^= 0x02
		putObject(t, e.b, e.segKey(s), data)
		// Some 100 ms for the whole log.
		v := e.mustVerify(t, nil, VerifyOptions{Deep: true, BytesPerSecond: e.m.Bytes() * 10})
		requireProblems(t, v, segProblem(e, s, ""))
		e.requireCounts(t, v, true)
	})
	t.Run("before", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		v, err := e.verify(t, ctx, nil, VerifyOptions{Deep: true})
		if !errors.Is(err, context.Canceled) || v != nil {
			t.Fatalf("%+v, %v", v, err)
		}
	})
	for _, deep := range []bool{false, true} {
		t.Run(fmt.Sprintf("between segments, deep %v", deep), func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			n := 0
			v, err := e.verify(t, ctx, nil, VerifyOptions{Deep: deep, Segment: func(Segment) { n++; cancel() }})
			if !errors.Is(err, context.Canceled) || v != nil || n != 1 {
				t.Fatalf("%+v, %v after %d segments", v, err, n)
			}
		})
	}
	t.Run("while reading", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		// One byte a second: only the cancel ends it.
		h := &getHook{Bucket: e.b, suffix: ".log", hook: func(string) { time.AfterFunc(10*time.Millisecond, cancel) }}
		v, err := e.verify(t, ctx, h, VerifyOptions{Deep: true, BytesPerSecond: 1})
		if !errors.Is(err, context.Canceled) || v != nil {
			t.Fatalf("%+v, %v", v, err)
		}
	})
}

// VerifyTopic verifies each partition the descriptor counts.
func TestVerifyTopic(t *testing.T) {
	log, _ := testLog(t, 2000, 40)
	e := newVerifyEnv(t, log)
	s := e.own()
	deleteObject(t, e.b, e.compKey(s))
	d := &TopicDescriptor{Name: testPartition.Topic, ID: topicIDString(testPartition.TopicID), Partitions: 2}
	vs, err := VerifyTopic(context.Background(), e.b, e.l, d, VerifyOptions{Deep: true})
	if err != nil || len(vs) != 2 {
		t.Fatalf("%d verifications, %v", len(vs), err)
	}
	requireProblems(t, vs[0], compProblem(e, s, "missing"))
	if p := vs[1]; p.Partition.Index != 1 || p.Segments != 0 || len(p.Problems) != 0 {
		t.Fatalf("partition 1: %+v", p)
	}
	if _, err := VerifyTopic(context.Background(), e.b, e.l, &TopicDescriptor{Name: "x", ID: "nope", Partitions: 1}, VerifyOptions{}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("a bad topic id: %v", err)
	}
}

func topicIDString(id [16]byte) string {
	dir := TopicDir("", id)
	return dir[1:]
}

// Damage after a spilled part that does not read is still reported: the
// check against the manifest read again must not stop at that part.
func TestVerifyPartitionReportsDamageAfterAMissingSpilledPart(t *testing.T) {
	e := spilledVerifyEnv(t)
	sp, s := e.m.Spills[0], e.own()
	deleteObject(t, e.b, e.spillKey(sp))
	deleteObject(t, e.b, e.segKey(s))
	for _, deep := range []bool{false, true} {
		v := e.mustVerify(t, nil, VerifyOptions{Deep: deep})
		requireProblems(t, v,
			wantProblem{e.spillKey(sp), sp.BaseOffset, sp.NextOffset, "missing"},
			segProblem(e, s, "segment object is missing"))
	}
}

// The segments and companions a spilled part names that does not read
// are not "unnamed", which says the leader's sweeps delete them: the
// sweeps never guess what a part names (cleanOrphans fails), and keep
// them; and an operator who deleted them by hand would lose the data a
// restored part names.
func TestVerifyPartitionDoesNotCountTheObjectsOfAMissingPartAsUnnamed(t *testing.T) {
	e := spilledVerifyEnv(t)
	sp := e.m.Spills[0]
	deleteObject(t, e.b, e.spillKey(sp))
	v := e.mustVerify(t, nil, VerifyOptions{})
	requireProblems(t, v, wantProblem{e.spillKey(sp), sp.BaseOffset, sp.NextOffset, "missing"})
	if v.Unnamed != 0 {
		t.Errorf("the %d objects of the missing part's %d segments count as unnamed (%d bytes; the part's segments hold %d)", v.Unnamed, sp.Count, v.UnnamedBytes, sp.Bytes)
	}
}

// Retention that trims the first spilled part while the verification
// runs writes a new part naming the same (later) entries: real damage to
// one of them is still damage.
func TestVerifyPartitionKeepsDamageInAPartRetentionTrimmedMeanwhile(t *testing.T) {
	e := spilledVerifyEnv(t)
	damaged := e.segs[2] // in the first part, which retention trims
	deleteObject(t, e.b, e.segKey(damaged))
	h := &getHook{Bucket: e.b, suffix: ".indexes", hook: func(string) {
		m := e.dropFirst(t)
		if m.Spills[0].ID == e.m.Spills[0].ID || m.Spills[0].BaseOffset != e.segs[1].BaseOffset {
			t.Errorf("the first part was not trimmed: %+v", m.Spills[0])
		}
	}}
	v := e.mustVerify(t, h, VerifyOptions{})
	if h.fired != 1 {
		t.Fatal("retention did not run")
	}
	requireProblems(t, v, segProblem(e, damaged, "segment object is missing"))
}

// A scrub in stretches: MaxReadBytes ends a deep run after the segment
// that reached it, Next says where to go on, From goes on from there, and
// the stretches check every segment once, reporting the damage in each,
// with no object counted unnamed.
func TestVerifyPartitionInStretches(t *testing.T) {
	base := spilledVerifyEnv(t)
	e := base.clone(t)
	damaged := []Segment{e.segs[5], e.segs[len(e.segs)/2], e.own()}
	for _, s := range damaged {
		data := readObject(t, e.b, e.segKey(s))
		data[len(data)-20] ^= 0x08
		putObject(t, e.b, e.segKey(s), data)
	}
	budget := e.m.Bytes() / 7
	from, runs, segments := int64(0), 0, 0
	var bytes, read int64
	var found []Problem
	for {
		runs++
		if runs > 100 {
			t.Fatal("the stretches do not end")
		}
		v := e.mustVerify(t, nil, VerifyOptions{Deep: true, From: from, MaxReadBytes: budget})
		if v.Unnamed != 0 {
			t.Fatalf("run %d from %d: %d unnamed objects", runs, from, v.Unnamed)
		}
		if v.Start != e.m.Start() || v.End != e.m.End() {
			t.Fatalf("run %d: [%d, %d)", runs, v.Start, v.End)
		}
		segments += v.Segments
		bytes += v.Bytes
		read += v.ReadBytes
		found = append(found, v.Problems...)
		if v.Complete {
			if v.Next != e.m.End() {
				t.Fatalf("complete at %d, the log ends at %d", v.Next, e.m.End())
			}
			break
		}
		// A stretch reads its budget and at most one segment more.
		if v.ReadBytes < budget || v.Next <= from {
			t.Fatalf("run %d from %d: read %d of %d, next %d", runs, from, v.ReadBytes, budget, v.Next)
		}
		from = v.Next
	}
	if runs < 5 || segments != len(e.segs) || bytes != e.m.Bytes() || read != e.m.Bytes() {
		t.Fatalf("%d runs checked %d segments of %d bytes (read %d); the log has %d of %d", runs, segments, bytes, read, len(e.segs), e.m.Bytes())
	}
	requireProblems(t, &Verification{Problems: found}, segProblem(e, damaged[0], ""), segProblem(e, damaged[1], ""), segProblem(e, damaged[2], ""))
}

// From leaves out the segments that end at or below it, spilled or not:
// their damage is for another run.
func TestVerifyPartitionFrom(t *testing.T) {
	base := spilledVerifyEnv(t)
	e := base.clone(t)
	early, late := e.segs[3], e.segs[len(e.segs)-3]
	deleteObject(t, e.b, e.compKey(early))
	deleteObject(t, e.b, e.segKey(late))
	for _, deep := range []bool{false, true} {
		v := e.mustVerify(t, nil, VerifyOptions{Deep: deep, From: early.NextOffset})
		requireProblems(t, v, segProblem(e, late, "missing"))
		want := len(e.segs) - 4
		if v.Segments != want || !v.Complete || v.Next != e.m.End() || v.Unnamed != 0 {
			t.Fatalf("deep %v: %d segments (want %d), complete %v, next %d, %d unnamed", deep, v.Segments, want, v.Complete, v.Next, v.Unnamed)
		}
		// From inside an entry checks it.
		v = e.mustVerify(t, nil, VerifyOptions{Deep: deep, From: early.NextOffset - 1})
		requireProblems(t, v, compProblem(e, early, "missing"), segProblem(e, late, "missing"))
	}
}

// A run from the end of the log checks nothing and finds nothing: in
// particular no object of the log is "unnamed" (the leader's sweeps do not
// delete them).
func TestVerifyPartitionFromTheEnd(t *testing.T) {
	log, _ := testLog(t, 2000, 40)
	e := newVerifyEnv(t, log)
	v := e.mustVerify(t, nil, VerifyOptions{Deep: true, From: e.m.End()})
	requireProblems(t, v)
	if v.Segments != 0 || !v.Complete || v.Next != e.m.End() {
		t.Fatalf("%d segments, complete %v, next %d", v.Segments, v.Complete, v.Next)
	}
	if v.Unnamed != 0 {
		t.Fatalf("%d objects (%d bytes) of the log counted unnamed", v.Unnamed, v.UnnamedBytes)
	}
}
