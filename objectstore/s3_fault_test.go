package objectstore_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/shale-log/shale/objectstore"
	"github.com/shale-log/shale/objectstore/faulty"
	"github.com/shale-log/shale/objectstore/miniotest"
	"github.com/shale-log/shale/objectstore/objectstoretest"
)

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// loseFirstConditionalPut lets the first conditional PUT reach the store,
// then drops its response as a connection reset would.
func loseFirstConditionalPut(lost *atomic.Int32) func(http.RoundTripper) http.RoundTripper {
	return func(next http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			cond := r.Header.Get("If-None-Match") != "" || r.Header.Get("If-Match") != ""
			resp, err := next.RoundTrip(r)
			if err == nil && r.Method == http.MethodPut && cond && lost.CompareAndSwap(0, 1) {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				return nil, errors.New("read tcp 127.0.0.1: connection reset by peer")
			}
			return resp, err
		})
	}
}

// The SDK retries a conditional put whose response was lost; the retry
// finds the object already written (by the first attempt) and fails its
// condition. The bucket must report the put's success, or a manifest
// commit would be taken for a lost race.
func TestS3ConditionalPutWithLostResponseSucceeds(t *testing.T) {
	ctx := context.Background()
	for _, ifMatch := range []bool{false, true} {
		var lost atomic.Int32
		b := newMinIOBucket(t, func(o *objectstore.S3Options) { o.WrapTransport = loseFirstConditionalPut(&lost) })
		opts := objectstore.PutOptions{IfNoneMatch: true}
		if ifMatch {
			a, err := b.Put(ctx, "manifest", strings.NewReader("v0"), 2, objectstore.PutOptions{})
			if err != nil {
				t.Fatal(err)
			}
			opts = objectstore.PutOptions{IfMatch: a.ETag}
		}
		a, err := b.Put(ctx, "manifest", strings.NewReader("v1"), 2, opts)
		if err != nil {
			t.Fatalf("if-match=%v: put whose first response was lost: %v", ifMatch, err)
		}
		if lost.Load() != 1 {
			t.Fatal("no response was lost")
		}
		h, err := b.Head(ctx, "manifest")
		if err != nil || h.ETag != a.ETag {
			t.Fatalf("head %+v %v, put said %+v", h, err, a)
		}
		// A real conflict still fails.
		if _, err := b.Put(ctx, "manifest", strings.NewReader("v2"), 2, objectstore.PutOptions{IfNoneMatch: true}); !errors.Is(err, objectstore.ErrPreconditionFailed) {
			t.Fatalf("create over an existing object: %v", err)
		}
	}
}

// A create-only put over an existing object whose every attempt ends in a
// connection reset (a store that refuses the condition before reading the
// body, and closes the connection while the body is being sent) fails its
// condition: the bucket looks, finds another put's object, and says so,
// instead of an error the caller cannot tell from an outage. So does an
// If-Match put whose ETag the object no longer has. A reset put whose
// condition holds (a key that holds nothing, for a create; the ETag
// given, for If-Match) stays an error of its own.
func TestS3CreateOverAnObjectCutByAResetFailsItsCondition(t *testing.T) {
	ctx := context.Background()
	var reset atomic.Bool
	b := newMinIOBucket(t, func(o *objectstore.S3Options) {
		o.WrapTransport = func(next http.RoundTripper) http.RoundTripper {
			return roundTripFunc(func(r *http.Request) (*http.Response, error) {
				if reset.Load() && r.Method == http.MethodPut {
					return nil, errors.New("write tcp 127.0.0.1: connection reset by peer")
				}
				return next.RoundTrip(r)
			})
		}
	})
	first, err := b.Put(ctx, "segment", strings.NewReader("first"), 5, objectstore.PutOptions{IfNoneMatch: true})
	if err != nil {
		t.Fatal(err)
	}
	reset.Store(true)
	if _, err := b.Put(ctx, "segment", strings.NewReader("later"), 5, objectstore.PutOptions{IfMatch: `"0123456789abcdef0123456789abcdef"`}); !errors.Is(err, objectstore.ErrPreconditionFailed) {
		t.Fatalf("if-match of another ETag, reset: %v, want a failed precondition", err)
	}
	if _, err := b.Put(ctx, "segment", strings.NewReader("later"), 5, objectstore.PutOptions{IfMatch: first.ETag}); err == nil || errors.Is(err, objectstore.ErrPreconditionFailed) {
		t.Fatalf("if-match of the object's ETag, reset: %v, want an error other than a failed precondition", err)
	}
	if _, err := b.Put(ctx, "segment", strings.NewReader("again"), 5, objectstore.PutOptions{IfNoneMatch: true}); !errors.Is(err, objectstore.ErrPreconditionFailed) {
		t.Fatalf("create over an existing object, reset: %v, want a failed precondition", err)
	}
	if _, err := b.Put(ctx, "other", strings.NewReader("first"), 5, objectstore.PutOptions{IfNoneMatch: true}); err == nil || errors.Is(err, objectstore.ErrPreconditionFailed) {
		t.Fatalf("create of a new key, reset: %v, want an error other than a failed precondition", err)
	}
}

// loseFirstCompletion lets the first CompleteMultipartUpload reach the
// store, then drops its response: the SDK's retry finds the upload gone.
func loseFirstCompletion(lost *atomic.Int32) func(http.RoundTripper) http.RoundTripper {
	return func(next http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			resp, err := next.RoundTrip(r)
			if err == nil && r.Method == http.MethodPost && r.URL.Query().Has("uploadId") && lost.CompareAndSwap(0, 1) {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				return nil, errors.New("read tcp 127.0.0.1: connection reset by peer")
			}
			return resp, err
		})
	}
}

func TestS3MultipartPutWithLostCompletionSucceeds(t *testing.T) {
	ctx := context.Background()
	data := bytes.Repeat([]byte("c"), 11<<20)
	for _, opts := range []objectstore.PutOptions{{}, {IfNoneMatch: true}} {
		var lost atomic.Int32
		b := newMinIOBucket(t, func(o *objectstore.S3Options) { o.WrapTransport = loseFirstCompletion(&lost) })
		a, err := b.Put(ctx, "big", bytes.NewReader(data), int64(len(data)), opts)
		if err != nil {
			t.Fatalf("%+v: multipart put whose completion response was lost: %v", opts, err)
		}
		if lost.Load() != 1 {
			t.Fatal("no completion response was lost")
		}
		if h, err := b.Head(ctx, "big"); err != nil || h.ETag != a.ETag || h.Size != int64(len(data)) {
			t.Fatalf("head %+v %v, put said %+v", h, err, a)
		}
	}
}

// loseFirstDelete lets the first DELETE reach the store, then drops its
// response: the SDK's retry deletes a key that is gone.
func loseFirstDelete(lost *atomic.Int32) func(http.RoundTripper) http.RoundTripper {
	return func(next http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			resp, err := next.RoundTrip(r)
			if err == nil && r.Method == http.MethodDelete && lost.CompareAndSwap(0, 1) {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				return nil, errors.New("read tcp 127.0.0.1: connection reset by peer")
			}
			return resp, err
		})
	}
}

// A delete whose response was lost is retried and reports success (the
// key it finds gone is what it asked for), not an error a caller would
// retry or log as a failure.
func TestS3DeleteWithLostResponseSucceeds(t *testing.T) {
	ctx := context.Background()
	var lost atomic.Int32
	b := newMinIOBucket(t, func(o *objectstore.S3Options) { o.WrapTransport = loseFirstDelete(&lost) })
	if _, err := b.Put(ctx, "doomed", strings.NewReader("x"), 1, objectstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := b.Delete(ctx, "doomed"); err != nil {
		t.Fatalf("delete whose first response was lost: %v", err)
	}
	if lost.Load() != 1 {
		t.Fatal("no response was lost")
	}
	if _, err := b.Head(ctx, "doomed"); !errors.Is(err, objectstore.ErrNotFound) {
		t.Fatalf("head after delete: %v", err)
	}
}

// stallBodies makes every GET body deliver a few bytes and then nothing
// until the request is cancelled.
func stallBodies(next http.RoundTripper) http.RoundTripper {
	return roundTripFunc(func(r *http.Request) (*http.Response, error) {
		resp, err := next.RoundTrip(r)
		if err == nil && r.Method == http.MethodGet && resp.StatusCode/100 == 2 {
			resp.Body = &stallingBody{ReadCloser: resp.Body, ctx: r.Context(), left: 10}
		}
		return resp, err
	})
}

type stallingBody struct {
	io.ReadCloser
	ctx  context.Context
	left int
}

func (s *stallingBody) Read(p []byte) (int, error) {
	if s.left == 0 {
		<-s.ctx.Done()
		return 0, s.ctx.Err()
	}
	p = p[:min(len(p), s.left)]
	n, err := s.ReadCloser.Read(p)
	s.left -= n
	return n, err
}

func TestS3GetBodyStallIsCut(t *testing.T) {
	ctx := context.Background()
	b := newMinIOBucket(t, func(o *objectstore.S3Options) {
		o.WrapTransport = stallBodies
		o.StallTimeout = 200 * time.Millisecond
	})
	data := bytes.Repeat([]byte("x"), 1000)
	if _, err := b.Put(ctx, "k", bytes.NewReader(data), int64(len(data)), objectstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	body, err := b.Get(ctx, "k", 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	defer body.Close()
	start := time.Now()
	got, err := io.ReadAll(body)
	if !errors.Is(err, context.DeadlineExceeded) || len(got) != 10 {
		t.Fatalf("read %d bytes, %v; want 10 and a deadline error", len(got), err)
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Fatalf("stalled body cut after %v (stall timeout 200ms)", d)
	}
}

// A frozen store (SIGSTOP: connections accepted, nothing answered) fails
// calls at their deadline; a killed and restarted one is waited for by
// the retries.
func TestS3DeadlinesAndRetriesAgainstMinIOFaults(t *testing.T) {
	srv := miniotest.Start(t)
	ctx := context.Background()
	b, err := objectstore.NewS3(ctx, objectstore.S3Options{
		Bucket: srv.NewBucket(t), Endpoint: srv.Endpoint, Region: "us-east-1", PathStyle: true,
		AccessKey: miniotest.AccessKey, SecretKey: miniotest.SecretKey,
		RequestTimeout: 600 * time.Millisecond, AttemptTimeout: 300 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Put(ctx, "k", strings.NewReader("v"), 1, objectstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}

	srv.Pause()
	for name, call := range map[string]func() error{
		"head": func() error { _, err := b.Head(ctx, "k"); return err },
		"get":  func() error { _, err := b.Get(ctx, "k", 0, -1); return err },
		"put": func() error {
			_, err := b.Put(ctx, "k2", strings.NewReader("v"), 1, objectstore.PutOptions{})
			return err
		},
		"list":   func() error { return b.List(ctx, "", func(objectstore.Attrs) error { return nil }) },
		"delete": func() error { return b.Delete(ctx, "k") },
	} {
		start := time.Now()
		if err := call(); err == nil {
			t.Errorf("%s against a frozen store succeeded after %v", name, time.Since(start))
		}
		// Generous: the machine may be loaded; a hang is what fails.
		if d := time.Since(start); d > 15*time.Second {
			t.Errorf("%s against a frozen store took %v (deadline 600ms)", name, d)
		}
	}
	srv.Resume()

	// Retries span a restart when the call's deadline allows it.
	patient, err := objectstore.NewS3(ctx, objectstore.S3Options{
		Bucket: b.BucketName(), Endpoint: srv.Endpoint, Region: "us-east-1", PathStyle: true,
		AccessKey: miniotest.AccessKey, SecretKey: miniotest.SecretKey,
		RequestTimeout: time.Minute, AttemptTimeout: 2 * time.Second, MaxAttempts: 100, MaxBackoff: 500 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv.Kill()
	done := make(chan error, 1)
	go func() {
		_, err := patient.Put(ctx, "after-restart", strings.NewReader("v"), 1, objectstore.PutOptions{})
		done <- err
	}()
	time.Sleep(300 * time.Millisecond)
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("put across a restart: %v", err)
	}
	if _, err := srv.Client().StatObject(ctx, b.BucketName(), "after-restart", minioStatOpts); err != nil {
		t.Fatalf("minio-go stat: %v", err)
	}
}

// A multipart upload that fails (a reader error, a cancelled context)
// is aborted: no incomplete upload is left to be billed.
func TestS3FailedMultipartUploadIsAborted(t *testing.T) {
	srv := miniotest.Shared(t)
	b := newMinIOBucket(t, nil)
	ctx := context.Background()
	data := bytes.Repeat([]byte("m"), 16<<20)
	if _, err := b.Put(ctx, "broken", io.MultiReader(bytes.NewReader(data[:11<<20]), failingReader{}), int64(len(data)), objectstore.PutOptions{}); err == nil {
		t.Fatal("put of a breaking reader succeeded")
	}
	cctx, cancel := context.WithCancel(ctx)
	r := &cancelAfter{r: bytes.NewReader(data), n: 11 << 20, cancel: cancel}
	if _, err := b.Put(cctx, "cancelled", r, int64(len(data)), objectstore.PutOptions{}); err == nil {
		t.Fatal("cancelled put succeeded")
	}
	for u := range srv.Client().ListIncompleteUploads(ctx, b.BucketName(), "", true) {
		if u.Err != nil {
			t.Fatal(u.Err)
		}
		t.Errorf("incomplete upload left: %s %s", u.Key, u.UploadID)
	}
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("disk read error") }

type cancelAfter struct {
	r      io.Reader
	n      int
	cancel context.CancelFunc
}

func (c *cancelAfter) Read(p []byte) (int, error) {
	if c.n <= 0 {
		c.cancel()
		time.Sleep(10 * time.Millisecond)
	}
	n, err := c.r.Read(p)
	c.n -= n
	return n, err
}

// Bodies are signed UNSIGNED-PAYLOAD (no SHA-256 of every byte over plain
// HTTP) but always carry a CRC checksum the store verifies; with checksums
// only when required, the signature hashes them again.
func TestS3PutBodiesCarryAChecksum(t *testing.T) {
	ctx := context.Background()
	for _, mode := range []string{"", "when_required"} {
		var puts, checked atomic.Int32
		var sha atomic.Value
		b := newMinIOBucket(t, func(o *objectstore.S3Options) {
			o.RequestChecksumCalculation = mode
			o.WrapTransport = func(next http.RoundTripper) http.RoundTripper {
				return roundTripFunc(func(r *http.Request) (*http.Response, error) {
					if r.Method == http.MethodPut {
						puts.Add(1)
						sha.Store(r.Header.Get("X-Amz-Content-Sha256"))
						for h := range r.Header {
							if strings.HasPrefix(strings.ToLower(h), "x-amz-checksum-") {
								checked.Add(1)
							}
						}
					}
					return next.RoundTrip(r)
				})
			}
		})
		data := bytes.Repeat([]byte("s"), 11<<20) // multipart: two parts
		if _, err := b.Put(ctx, "k", bytes.NewReader(data), int64(len(data)), objectstore.PutOptions{}); err != nil {
			t.Fatal(err)
		}
		switch got := sha.Load().(string); {
		case mode == "" && (got != "UNSIGNED-PAYLOAD" || checked.Load() != puts.Load()):
			t.Errorf("default: %d of %d puts carry a checksum, signature payload %q", checked.Load(), puts.Load(), got)
		case mode == "when_required" && len(got) != 64:
			t.Errorf("when_required: signature payload %q, want the body's SHA-256", got)
		}
	}
}

// TestS3LargePutRetrySendsItWhole: a segment goes up in one PUT, so a
// connection reset part way through its body is answered by sending the
// whole body again (the SDK rewinds it): the put succeeds, the object is
// whole, and what the failure cost is the bytes sent before it plus a
// second request (counted once the store answers it).
func TestS3LargePutRetrySendsItWhole(t *testing.T) {
	const size, cut = 24 << 20, 10 << 20
	var attempts atomic.Int32
	var sent atomic.Int64
	reg := prometheus.NewRegistry()
	s3b := miniotest.Shared(t).NewS3(t, func(o *objectstore.S3Options) {
		o.MaxBackoff = 10 * time.Millisecond
		o.WrapTransport = func(next http.RoundTripper) http.RoundTripper {
			return roundTripFunc(func(r *http.Request) (*http.Response, error) {
				if r.Method != http.MethodPut {
					return next.RoundTrip(r)
				}
				if attempts.Add(1) == 1 {
					n, _ := io.CopyN(io.Discard, r.Body, cut)
					sent.Add(n)
					r.Body.Close()
					return nil, errors.New("write tcp: connection reset by peer")
				}
				r.Body = countedBody{r.Body, &sent}
				return next.RoundTrip(r)
			})
		}
	})
	b := objectstore.NewMetrics(reg).Wrap(s3b)
	ctx := context.Background()
	if _, err := b.Put(ctx, "segment", &synthBody{size: size}, size, objectstore.PutOptions{IfNoneMatch: true}); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d attempts, %d MiB sent for a %d MiB object", attempts.Load(), sent.Load()>>20, size>>20)
	if attempts.Load() != 2 || sent.Load() != cut+size {
		t.Errorf("%d attempts sending %d bytes, want 2 sending %d", attempts.Load(), sent.Load(), cut+size)
	}
	a, err := b.Head(ctx, "segment")
	if err != nil || a.Size != size {
		t.Fatalf("head: %+v %v", a, err)
	}
	// The reset attempt had no answer: only the PUT the store answered
	// (and the head) are counted.
	want := `
# HELP shale_objectstore_s3_requests_total ` + "HTTP requests an S3 bucket's calls made that the store answered (each attempt, retries included), " +
		"by S3 operation and billing class: put (PUT, COPY, POST, LIST: PutObject, CreateMultipartUpload, UploadPart, " +
		"CompleteMultipartUpload, DeleteObjects, ListObjectsV2...), get (GET, HEAD and the rest), free (DELETE: DeleteObject, AbortMultipartUpload)." + `
# TYPE shale_objectstore_s3_requests_total counter
shale_objectstore_s3_requests_total{class="get",operation="HeadObject"} 1
shale_objectstore_s3_requests_total{class="put",operation="PutObject"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "shale_objectstore_s3_requests_total"); err != nil {
		t.Error(err)
	}
}

type countedBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (c countedBody) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// A GET whose context carries a gate reads the object byte for byte,
// through the gate (on Linux, over MinIO's plain HTTP), while others hold
// its one step in turn; cut short mid-body by the faulty wrapper, it
// yields the bytes before the cut, then io.ErrUnexpectedEOF. No step is
// left held.
func TestS3GatedGetReadsThroughTheGate(t *testing.T) {
	b := newMinIOBucket(t, nil)
	ctx := context.Background()
	data := bytes.Repeat([]byte("0123456789abcdefghijklmnopqrstu"), 6<<20/31)
	if _, err := b.Put(ctx, "gated", bytes.NewReader(data), int64(len(data)), objectstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	read := func(bk objectstore.Bucket, g *objectstoretest.Gate) ([]byte, error) {
		body, err := bk.Get(objectstore.WithGate(ctx, g), "gated", 0, -1)
		if err != nil {
			return nil, err
		}
		defer body.Close()
		buf := make([]byte, 8<<20) // one read asks for more than the body
		n, err := io.ReadFull(body, buf)
		if errors.Is(err, io.ErrUnexpectedEOF) && n == len(data) {
			err = nil
		}
		return buf[:n], err
	}
	alone := objectstoretest.NewGate(1)
	if got, err := read(b, alone); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("gated get: %d bytes, %v", len(got), err)
	}
	if _, _, holds := alone.Counts(); runtime.GOOS == "linux" && holds < len(data)/objectstore.GateReadMax {
		t.Fatalf("%d holds for %d bytes: the body's reads did not pass the gate", holds, len(data))
	}
	g := objectstoretest.NewGate(1)
	stop := g.Contend()
	defer stop()
	if got, err := read(b, g); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("gated get, the gate contended: %d bytes, %v", len(got), err)
	}
	fb := faulty.New(b)
	cut := int64(1<<20 + 5)
	fb.Add(faulty.Rule{Op: faulty.Get, Times: 1, Truncate: true, TruncateAfter: cut})
	got, err := read(fb, g)
	if !errors.Is(err, io.ErrUnexpectedEOF) || !bytes.Equal(got, data[:cut]) {
		t.Fatalf("cut gated get: %d bytes, %v; want the %d before the cut", len(got), err, cut)
	}
	stop()
	if held, most, _ := g.Counts(); held != 0 || most > 1 {
		t.Fatalf("gate of 1 step: %d held after the reads, %d at once", held, most)
	}
}

// cutBodies ends the first cuts GET bodies after every bytes, as a store
// that closes a response early does (an unexpected EOF), and records each
// GET's Range and If-Match headers.
type cutBodies struct {
	mu     sync.Mutex
	cuts   int
	every  int
	ranges []string
	match  []string
}

func (c *cutBodies) wrap(next http.RoundTripper) http.RoundTripper {
	return roundTripFunc(func(r *http.Request) (*http.Response, error) {
		resp, err := next.RoundTrip(r)
		if err != nil || r.Method != http.MethodGet || resp.StatusCode/100 != 2 {
			return resp, err
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		c.ranges = append(c.ranges, r.Header.Get("Range"))
		c.match = append(c.match, r.Header.Get("If-Match"))
		if c.cuts > 0 {
			c.cuts--
			resp.Body = &cutBody{ReadCloser: resp.Body, left: c.every}
		}
		return resp, nil
	})
}

type cutBody struct {
	io.ReadCloser
	left int
}

func (c *cutBody) Read(p []byte) (int, error) {
	if c.left == 0 {
		return 0, io.ErrUnexpectedEOF
	}
	n, err := c.ReadCloser.Read(p[:min(len(p), c.left)])
	c.left -= n
	return n, err
}

// TestS3GetBodyCutShortIsResumed: a GET body the connection ends early
// goes on with GETs of the rest of the range, conditional on the object's
// ETag, and reads the same bytes; past maxGetResumes resumptions the read
// fails with the cause, having handed out only bytes of the object.
func TestS3GetBodyCutShortIsResumed(t *testing.T) {
	ctx := context.Background()
	cut := &cutBodies{}
	reg := prometheus.NewRegistry()
	b := objectstore.NewMetrics(reg).Wrap(newMinIOBucket(t, func(o *objectstore.S3Options) { o.WrapTransport = cut.wrap }))
	data := make([]byte, 3<<20)
	for i := range data {
		data[i] = byte(i * 31 >> 8)
	}
	if _, err := b.Put(ctx, "cut", bytes.NewReader(data), int64(len(data)), objectstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	read := func(off, length int64) ([]byte, error) {
		body, err := b.Get(ctx, "cut", off, length)
		if err != nil {
			return nil, err
		}
		defer body.Close()
		return io.ReadAll(body)
	}

	// The whole object, cut twice: three GETs, the later two from where
	// the bytes read end, each conditional on the first one's ETag.
	cut.mu.Lock()
	cut.cuts, cut.every, cut.ranges, cut.match = 2, 1<<20+123, nil, nil
	cut.mu.Unlock()
	got, err := read(0, -1)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read %d bytes (equal %v), %v; want the object's %d", len(got), bytes.Equal(got, data), err, len(data))
	}
	cut.mu.Lock()
	want := []string{"", fmt.Sprintf("bytes=%d-%d", 1<<20+123, len(data)-1), fmt.Sprintf("bytes=%d-%d", 2*(1<<20+123), len(data)-1)}
	if !slices.Equal(cut.ranges, want) || cut.match[0] != "" || cut.match[1] == "" || cut.match[2] != cut.match[1] {
		t.Fatalf("GETs with ranges %q and If-Match %q; want ranges %q, the later two on the object's ETag", cut.ranges, cut.match, want)
	}

	// A range, cut once: resumed within it.
	cut.cuts, cut.every = 1, 1000
	cut.mu.Unlock()
	if got, err := read(5000, 1<<20); err != nil || !bytes.Equal(got, data[5000:5000+1<<20]) {
		t.Fatalf("range read %d bytes, %v; want the range's %d", len(got), err, 1<<20)
	}

	// Cut every time: the read fails with the cause after the first GET
	// and three resumptions, having read only the object's bytes.
	cut.mu.Lock()
	cut.cuts, cut.every, cut.ranges = 100, 1<<18, nil
	cut.mu.Unlock()
	got, err = read(0, -1)
	if !errors.Is(err, io.ErrUnexpectedEOF) || len(got) != 4<<18 || !bytes.Equal(got, data[:len(got)]) {
		t.Fatalf("read %d bytes, %v; want 4 cut bodies' %d bytes of the object and the unexpected EOF", len(got), err, 4<<18)
	}
	cut.mu.Lock()
	defer cut.mu.Unlock()
	if len(cut.ranges) != 4 {
		t.Fatalf("%d GETs for a body cut every time, want 4 (the first and 3 resumptions)", len(cut.ranges))
	}
	// 2 + 1 + 3 resumptions, counted.
	if n, err := testutil.GatherAndCount(reg, "shale_objectstore_get_resumes_total"); err != nil || n != 1 {
		t.Fatalf("shale_objectstore_get_resumes_total: %d series, %v", n, err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "shale_objectstore_get_resumes_total" {
			if v := mf.GetMetric()[0].GetCounter().GetValue(); v != 6 {
				t.Fatalf("shale_objectstore_get_resumes_total = %v, want 6", v)
			}
		}
	}
}
