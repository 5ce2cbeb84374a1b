package tiering

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/shale-log/shale/localseg"
	"github.com/shale-log/shale/localseg/recordbatch"
	"github.com/shale-log/shale/objectstore"
)

var errInjected = errors.New("injected fault")

// faultyBucket wraps a bucket with kfake-style fault budgets: each rule
// fails the next N matching calls, before or after the call takes effect,
// and counts what fired.
type faultyBucket struct {
	objectstore.Bucket
	mu    sync.Mutex
	rules []*fault
	gets  int
	// putGate, when set, is called before every Put (a test holds an
	// upload there).
	putGate func(key string)
}

type fault struct {
	op    string // "put", "get", "head", "delete", "list"
	match string // substring of the key
	after bool   // fail after the call took effect (a lost response)
	n     int
	fired int
}

func (f *faultyBucket) add(r *fault) *fault {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rules = append(f.rules, r)
	return r
}

func (f *faultyBucket) check(op, key string, after bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, r := range f.rules {
		if r.op == op && r.after == after && r.n > 0 && strings.Contains(key, r.match) {
			r.n--
			r.fired++
			return errInjected
		}
	}
	return nil
}

func (f *faultyBucket) Put(ctx context.Context, key string, r io.Reader, size int64, opts objectstore.PutOptions) (objectstore.Attrs, error) {
	if f.putGate != nil {
		f.putGate(key)
	}
	if err := f.check("put", key, false); err != nil {
		return objectstore.Attrs{}, err
	}
	a, err := f.Bucket.Put(ctx, key, r, size, opts)
	if err == nil {
		err = f.check("put", key, true)
	}
	return a, err
}

func (f *faultyBucket) Get(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
	f.mu.Lock()
	f.gets++
	f.mu.Unlock()
	if err := f.check("get", key, false); err != nil {
		return nil, err
	}
	return f.Bucket.Get(ctx, key, off, n)
}

func (f *faultyBucket) Head(ctx context.Context, key string) (objectstore.Attrs, error) {
	if err := f.check("head", key, false); err != nil {
		return objectstore.Attrs{}, err
	}
	return f.Bucket.Head(ctx, key)
}

func (f *faultyBucket) Delete(ctx context.Context, key string) error {
	if err := f.check("delete", key, false); err != nil {
		return err
	}
	return f.Bucket.Delete(ctx, key)
}

// DeleteMany fails the keys a "delete" rule matches (before the call:
// they stay) and deletes the others.
func (f *faultyBucket) DeleteMany(ctx context.Context, keys []string) ([]string, error) {
	var failed, rest []string
	for _, k := range keys {
		if f.check("delete", k, false) != nil {
			failed = append(failed, k)
		} else {
			rest = append(rest, k)
		}
	}
	innerFailed, err := f.Bucket.DeleteMany(ctx, rest)
	if len(failed) > 0 {
		err = errInjected
	}
	return append(failed, innerFailed...), err
}

func (f *faultyBucket) getCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.gets
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// testBatch builds a batch of n records of size bytes each, timestamped ts.
func testBatch(t testing.TB, n, size int, ts int64) localseg.Batch {
	t.Helper()
	recs := make([]recordbatch.Record, n)
	for i := range recs {
		recs[i] = recordbatch.Record{TimestampDelta: int64(i), Value: bytes.Repeat([]byte{byte('a' + i%26)}, size)}
	}
	b, err := recordbatch.Build(nil, recordbatch.BuildOptions{ProducerID: -1, ProducerEpoch: -1, BaseSequence: -1, BaseTimestamp: ts}, recs)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// testLog opens a local log with small segments and appends batches
// batches of one record each; it returns the log and every batch's bytes
// as stored.
func testLog(t testing.TB, segmentBytes int64, batches int) (*localseg.Log, [][]byte) {
	t.Helper()
	l, err := localseg.Open(t.TempDir(), localseg.Config{SegmentBytes: segmentBytes, IndexIntervalBytes: 1, RetentionMs: -1, FileDeleteDelayMs: 1},
		localseg.Options{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	var out [][]byte
	for i := 0; i < batches; i++ {
		b := testBatch(t, 1+i%3, 200, int64(1_700_000_000_000+i))
		if _, err := l.AppendAsLeader(b, int32(i/10)); err != nil {
			t.Fatal(err)
		}
		out = append(out, append([]byte(nil), b...))
	}
	return l, out
}

var testPartition = Partition{Topic: "events", TopicID: [16]byte{1, 2, 3}, Index: 0}

// loadedStore is the test partition's manifest store in b, loaded, and
// its layout.
func loadedStore(t testing.TB, b objectstore.Bucket) (*ManifestStore, Layout) {
	t.Helper()
	l := Layout{Prefix: "archive"}
	ms := NewManifestStore(b, l.ManifestKey(testPartition), nil)
	if _, err := ms.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	return ms, l
}

func newTestArchiver(t testing.TB, b objectstore.Bucket, src Source) (*Archiver, *ManifestStore) {
	t.Helper()
	ms, l := loadedStore(t, b)
	return NewArchiver(ArchiverConfig{Bucket: b, Layout: l, Partition: testPartition, Manifest: ms, Source: src, Logger: quietLogger()}), ms
}

// uploadAll uploads every sealed segment below limit.
func uploadAll(t testing.TB, a *Archiver, epoch int32, limit int64) int {
	t.Helper()
	n := 0
	for {
		k, err := a.UploadNext(context.Background(), epoch, limit)
		if err != nil {
			t.Fatal(err)
		}
		if k == 0 {
			return n
		}
		n += k
	}
}

// requireManifestIsTheLog fails t unless each segment m names has the
// offsets of the local segment at its place, and the bucket holds objects
// segment objects.
func requireManifestIsTheLog(t *testing.T, m *Manifest, segs []localseg.SegmentInfo, b objectstore.Bucket, objects int) {
	t.Helper()
	for i, s := range m.Segments {
		if s.BaseOffset != segs[i].BaseOffset || s.NextOffset != segs[i].NextOffset {
			t.Fatalf("manifest segment %d is [%d, %d), local [%d, %d)", i, s.BaseOffset, s.NextOffset, segs[i].BaseOffset, segs[i].NextOffset)
		}
	}
	if keys := listKeys(t, b, ".log"); len(keys) != objects {
		t.Fatalf("%d segment objects, want %d (the manifest names %d)", len(keys), objects, len(m.Segments))
	}
}
