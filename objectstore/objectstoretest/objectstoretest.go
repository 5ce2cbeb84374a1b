// Package objectstoretest is the conformance suite every objectstore
// backend passes: Run(t, newBucket) checks the contract written in the
// objectstore package's doc comments, on a fresh bucket per subtest.
package objectstoretest

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shale-log/shale/objectstore"
)

// LargeSize is the size of the object the suite stores to exercise
// multipart uploads: above the S3 backend's multipart threshold when it
// is configured with the 5 MiB minimum part size and multipart uploads
// from there.
const LargeSize = 12<<20 + 12345

// Run runs the suite. newBucket returns an empty bucket; it is called
// once per subtest and the bucket is closed by the suite.
func Run(t *testing.T, newBucket func(t *testing.T) objectstore.Bucket) {
	for _, tc := range []struct {
		name string
		fn   func(t *testing.T, b objectstore.Bucket)
	}{
		{"PutGet", testPutGet},
		{"PutReturnsAttrsHeadAgrees", testPutAttrs},
		{"PutReplacesAndChangesETag", testPutReplaces},
		{"EmptyObject", testEmptyObject},
		{"GetRange", testGetRange},
		{"GetRangeStartingPastEnd", testGetPastEnd},
		{"GetMissing", testGetMissing},
		{"HeadMissing", testHeadMissing},
		{"PutShortReaderStoresNothing", testPutShort},
		{"PutLongReaderStoresNothing", testPutLong},
		{"LargePutWithBadReaderStoresNothing", testPutLargeShort},
		{"PutReaderErrorStoresNothing", testPutReaderError},
		{"ListByPrefix", testListPrefix},
		{"ListPaginates", testListPaginates},
		{"ListStopsOnCallbackError", testListStops},
		{"ListAfter", testListAfter},
		{"ListAfterPaginates", testListAfterPaginates},
		{"ListDirs", testListDirs},
		{"ListDirsPaginates", testListDirsPaginates},
		{"KeyThatIsAPrefixOfAnother", testKeyPrefixOfAnother},
		{"UnicodeKeys", testUnicodeKeys},
		{"DeleteIsIdempotent", testDelete},
		{"DeleteMany", testDeleteMany},
		{"DeleteManyPaginates", testDeleteManyPaginates},
		{"IfNoneMatch", testIfNoneMatch},
		{"IfMatch", testIfMatch},
		{"InvalidKeys", testInvalidKeys},
		{"LargeObject", testLarge},
		{"ConcurrentIfNoneMatchOneWinner", testConcurrentCreate},
		{"ConcurrentIfMatchNoLostUpdate", testConcurrentCAS},
		{"ReadersSeeWholeVersions", testAtomicReplace},
		{"CanceledContext", testCanceled},
		{"GatedGetReadsTheSameBytes", testGatedGet},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBucket(t)
			t.Cleanup(func() { b.Close() })
			tc.fn(t, b)
		})
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return c
}

func put(t *testing.T, b objectstore.Bucket, key string, data []byte) objectstore.Attrs {
	t.Helper()
	a, err := b.Put(ctx(t), key, bytes.NewReader(data), int64(len(data)), objectstore.PutOptions{})
	if err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
	return a
}

// get reads a range; a backend may report an error from Get or from the
// body's first read (MinIO reports a missing object only then).
func get(t *testing.T, b objectstore.Bucket, key string, off, length int64) ([]byte, error) {
	t.Helper()
	body, err := b.Get(ctx(t), key, off, length)
	if err != nil {
		return nil, err
	}
	defer body.Close()
	return io.ReadAll(body)
}

func mustGet(t *testing.T, b objectstore.Bucket, key string, off, length int64) []byte {
	t.Helper()
	data, err := get(t, b, key, off, length)
	if err != nil {
		t.Fatalf("get %s [%d,+%d): %v", key, off, length, err)
	}
	return data
}

func listKeys(t *testing.T, b objectstore.Bucket, prefix string) []string {
	t.Helper()
	keys := []string{}
	if err := b.List(ctx(t), prefix, func(a objectstore.Attrs) error {
		keys = append(keys, a.Key)
		return nil
	}); err != nil {
		t.Fatalf("list %q: %v", prefix, err)
	}
	return keys
}

func randBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	p := make([]byte, n+8)
	for i := 0; i < n; i += 8 {
		binary.LittleEndian.PutUint64(p[i:], r.Uint64())
	}
	return p[:n:n]
}

func testPutGet(t *testing.T, b objectstore.Bucket) {
	data := randBytes(1, 1000)
	put(t, b, "dir/obj", data)
	if got := mustGet(t, b, "dir/obj", 0, -1); !bytes.Equal(got, data) {
		t.Fatalf("got %d bytes back, not what was put", len(got))
	}
}

func testPutAttrs(t *testing.T, b objectstore.Bucket) {
	before := time.Now().Add(-time.Minute)
	a := put(t, b, "k", []byte("hello"))
	if a.Key != "k" || a.Size != 5 || a.ETag == "" {
		t.Fatalf("put attrs %+v", a)
	}
	h, err := b.Head(ctx(t), "k")
	if err != nil {
		t.Fatal(err)
	}
	if h.Key != "k" || h.Size != 5 || h.ETag != a.ETag {
		t.Fatalf("head %+v after put %+v", h, a)
	}
	if h.LastModified.Before(before) || h.LastModified.After(time.Now().Add(time.Minute)) {
		t.Fatalf("last modified %v", h.LastModified)
	}
}

func testPutReplaces(t *testing.T, b objectstore.Bucket) {
	a1 := put(t, b, "k", []byte("one"))
	a2 := put(t, b, "k", []byte("two!"))
	if a1.ETag == a2.ETag {
		t.Fatalf("etag %s unchanged by a replacing put", a1.ETag)
	}
	if got := mustGet(t, b, "k", 0, -1); string(got) != "two!" {
		t.Fatalf("got %q", got)
	}
	if h, err := b.Head(ctx(t), "k"); err != nil || h.Size != 4 || h.ETag != a2.ETag {
		t.Fatalf("head %+v %v", h, err)
	}
}

func testEmptyObject(t *testing.T, b objectstore.Bucket) {
	a := put(t, b, "empty", nil)
	if a.Size != 0 {
		t.Fatalf("size %d", a.Size)
	}
	for _, r := range [][2]int64{{0, -1}, {0, 10}, {0, 0}} {
		if got := mustGet(t, b, "empty", r[0], r[1]); len(got) != 0 {
			t.Fatalf("range %v: %d bytes", r, len(got))
		}
	}
	if _, err := get(t, b, "empty", 1, -1); !errors.Is(err, objectstore.ErrInvalidRange) {
		t.Fatalf("get from 1 of an empty object: %v, want ErrInvalidRange", err)
	}
	if keys := listKeys(t, b, ""); len(keys) != 1 || keys[0] != "empty" {
		t.Fatalf("list %v", keys)
	}
}

func testGetRange(t *testing.T, b objectstore.Bucket) {
	data := randBytes(2, 100)
	put(t, b, "r", data)
	for _, r := range [][2]int64{{0, 1}, {0, 100}, {10, 20}, {99, 1}, {99, -1}, {50, -1}, {90, 50}, {0, 1000}, {42, 0}, {10, math.MaxInt64}, {99, math.MaxInt64 - 98}} {
		off, n := r[0], r[1]
		end := int64(len(data))
		if n >= 0 && n < end-off {
			end = off + n
		}
		if got := mustGet(t, b, "r", off, n); !bytes.Equal(got, data[off:end]) {
			t.Fatalf("range [%d,+%d): %d bytes, want %d", off, n, len(got), end-off)
		}
	}
}

func testGetPastEnd(t *testing.T, b objectstore.Bucket) {
	put(t, b, "r", randBytes(3, 100))
	for _, r := range [][2]int64{{100, -1}, {100, 1}, {101, 5}, {1 << 40, 1}, {-1, 5}, {-1, -1}} {
		if _, err := get(t, b, "r", r[0], r[1]); !errors.Is(err, objectstore.ErrInvalidRange) {
			t.Fatalf("range %v: %v, want ErrInvalidRange", r, err)
		}
	}
}

func testGetMissing(t *testing.T, b objectstore.Bucket) {
	for _, r := range [][2]int64{{0, -1}, {0, 10}, {5, 10}} {
		if _, err := get(t, b, "missing/key", r[0], r[1]); !errors.Is(err, objectstore.ErrNotFound) {
			t.Fatalf("get missing %v: %v, want ErrNotFound", r, err)
		}
	}
}

func testHeadMissing(t *testing.T, b objectstore.Bucket) {
	if _, err := b.Head(ctx(t), "missing"); !errors.Is(err, objectstore.ErrNotFound) {
		t.Fatalf("head missing: %v, want ErrNotFound", err)
	}
}

// putFails checks a Put from r fails and leaves key as before (absent or
// holding prev).
func putFails(t *testing.T, b objectstore.Bucket, key string, r io.Reader, size int64, prev []byte) {
	t.Helper()
	if _, err := b.Put(ctx(t), key, r, size, objectstore.PutOptions{}); err == nil {
		t.Fatalf("put of a bad reader succeeded")
	}
	got, err := get(t, b, key, 0, -1)
	switch {
	case prev == nil && !errors.Is(err, objectstore.ErrNotFound):
		t.Fatalf("after a failed put: %d bytes, %v; want ErrNotFound", len(got), err)
	case prev != nil && (err != nil || !bytes.Equal(got, prev)):
		t.Fatalf("after a failed put: %d bytes, %v; want the previous %d", len(got), err, len(prev))
	}
}

func testPutShort(t *testing.T, b objectstore.Bucket) {
	putFails(t, b, "short", bytes.NewReader(make([]byte, 99)), 100, nil)
	prev := []byte("previous")
	put(t, b, "short", prev)
	putFails(t, b, "short", bytes.NewReader(make([]byte, 99)), 100, prev)
}

// A large put (multipart on S3) whose reader ends one byte early or
// breaks midway stores nothing.
func testPutLargeShort(t *testing.T, b objectstore.Bucket) {
	data := randBytes(5, LargeSize)
	putFails(t, b, "large-short", bytes.NewReader(data[:LargeSize-1]), LargeSize, nil)
	putFails(t, b, "large-short", &errReader{r: bytes.NewReader(data), after: LargeSize / 2}, LargeSize, nil)
	putFails(t, b, "large-short", bytes.NewReader(append(data, 0)), LargeSize, nil)
}

func testPutLong(t *testing.T, b objectstore.Bucket) {
	putFails(t, b, "long", bytes.NewReader(make([]byte, 101)), 100, nil)
	putFails(t, b, "long", bytes.NewReader(make([]byte, 1)), 0, nil)
	putFails(t, b, "long", bytes.NewReader(nil), -1, nil)
}

type errReader struct {
	r     io.Reader
	after int
}

func (e *errReader) Read(p []byte) (int, error) {
	if e.after <= 0 {
		return 0, errors.New("reader broke")
	}
	if len(p) > e.after {
		p = p[:e.after]
	}
	n, err := e.r.Read(p)
	e.after -= n
	return n, err
}

func testPutReaderError(t *testing.T, b objectstore.Bucket) {
	putFails(t, b, "broken", &errReader{r: bytes.NewReader(make([]byte, 1000)), after: 500}, 1000, nil)
	putFails(t, b, "broken", &errReader{r: bytes.NewReader(nil)}, 0, nil)
}

func testListPrefix(t *testing.T, b objectstore.Bucket) {
	for _, k := range []string{"b", "a/2", "ab", "a/1", "a/sub/x", "c/d"} {
		put(t, b, k, []byte(k))
	}
	for _, tc := range []struct {
		prefix string
		want   string
	}{
		{"", "[a/1 a/2 a/sub/x ab b c/d]"},
		{"a", "[a/1 a/2 a/sub/x ab]"},
		{"a/", "[a/1 a/2 a/sub/x]"},
		{"a/s", "[a/sub/x]"},
		{"a/sub/x", "[a/sub/x]"},
		{"b", "[b]"},
		{"c/", "[c/d]"},
		{"d", "[]"},
		{"a/3", "[]"},
		{"zz/", "[]"},
	} {
		if got := fmt.Sprint(listKeys(t, b, tc.prefix)); got != tc.want {
			t.Errorf("list %q: %s, want %s", tc.prefix, got, tc.want)
		}
	}
	var sizes []int64
	if err := b.List(ctx(t), "a/", func(a objectstore.Attrs) error {
		sizes = append(sizes, a.Size)
		if a.ETag == "" {
			return fmt.Errorf("%s: no etag", a.Key)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(sizes) != "[3 3 7]" {
		t.Fatalf("sizes %v", sizes)
	}
}

// putNumbered puts empty objects under the keys keys(i) gives for i in
// [0, n), 16 at a time.
func putNumbered(t *testing.T, b objectstore.Bucket, n int, keys func(i int) []string) {
	t.Helper()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			for _, k := range keys(i) {
				if _, err := b.Put(ctx(t), k, bytes.NewReader(nil), 0, objectstore.PutOptions{}); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
}

func testListPaginates(t *testing.T, b objectstore.Bucket) {
	const n = 1100 // above S3's 1000-key page
	putNumbered(t, b, n, func(i int) []string { return []string{fmt.Sprintf("p/%05d", i)} })
	put(t, b, "q", nil)
	keys := listKeys(t, b, "p/")
	if len(keys) != n {
		t.Fatalf("listed %d keys, want %d", len(keys), n)
	}
	for i, k := range keys {
		if want := fmt.Sprintf("p/%05d", i); k != want {
			t.Fatalf("key %d is %s, want %s", i, k, want)
		}
	}
}

func testListStops(t *testing.T, b objectstore.Bucket) {
	for i := range 5 {
		put(t, b, "s/"+strconv.Itoa(i), nil)
	}
	stop := errors.New("stop")
	calls := 0
	err := b.List(ctx(t), "s/", func(objectstore.Attrs) error {
		calls++
		if calls == 2 {
			return stop
		}
		return nil
	})
	if err != stop || calls != 2 {
		t.Fatalf("list returned %v after %d calls, want the callback's error after 2", err, calls)
	}
}

func listAfter(t *testing.T, b objectstore.Bucket, prefix, after string) []string {
	t.Helper()
	keys := []string{}
	if err := b.ListAfter(ctx(t), prefix, after, func(a objectstore.Attrs) error {
		keys = append(keys, a.Key)
		return nil
	}); err != nil {
		t.Fatalf("list %q after %q: %v", prefix, after, err)
	}
	return keys
}

// testListAfter: ListAfter lists the keys under the prefix greater than
// after, byte by byte, whether after is a key, a directory's name, or
// outside the prefix; "" lists what List lists; a callback's error stops
// it. Keys embedding zero-padded numbers sort by number, and before those
// starting with a letter: a segment's base offset is the after that
// lists the segments from it on.
func testListAfter(t *testing.T, b objectstore.Bucket) {
	const (
		seg7   = "p/00000000000000000007-f00.log"
		seg42  = "p/00000000000000000042-abc.log"
		seg100 = "p/00000000000000000100-def.log"
		man    = "p/manifest.json"
		spill  = "p/spill-00000000000000000100.json"
	)
	for _, k := range []string{"a/1", "a/3", "a/5", "a/sub/x", "b", seg100, man, seg7, spill, seg42} {
		put(t, b, k, []byte(k))
	}
	aAll := "[a/1 a/3 a/5 a/sub/x]"
	pAll := fmt.Sprint([]string{seg7, seg42, seg100, man, spill})
	for _, tc := range []struct {
		prefix, after string
		want          string
	}{
		{"a/", "", aAll},
		{"a/", "a/2", "[a/3 a/5 a/sub/x]"},
		{"a/", "a/3", "[a/5 a/sub/x]"},
		{"a/", "a/0", aAll},
		{"a/", "a/", aAll},
		{"a/", "a/sub", "[a/sub/x]"},
		{"a/", "a/sub/", "[a/sub/x]"},
		{"a/", "a/sub/a", "[a/sub/x]"},
		{"a/", "a/sub/x", "[]"},
		{"a/", "a/t", "[]"},
		{"a/", "a/zzz", "[]"},
		{"a/", "0", aAll},
		{"a/", "a", aAll},
		{"a/", "a.", aAll}, // '.' < '/'
		{"a/", "a0", "[]"}, // '0' > '/'
		{"a/", "b", "[]"},
		{"a/s", "a/1", "[a/sub/x]"},
		{"", "a/5", fmt.Sprint([]string{"a/sub/x", "b", seg7, seg42, seg100, man, spill})},
		{"", "b", pAll},
		{"", "p/zzz", "[]"},
		{"p/", "", pAll},
		{"p/", "p/00000000000000000007", pAll},
		{"p/", seg7, fmt.Sprint([]string{seg42, seg100, man, spill})},
		{"p/", "p/00000000000000000042", fmt.Sprint([]string{seg42, seg100, man, spill})},
		{"p/", "p/00000000000000000043", fmt.Sprint([]string{seg100, man, spill})},
		{"p/", "p/00000000000000000101", fmt.Sprint([]string{man, spill})},
		{"p/", "p/9", fmt.Sprint([]string{man, spill})},
		{"p/", man, fmt.Sprint([]string{spill})},
		{"p/0", "p/00000000000000000042", fmt.Sprint([]string{seg42, seg100})},
		{"q/", "", "[]"},
		{"q/", "a", "[]"},
	} {
		if got := fmt.Sprint(listAfter(t, b, tc.prefix, tc.after)); got != tc.want {
			t.Errorf("list %q after %q: %s, want %s", tc.prefix, tc.after, got, tc.want)
		}
	}
	// After "": what List lists, attributes included.
	attrs := func(list func(fn func(objectstore.Attrs) error) error) string {
		var s []string
		if err := list(func(a objectstore.Attrs) error {
			s = append(s, fmt.Sprintf("%s %d %s %d", a.Key, a.Size, a.ETag, a.LastModified.UnixNano()))
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return strings.Join(s, "\n")
	}
	for _, prefix := range []string{"", "a", "a/", "a/sub/x", "p/0", "q"} {
		listed := attrs(func(fn func(objectstore.Attrs) error) error { return b.List(ctx(t), prefix, fn) })
		after := attrs(func(fn func(objectstore.Attrs) error) error { return b.ListAfter(ctx(t), prefix, "", fn) })
		if after != listed {
			t.Errorf("list %q after \"\":\n%s\nlist:\n%s", prefix, after, listed)
		}
	}
	stop := errors.New("stop")
	var called []string
	err := b.ListAfter(ctx(t), "", "a/3", func(a objectstore.Attrs) error {
		called = append(called, a.Key)
		if len(called) == 2 {
			return stop
		}
		return nil
	})
	if err != stop || fmt.Sprint(called) != "[a/5 a/sub/x]" {
		t.Fatalf("list after returned %v after calls for %v, want the callback's error after [a/5 a/sub/x]", err, called)
	}
}

// testListAfterPaginates: more keys after after than a page of keys.
func testListAfterPaginates(t *testing.T, b objectstore.Bucket) {
	const skipped, n = 100, 1100 // n above S3's 1000-key page
	putNumbered(t, b, skipped+n, func(i int) []string { return []string{fmt.Sprintf("p/%05d", i)} })
	put(t, b, "q", nil)
	keys := listAfter(t, b, "p/", fmt.Sprintf("p/%05d", skipped-1))
	if len(keys) != n {
		t.Fatalf("listed %d keys, want %d", len(keys), n)
	}
	for i, k := range keys {
		if want := fmt.Sprintf("p/%05d", skipped+i); k != want {
			t.Fatalf("key %d is %s, want %s", i, k, want)
		}
	}
}

func listDirs(t *testing.T, b objectstore.Bucket, prefix string) []string {
	t.Helper()
	dirs := []string{}
	if err := b.ListDirs(ctx(t), prefix, func(d string) error {
		dirs = append(dirs, d)
		return nil
	}); err != nil {
		t.Fatalf("list dirs %q: %v", prefix, err)
	}
	return dirs
}

// testListDirs: a directory is named once however many objects it holds,
// at any depth, in key order ("a-b/" before "a/"); a key without a "/"
// after the prefix names none; an emptied directory is gone; a callback's
// error stops the listing.
func testListDirs(t *testing.T, b objectstore.Bucket) {
	for _, k := range []string{"top", "ab", "a/1", "a/2/x", "a/3/q/r", "a-b/y", "b/z/w", "c/d"} {
		put(t, b, k, []byte(k))
	}
	for _, tc := range []struct {
		prefix string
		want   string
	}{
		{"", "[a-b/ a/ b/ c/]"},
		{"a", "[a-b/ a/]"},
		{"a/", "[a/2/ a/3/]"},
		{"a/3/", "[a/3/q/]"},
		{"a/2/", "[]"},
		{"b/z", "[b/z/]"},
		{"top", "[]"},
		{"zz/", "[]"},
	} {
		if got := fmt.Sprint(listDirs(t, b, tc.prefix)); got != tc.want {
			t.Errorf("list dirs %q: %s, want %s", tc.prefix, got, tc.want)
		}
	}
	if err := b.Delete(ctx(t), "b/z/w"); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(listDirs(t, b, "")); got != "[a-b/ a/ c/]" {
		t.Errorf("list dirs after b/z/w is deleted: %s", got)
	}
	stop := errors.New("stop")
	calls := 0
	err := b.ListDirs(ctx(t), "", func(string) error {
		calls++
		if calls == 2 {
			return stop
		}
		return nil
	})
	if err != stop || calls != 2 {
		t.Fatalf("list dirs returned %v after %d calls, want the callback's error after 2", err, calls)
	}
}

// testListDirsPaginates: more directories than a page of keys.
func testListDirsPaginates(t *testing.T, b objectstore.Bucket) {
	const n = 1100 // above S3's 1000-key page
	putNumbered(t, b, n, func(i int) []string { return []string{fmt.Sprintf("p/%05d/x", i), fmt.Sprintf("p/%05d/y/z", i)} })
	dirs := listDirs(t, b, "p/")
	if len(dirs) != n {
		t.Fatalf("listed %d directories, want %d", len(dirs), n)
	}
	for i, d := range dirs {
		if want := fmt.Sprintf("p/%05d/", i); d != want {
			t.Fatalf("directory %d is %s, want %s", i, d, want)
		}
	}
}

// testKeyPrefixOfAnother stores "x" beside "x/y". Layouts stay
// prefix-free, since backends differ: S3 stores both (though MinIO lists
// only "x"), the filesystem refuses the second with ErrInvalidKey. What
// every backend must do: either store it or refuse it, and never harm
// the first.
func testKeyPrefixOfAnother(t *testing.T, b objectstore.Bucket) {
	for _, pair := range [][2]string{{"x", "x/y"}, {"q/r", "q"}} {
		first, second := pair[0], pair[1]
		put(t, b, first, []byte("first"))
		_, err := b.Put(ctx(t), second, strings.NewReader("second"), 6, objectstore.PutOptions{})
		switch {
		case err == nil:
			if got := mustGet(t, b, second, 0, -1); string(got) != "second" {
				t.Fatalf("%s: %q", second, got)
			}
			if err := b.Delete(ctx(t), second); err != nil {
				t.Fatal(err)
			}
			if _, err := b.Head(ctx(t), second); !errors.Is(err, objectstore.ErrNotFound) {
				t.Fatalf("%s after delete: %v", second, err)
			}
		case errors.Is(err, objectstore.ErrInvalidKey):
			if _, err := b.Head(ctx(t), second); !errors.Is(err, objectstore.ErrNotFound) {
				t.Fatalf("%s after a refused put: %v", second, err)
			}
			if err := b.Delete(ctx(t), second); err != nil {
				t.Fatalf("delete %s after a refused put: %v", second, err)
			}
		default:
			t.Fatalf("put %s beside %s: %v", second, first, err)
		}
		if got := mustGet(t, b, first, 0, -1); string(got) != "first" {
			t.Fatalf("%s beside %s: %q", first, second, got)
		}
	}
}

func testUnicodeKeys(t *testing.T, b objectstore.Bucket) {
	keys := []string{"topic-é/0/ü.log", "sp ace/%25/a+b=c", "東京/1", "a!b'c(d)*e~f"}
	for _, k := range keys {
		put(t, b, k, []byte(k))
	}
	for _, k := range keys {
		if got := mustGet(t, b, k, 0, -1); string(got) != k {
			t.Fatalf("%s: %q", k, got)
		}
	}
	if got := listKeys(t, b, "topic-é/"); fmt.Sprint(got) != "[topic-é/0/ü.log]" {
		t.Fatalf("list: %v", got)
	}
	if got := listKeys(t, b, ""); len(got) != len(keys) {
		t.Fatalf("list: %v", got)
	}
}

func testDelete(t *testing.T, b objectstore.Bucket) {
	put(t, b, "d/1", []byte("x"))
	put(t, b, "d/2", []byte("y"))
	for range 2 {
		if err := b.Delete(ctx(t), "d/1"); err != nil {
			t.Fatalf("delete: %v", err)
		}
	}
	if err := b.Delete(ctx(t), "never/was"); err != nil {
		t.Fatalf("delete missing: %v", err)
	}
	if _, err := b.Head(ctx(t), "d/1"); !errors.Is(err, objectstore.ErrNotFound) {
		t.Fatalf("head after delete: %v", err)
	}
	if got := fmt.Sprint(listKeys(t, b, "d/")); got != "[d/2]" {
		t.Fatalf("list after delete: %s", got)
	}
	put(t, b, "d/1", []byte("again"))
	if got := mustGet(t, b, "d/1", 0, -1); string(got) != "again" {
		t.Fatalf("%q", got)
	}
}

func deleteMany(t *testing.T, b objectstore.Bucket, keys ...string) {
	t.Helper()
	if failed, err := b.DeleteMany(ctx(t), keys); len(failed) != 0 || err != nil {
		t.Fatalf("delete %d keys: %q failed, %v", len(keys), failed, err)
	}
}

// testDeleteMany: the keys given go, missing or given twice alike, and
// only they; no keys is no call; a key CheckKey refuses fails alone, the
// keys beside it go; a canceled call fails every key and deletes none.
func testDeleteMany(t *testing.T, b objectstore.Bucket) {
	for i := range 10 {
		put(t, b, fmt.Sprintf("m/%d", i), []byte{byte(i)})
	}
	deleteMany(t, b, "m/1", "m/3", "never/was", "m/5", "m/3", "m/7")
	if got := fmt.Sprint(listKeys(t, b, "m/")); got != "[m/0 m/2 m/4 m/6 m/8 m/9]" {
		t.Fatalf("after deleting m/1, m/3, m/5 and m/7: %s", got)
	}
	deleteMany(t, b)
	deleteMany(t, b, []string{}...)
	failed, err := b.DeleteMany(ctx(t), []string{"m/0", "a//b", "m/2"})
	if fmt.Sprint(failed) != "[a//b]" || !errors.Is(err, objectstore.ErrInvalidKey) {
		t.Fatalf("delete m/0, a//b, m/2: %q failed, %v; want a//b alone, ErrInvalidKey", failed, err)
	}
	if got := fmt.Sprint(listKeys(t, b, "m/")); got != "[m/4 m/6 m/8 m/9]" {
		t.Fatalf("after deleting m/0 and m/2 beside an invalid key: %s", got)
	}
	c, cancel := context.WithCancel(context.Background())
	cancel()
	failed, err = b.DeleteMany(c, []string{"m/4", "m/6"})
	if fmt.Sprint(failed) != "[m/4 m/6]" || !errors.Is(err, context.Canceled) {
		t.Fatalf("delete with a canceled context: %q failed, %v; want both, context.Canceled", failed, err)
	}
	if got := fmt.Sprint(listKeys(t, b, "m/")); got != "[m/4 m/6 m/8 m/9]" {
		t.Fatalf("after a canceled delete: %s", got)
	}
}

// testDeleteManyPaginates: more keys than S3 takes in a request, in one
// call.
func testDeleteManyPaginates(t *testing.T, b objectstore.Bucket) {
	const n = 2500 // two full DeleteObjects requests and a part
	key := func(i int) string { return fmt.Sprintf("p/%05d", i) }
	putNumbered(t, b, n, func(i int) []string { return []string{key(i)} })
	put(t, b, "q", nil)
	keys := make([]string, n)
	for i := range keys {
		keys[i] = key(i)
	}
	deleteMany(t, b, keys...)
	if got := fmt.Sprint(listKeys(t, b, "")); got != "[q]" {
		t.Fatalf("after deleting every p/ key: %.100s", got)
	}
}

func condPut(b objectstore.Bucket, c context.Context, key, data string, opts objectstore.PutOptions) (objectstore.Attrs, error) {
	return b.Put(c, key, bytes.NewReader([]byte(data)), int64(len(data)), opts)
}

func testIfNoneMatch(t *testing.T, b objectstore.Bucket) {
	a, err := condPut(b, ctx(t), "m", "first", objectstore.PutOptions{IfNoneMatch: true})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if _, err := condPut(b, ctx(t), "m", "second", objectstore.PutOptions{IfNoneMatch: true}); !errors.Is(err, objectstore.ErrPreconditionFailed) {
		t.Fatalf("second create: %v, want ErrPreconditionFailed", err)
	}
	if got := mustGet(t, b, "m", 0, -1); string(got) != "first" {
		t.Fatalf("after a refused create: %q", got)
	}
	if h, _ := b.Head(ctx(t), "m"); h.ETag != a.ETag {
		t.Fatalf("etag %s, want %s", h.ETag, a.ETag)
	}
	if err := b.Delete(ctx(t), "m"); err != nil {
		t.Fatal(err)
	}
	if _, err := condPut(b, ctx(t), "m", "third", objectstore.PutOptions{IfNoneMatch: true}); err != nil {
		t.Fatalf("create after delete: %v", err)
	}
}

func testIfMatch(t *testing.T, b objectstore.Bucket) {
	if _, err := condPut(b, ctx(t), "m", "x", objectstore.PutOptions{IfMatch: `"0123456789abcdef0123456789abcdef"`}); !errors.Is(err, objectstore.ErrPreconditionFailed) {
		t.Fatalf("if-match on a missing key: %v, want ErrPreconditionFailed", err)
	}
	if _, err := b.Head(ctx(t), "m"); !errors.Is(err, objectstore.ErrNotFound) {
		t.Fatalf("if-match on a missing key created it: %v", err)
	}
	a1 := put(t, b, "m", []byte("v1"))
	a2, err := condPut(b, ctx(t), "m", "v2", objectstore.PutOptions{IfMatch: a1.ETag})
	if err != nil {
		t.Fatalf("if-match current: %v", err)
	}
	if a2.ETag == a1.ETag {
		t.Fatal("etag unchanged")
	}
	if _, err := condPut(b, ctx(t), "m", "v3", objectstore.PutOptions{IfMatch: a1.ETag}); !errors.Is(err, objectstore.ErrPreconditionFailed) {
		t.Fatalf("if-match stale: %v, want ErrPreconditionFailed", err)
	}
	if got := mustGet(t, b, "m", 0, -1); string(got) != "v2" {
		t.Fatalf("after a refused replace: %q", got)
	}
	// Same content, new version: still a match on the current etag.
	if _, err := condPut(b, ctx(t), "m", "v2", objectstore.PutOptions{IfMatch: a2.ETag}); err != nil {
		t.Fatalf("if-match rewrite: %v", err)
	}
}

func testInvalidKeys(t *testing.T, b objectstore.Bucket) {
	long := string(bytes.Repeat([]byte("k"), objectstore.MaxKeyLen+1))
	for _, k := range []string{"", "/abs", "trail/", "a//b", "./a", "a/../b", "..", "nul\x00", "ctl\n", "\xff\xfe", long} {
		if _, err := b.Put(ctx(t), k, bytes.NewReader(nil), 0, objectstore.PutOptions{}); !errors.Is(err, objectstore.ErrInvalidKey) {
			t.Errorf("put %q: %v, want ErrInvalidKey", k, err)
		}
		if _, err := b.Get(ctx(t), k, 0, -1); !errors.Is(err, objectstore.ErrInvalidKey) {
			t.Errorf("get %q: %v, want ErrInvalidKey", k, err)
		}
		if _, err := b.Head(ctx(t), k); !errors.Is(err, objectstore.ErrInvalidKey) {
			t.Errorf("head %q: %v, want ErrInvalidKey", k, err)
		}
		if err := b.Delete(ctx(t), k); !errors.Is(err, objectstore.ErrInvalidKey) {
			t.Errorf("delete %q: %v, want ErrInvalidKey", k, err)
		}
	}
	if keys := listKeys(t, b, ""); len(keys) != 0 {
		t.Fatalf("invalid keys stored: %q", keys)
	}
	// A key near the limit (which a prefixing wrapper lowers by its
	// prefix's length), in segments a filesystem can name.
	ok := strings.Repeat(strings.Repeat("k", 127)+"/", 7)
	ok += strings.Repeat("k", objectstore.MaxKeyLen-64-len(ok))
	put(t, b, ok, []byte("longest"))
	if got := mustGet(t, b, ok, 0, -1); string(got) != "longest" {
		t.Fatalf("%q", got)
	}
}

func testLarge(t *testing.T, b objectstore.Bucket) {
	data := randBytes(4, LargeSize)
	a := put(t, b, "large", data)
	if a.Size != LargeSize {
		t.Fatalf("size %d", a.Size)
	}
	if got := mustGet(t, b, "large", 0, -1); !bytes.Equal(got, data) {
		t.Fatal("whole object differs")
	}
	for _, r := range [][2]int64{{5<<20 - 10, 20}, {LargeSize - 7, 100}, {1 << 20, 8 << 20}} {
		off, n := r[0], r[1]
		end := min(off+n, LargeSize)
		if got := mustGet(t, b, "large", off, n); !bytes.Equal(got, data[off:end]) {
			t.Fatalf("range %v differs", r)
		}
	}
	if h, err := b.Head(ctx(t), "large"); err != nil || h.Size != LargeSize || h.ETag != a.ETag {
		t.Fatalf("head %+v %v (put %+v)", h, err, a)
	}
}

func testConcurrentCreate(t *testing.T, b objectstore.Bucket) {
	const n = 8
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			_, errs[i] = condPut(b, ctx(t), "once", "writer "+strconv.Itoa(i), objectstore.PutOptions{IfNoneMatch: true})
		})
	}
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Fatalf("writers %d and %d both created the key", winner, i)
		case err == nil:
			winner = i
		case !errors.Is(err, objectstore.ErrPreconditionFailed):
			t.Fatalf("writer %d: %v", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("no writer created the key")
	}
	if got := mustGet(t, b, "once", 0, -1); string(got) != "writer "+strconv.Itoa(winner) {
		t.Fatalf("stored %q, winner was %d", got, winner)
	}
}

// testConcurrentCAS runs read-modify-write increments of a counter with
// IfMatch from several writers: every acknowledged increment counts.
func testConcurrentCAS(t *testing.T, b objectstore.Bucket) {
	const writers, each = 4, 5
	put(t, b, "counter", []byte("0"))
	var wg sync.WaitGroup
	for range writers {
		wg.Go(func() {
			for done := 0; done < each; {
				a, err := b.Head(ctx(t), "counter")
				if err != nil {
					t.Error(err)
					return
				}
				data, err := get(t, b, "counter", 0, -1)
				if err != nil {
					t.Error(err)
					return
				}
				// The body read may be of a newer version than the
				// head: then the put below fails and we retry.
				v, _ := strconv.Atoi(string(data))
				_, err = condPut(b, ctx(t), "counter", strconv.Itoa(v+1), objectstore.PutOptions{IfMatch: a.ETag})
				switch {
				case err == nil:
					done++
				case !errors.Is(err, objectstore.ErrPreconditionFailed):
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if got := string(mustGet(t, b, "counter", 0, -1)); got != strconv.Itoa(writers*each) {
		t.Fatalf("counter %s, want %d: an update was lost", got, writers*each)
	}
}

func testAtomicReplace(t *testing.T, b objectstore.Bucket) {
	const size = 256 << 10
	versions := [][]byte{bytes.Repeat([]byte{'a'}, size), bytes.Repeat([]byte{'b'}, size)}
	put(t, b, "v", versions[0])
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 1; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := b.Put(ctx(t), "v", bytes.NewReader(versions[i%2]), size, objectstore.PutOptions{}); err != nil {
				t.Error(err)
				return
			}
		}
	})
	for range 20 {
		got := mustGet(t, b, "v", 0, -1)
		if !bytes.Equal(got, versions[0]) && !bytes.Equal(got, versions[1]) {
			t.Errorf("read a mix of versions (%d bytes)", len(got))
			break
		}
	}
	close(stop)
	wg.Wait()
}

func testCanceled(t *testing.T, b objectstore.Bucket) {
	put(t, b, "c", []byte("x"))
	c, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := b.Put(c, "c2", bytes.NewReader([]byte("y")), 1, objectstore.PutOptions{}); err == nil {
		t.Error("put with a canceled context succeeded")
	}
	if _, err := b.Head(c, "c"); err == nil {
		t.Error("head with a canceled context succeeded")
	}
	if body, err := b.Get(c, "c", 0, -1); err == nil {
		_, err = io.ReadAll(body)
		body.Close()
		if err == nil {
			t.Error("get with a canceled context succeeded")
		}
	}
	if err := b.List(c, "", func(objectstore.Attrs) error { return nil }); err == nil {
		t.Error("list with a canceled context succeeded")
	}
	if _, err := b.Head(ctx(t), "c2"); !errors.Is(err, objectstore.ErrNotFound) {
		t.Errorf("canceled put stored the object: %v", err)
	}
}

// Gate is a gate of n steps for tests: it counts the steps held and the
// most held at once.
type Gate struct {
	steps chan struct{}
	mu    sync.Mutex
	held  int
	most  int
	holds int
}

// NewGate returns a gate of n steps.
func NewGate(n int) *Gate { return &Gate{steps: make(chan struct{}, n)} }

func (g *Gate) Hold() {
	g.steps <- struct{}{}
	g.mu.Lock()
	g.held++
	g.holds++
	g.most = max(g.most, g.held)
	g.mu.Unlock()
}

func (g *Gate) Release() {
	g.mu.Lock()
	g.held--
	g.mu.Unlock()
	<-g.steps
}

// Counts returns the steps held now, the most held at once and the holds
// so far.
func (g *Gate) Counts() (held, most, holds int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.held, g.most, g.holds
}

// Contend holds g's every step in turn from other goroutines, as other
// steps of cold work do, until the returned stop is called (once or
// more).
func (g *Gate) Contend() (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	for range cap(g.steps) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				default:
				}
				g.Hold()
				time.Sleep(50 * time.Microsecond)
				g.Release()
			}
		}()
	}
	var once sync.Once
	return func() {
		once.Do(func() { close(done) })
		wg.Wait()
	}
}

// A Get whose context carries a gate, its one step held by others in
// turn, reads the same bytes as without, and leaves no step held.
func testGatedGet(t *testing.T, b objectstore.Bucket) {
	data := randBytes(7, 3<<20+4321)
	put(t, b, "gated", data)
	g := NewGate(1)
	stop := g.Contend()
	defer stop()
	gctx := objectstore.WithGate(ctx(t), g)
	for _, r := range [][2]int64{{0, -1}, {12345, 2 << 20}, {int64(len(data)) - 10, 10}} {
		off, n := r[0], r[1]
		end := int64(len(data))
		if n >= 0 {
			end = off + n
		}
		body, err := b.Get(gctx, "gated", off, n)
		if err != nil {
			t.Fatalf("get %v: %v", r, err)
		}
		buf := make([]byte, 4<<20) // one read asks for more than the body
		got, err := io.ReadFull(body, buf)
		body.Close()
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("get %v: %v", r, err)
		}
		if !bytes.Equal(buf[:got], data[off:end]) {
			t.Fatalf("get %v: read %d bytes, not the object's", r, got)
		}
	}
	stop()
	// The HTTP client's reader goes on to the connection's next response
	// as a body ends, through the gate until the body is closed: a step
	// of that first look may still be held for a moment.
	deadline := time.Now().Add(time.Second)
	for {
		held, most, _ := g.Counts()
		if most > 1 {
			t.Fatalf("gate of 1 step: %d held at once", most)
		}
		if held == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("gate of 1 step: %d held a second after the reads", held)
		}
		time.Sleep(time.Millisecond)
	}
}
