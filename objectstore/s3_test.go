package objectstore_test

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/base64"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"golang.org/x/sync/errgroup"

	"github.com/shale-log/shale/objectstore"
	"github.com/shale-log/shale/objectstore/miniotest"
	"github.com/shale-log/shale/objectstore/objectstoretest"
)

func TestMain(m *testing.M) { miniotest.Main(m) }

// newMinIOBucket is an S3 bucket on the package's MinIO, with the
// smallest part size S3 allows and multipart uploads from there (so the
// suite's large object is a multipart upload) and small list pages (so
// listing paginates).
func newMinIOBucket(t *testing.T, tune func(*objectstore.S3Options)) *objectstore.S3 {
	t.Helper()
	return miniotest.Shared(t).NewS3(t, func(o *objectstore.S3Options) {
		o.PartSize = 5 << 20
		o.MultipartThreshold = o.PartSize
		o.ListPageSize = 100
		if tune != nil {
			tune(o)
		}
	})
}

func TestS3Conformance(t *testing.T) {
	objectstoretest.Run(t, func(t *testing.T) objectstore.Bucket { return newMinIOBucket(t, nil) })
}

// With checksums only when required (for stores that reject the SDK's
// default ones), single and multipart puts, ranged gets, conditional puts
// and batch deletes still work.
func TestS3ChecksumsWhenRequired(t *testing.T) {
	var deletes deleteRequests
	b := newMinIOBucket(t, func(o *objectstore.S3Options) {
		o.RequestChecksumCalculation = "when_required"
		o.ResponseChecksumValidation = "when_required"
		o.WrapTransport = deletes.count
	})
	ctx := context.Background()
	for _, size := range []int{10, objectstoretest.LargeSize} {
		data := bytes.Repeat([]byte("w"), size)
		a, err := b.Put(ctx, "k", bytes.NewReader(data), int64(size), objectstore.PutOptions{})
		if err != nil {
			t.Fatalf("put %d: %v", size, err)
		}
		if _, err := b.Put(ctx, "k", bytes.NewReader(data), int64(size), objectstore.PutOptions{IfMatch: a.ETag}); err != nil {
			t.Fatalf("if-match put %d: %v", size, err)
		}
		body, err := b.Get(ctx, "k", 3, 5)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(body)
		body.Close()
		if err != nil || string(got) != "wwwww" {
			t.Fatalf("get: %q %v", got, err)
		}
	}
	if _, err := b.Put(ctx, "k", bytes.NewReader(nil), 0, objectstore.PutOptions{IfNoneMatch: true}); !errors.Is(err, objectstore.ErrPreconditionFailed) {
		t.Fatalf("create over an object: %v", err)
	}
	// DeleteObjects is an operation that requires a checksum: the SDK
	// sends one whatever the setting, and the store takes it.
	putKeys(t, b, 10)
	deleteAll(t, b, 10)
	if deletes.batch.Load() != 1 || deletes.single.Load() != 0 {
		t.Fatalf("10 keys deleted in %d DeleteObjects and %d DeleteObject requests, want 1 and 0", deletes.batch.Load(), deletes.single.Load())
	}
}

// deleteRequests counts the delete requests a bucket sends.
type deleteRequests struct {
	batch  atomic.Int32 // DeleteObjects: POST ?delete
	single atomic.Int32 // DeleteObject
}

func (d *deleteRequests) count(next http.RoundTripper) http.RoundTripper {
	return roundTripFunc(func(r *http.Request) (*http.Response, error) {
		switch {
		case isBatchDelete(r):
			d.batch.Add(1)
		case r.Method == http.MethodDelete:
			d.single.Add(1)
		}
		return next.RoundTrip(r)
	})
}

func isBatchDelete(r *http.Request) bool {
	return r.Method == http.MethodPost && r.URL.Query().Has("delete")
}

func numbered(i int) string { return fmt.Sprintf("d/%05d", i) }

// putKeys puts empty objects under numbered(0) to numbered(n-1) and
// returns their keys.
func putKeys(t *testing.T, b objectstore.Bucket, n int) []string {
	t.Helper()
	keys := make([]string, n)
	var g errgroup.Group
	g.SetLimit(16)
	for i := range keys {
		keys[i] = numbered(i)
		g.Go(func() error {
			_, err := b.Put(context.Background(), keys[i], bytes.NewReader(nil), 0, objectstore.PutOptions{})
			return err
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	return keys
}

// deleteAll deletes numbered(0) to numbered(n-1) in one DeleteMany and
// checks none is left.
func deleteAll(t *testing.T, b objectstore.Bucket, n int) {
	t.Helper()
	keys := make([]string, n)
	for i := range keys {
		keys[i] = numbered(i)
	}
	if failed, err := b.DeleteMany(context.Background(), keys); len(failed) != 0 || err != nil {
		t.Fatalf("delete %d keys: %d failed: %v", n, len(failed), err)
	}
	noneLeft(t, b)
}

// noneLeft checks no numbered key is left.
func noneLeft(t *testing.T, b objectstore.Bucket) {
	t.Helper()
	if err := b.List(context.Background(), "d/", func(a objectstore.Attrs) error {
		return fmt.Errorf("%s is left", a.Key)
	}); err != nil {
		t.Fatal(err)
	}
}

// DeleteMany deletes 1,000 keys a request: 2,500 keys are three.
func TestS3DeleteManyIsARequestPer1000Keys(t *testing.T) {
	var deletes deleteRequests
	b := newMinIOBucket(t, func(o *objectstore.S3Options) { o.WrapTransport = deletes.count })
	putKeys(t, b, 2500)
	deleteAll(t, b, 2500)
	if deletes.batch.Load() != 3 || deletes.single.Load() != 0 {
		t.Fatalf("2,500 keys deleted in %d DeleteObjects and %d DeleteObject requests, want 3 and 0", deletes.batch.Load(), deletes.single.Load())
	}
}

// proxyMinIO is an endpoint in front of the package's MinIO: answer
// answers the requests it takes (returning true), the others go through.
func proxyMinIO(t *testing.T, answer func(w http.ResponseWriter, r *http.Request) bool) string {
	t.Helper()
	target, err := url.Parse(miniotest.Shared(t).Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target) // keeps Host, which the request is signed with
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !answer(w, r) {
			proxy.ServeHTTP(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func s3ErrorReply(w http.ResponseWriter, status int, code string) {
	s3ErrorMessage(w, status, code, "refused by the test")
}

func s3ErrorMessage(w http.ResponseWriter, status int, code, message string) {
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?>`+"\n"+`<Error><Code>%s</Code><Message>%s</Message></Error>`, code, message)
}

// A store without DeleteObjects (GCS's XML API answers 501 NotImplemented)
// has its keys deleted one by one, and is not asked again; so has one that
// wants a Content-MD5 header (MissingContentMD5) and refuses DeleteObjects
// with it too, once asked with it.
func TestS3DeleteManyFallsBackToSingleDeletes(t *testing.T) {
	for _, tc := range []struct {
		code     string
		status   int
		refusals int32 // the DeleteObjects requests sent
	}{
		{"NotImplemented", http.StatusNotImplemented, 1},
		{"MissingContentMD5", http.StatusBadRequest, 2},
	} {
		t.Run(tc.code, func(t *testing.T) {
			var refused, singles atomic.Int32
			endpoint := proxyMinIO(t, func(w http.ResponseWriter, r *http.Request) bool {
				switch {
				case isBatchDelete(r):
					refused.Add(1)
					s3ErrorReply(w, tc.status, tc.code)
					return true
				case r.Method == http.MethodDelete:
					singles.Add(1)
				}
				return false
			})
			b := newMinIOBucket(t, func(o *objectstore.S3Options) { o.Endpoint = endpoint })
			keys := putKeys(t, b, 30)
			ctx := context.Background()
			if failed, err := b.DeleteMany(ctx, keys[:20]); len(failed) != 0 || err != nil {
				t.Fatalf("first call: %q failed: %v", failed, err)
			}
			if refused.Load() != tc.refusals || singles.Load() != 20 {
				t.Fatalf("first call: %d DeleteObjects refused and %d DeleteObject requests, want %d and 20", refused.Load(), singles.Load(), tc.refusals)
			}
			if failed, err := b.DeleteMany(ctx, append(keys[20:], "a//b")); fmt.Sprint(failed) != "[a//b]" || !errors.Is(err, objectstore.ErrInvalidKey) {
				t.Fatalf("second call: %q failed: %v, want a//b alone, ErrInvalidKey", failed, err)
			}
			if refused.Load() != tc.refusals || singles.Load() != 30 {
				t.Fatalf("second call: %d DeleteObjects refused in all and %d DeleteObject requests, want %d and 30", refused.Load(), singles.Load(), tc.refusals)
			}
			noneLeft(t, b)
		})
	}
}

// A store that wants a Content-MD5 header on DeleteObjects, answering
// MissingContentMD5 to a request without one (or InvalidRequest naming
// the header, as some do), gets one from the refused request on: its keys
// are deleted in DeleteObjects requests still, and later calls send the
// header straight away.
func TestS3DeleteManySendsContentMD5WhenAsked(t *testing.T) {
	for _, tc := range []struct{ code, message string }{
		{"MissingContentMD5", "Missing required header for this request: Content-MD5"},
		{"InvalidRequest", "Missing required header for this request: Content-MD5"},
	} {
		t.Run(tc.code, func(t *testing.T) {
			var refused, withMD5 atomic.Int32
			endpoint := proxyMinIO(t, func(w http.ResponseWriter, r *http.Request) bool {
				if !isBatchDelete(r) {
					return false
				}
				sum := md5.Sum(peekBody(t, r))
				switch got := r.Header.Get("Content-MD5"); got {
				case "":
					refused.Add(1)
					s3ErrorMessage(w, http.StatusBadRequest, tc.code, tc.message)
					return true
				case base64.StdEncoding.EncodeToString(sum[:]):
					withMD5.Add(1)
					return false
				default:
					t.Errorf("Content-MD5 %s is not the body's", got)
					s3ErrorReply(w, http.StatusBadRequest, "BadDigest")
					return true
				}
			})
			var deletes deleteRequests
			b := newMinIOBucket(t, func(o *objectstore.S3Options) {
				o.Endpoint = endpoint
				o.WrapTransport = deletes.count
			})
			keys := putKeys(t, b, 30)
			ctx := context.Background()
			if failed, err := b.DeleteMany(ctx, keys[:20]); len(failed) != 0 || err != nil {
				t.Fatalf("first call: %q failed: %v", failed, err)
			}
			if refused.Load() != 1 || withMD5.Load() != 1 || deletes.single.Load() != 0 {
				t.Fatalf("first call: %d DeleteObjects refused, %d with Content-MD5 and %d DeleteObject requests, want 1, 1 and 0", refused.Load(), withMD5.Load(), deletes.single.Load())
			}
			if failed, err := b.DeleteMany(ctx, keys[20:]); len(failed) != 0 || err != nil {
				t.Fatalf("second call: %q failed: %v", failed, err)
			}
			if refused.Load() != 1 || withMD5.Load() != 2 || deletes.single.Load() != 0 {
				t.Fatalf("second call: %d DeleteObjects refused in all, %d with Content-MD5 and %d DeleteObject requests, want 1, 2 and 0", refused.Load(), withMD5.Load(), deletes.single.Load())
			}
			noneLeft(t, b)
		})
	}
}

// The keys a DeleteObjects response names as errors fail, but for a key
// already gone (NoSuchKey), a transient error (InternalError) once the
// attempts are spent; a request refused as a whole (not as an operation
// the store lacks) fails all its keys, and the next call sends
// DeleteObjects again.
func TestS3DeleteManyFailsTheKeysTheStoreRefuses(t *testing.T) {
	var refuseAll atomic.Bool
	endpoint := proxyMinIO(t, func(w http.ResponseWriter, r *http.Request) bool {
		if !isBatchDelete(r) {
			return false
		}
		if refuseAll.Load() {
			s3ErrorReply(w, http.StatusForbidden, "AccessDenied")
			return true
		}
		w.Header().Set("Content-Type", "application/xml")
		io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?>
<DeleteResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
<Error><Key>d/00001</Key><Code>AccessDenied</Code><Message>Access Denied</Message></Error>
<Error><Key>d/00002</Key><Code>NoSuchKey</Code><Message>gone</Message></Error>
<Error><Key>d/00003</Key><Code>InternalError</Code><Message>try again</Message></Error>
</DeleteResult>`)
		return true
	})
	b := newMinIOBucket(t, func(o *objectstore.S3Options) {
		o.Endpoint = endpoint
		o.MaxBackoff = time.Millisecond
	})
	keys := []string{numbered(0), numbered(1), numbered(2), numbered(3), numbered(4)}
	ctx := context.Background()
	failed, err := b.DeleteMany(ctx, keys)
	if fmt.Sprint(failed) != "[d/00001 d/00003]" || err == nil || !strings.Contains(err.Error(), "AccessDenied") {
		t.Fatalf("%q failed: %v; want d/00001 (AccessDenied first) and d/00003", failed, err)
	}
	refuseAll.Store(true)
	for range 2 {
		failed, err = b.DeleteMany(ctx, keys)
		if fmt.Sprint(failed) != fmt.Sprint(keys) || err == nil || !strings.Contains(err.Error(), "AccessDenied") {
			t.Fatalf("a refused request: %q failed: %v; want every key, AccessDenied", failed, err)
		}
	}
}

// peekBody returns a request's body, and leaves it to be read again (by
// the proxy).
func peekBody(t *testing.T, r *http.Request) []byte {
	t.Helper()
	body, err := io.ReadAll(r.Body)
	if err != nil {
		t.Error(err)
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	return body
}

// batchDeleteKeys returns the keys a DeleteObjects request names (see
// peekBody).
func batchDeleteKeys(t *testing.T, r *http.Request) []string {
	t.Helper()
	body := peekBody(t, r)
	var d struct {
		Objects []struct{ Key string } `xml:"Object"`
	}
	if err := xml.Unmarshal(body, &d); err != nil {
		t.Errorf("DeleteObjects body %q: %v", body, err)
	}
	keys := make([]string, len(d.Objects))
	for i, o := range d.Objects {
		keys[i] = o.Key
	}
	return keys
}

// deleteErrorsReply answers a DeleteObjects request for keys with an error
// for each key codes names, of that code, and success for the others.
func deleteErrorsReply(w http.ResponseWriter, keys []string, codes map[string]string) {
	w.Header().Set("Content-Type", "application/xml")
	io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?>`+"\n"+`<DeleteResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">`)
	for _, k := range keys {
		if code, ok := codes[k]; ok {
			fmt.Fprintf(w, `<Error><Key>%s</Key><Code>%s</Code><Message>from the test</Message></Error>`, k, code)
		}
	}
	io.WriteString(w, `</DeleteResult>`)
}

// The keys a DeleteObjects response fails with a transient error
// (SlowDown, InternalError) go again in a request of their own and are
// deleted; a key refused (AccessDenied) fails at once.
func TestS3DeleteManySendsTransientFailuresAgain(t *testing.T) {
	var mu sync.Mutex
	var sent [][]string
	endpoint := proxyMinIO(t, func(w http.ResponseWriter, r *http.Request) bool {
		if !isBatchDelete(r) {
			return false
		}
		keys := batchDeleteKeys(t, r)
		mu.Lock()
		sent = append(sent, keys)
		first := len(sent) == 1
		mu.Unlock()
		if !first {
			return false
		}
		deleteErrorsReply(w, keys, map[string]string{numbered(0): "SlowDown", numbered(1): "InternalError", numbered(2): "AccessDenied"})
		return true
	})
	b := newMinIOBucket(t, func(o *objectstore.S3Options) {
		o.Endpoint = endpoint
		o.MaxBackoff = time.Millisecond
	})
	putKeys(t, b, 3)
	failed, err := b.DeleteMany(context.Background(), []string{numbered(0), numbered(1), numbered(2)})
	if fmt.Sprint(failed) != "[d/00002]" || err == nil || !strings.Contains(err.Error(), "AccessDenied") {
		t.Fatalf("%q failed: %v; want d/00002 alone, AccessDenied", failed, err)
	}
	if fmt.Sprint(sent) != "[[d/00000 d/00001 d/00002] [d/00000 d/00001]]" {
		t.Fatalf("DeleteObjects requests for %v, want all three keys, then d/00000 and d/00001", sent)
	}
	var left []string
	if err := b.List(context.Background(), "d/", func(a objectstore.Attrs) error {
		left = append(left, a.Key)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(left) != "[d/00002]" {
		t.Fatalf("%v left, want d/00002 alone", left)
	}
}

// A key the store keeps answering SlowDown for fails with it once the
// retryer's attempts (MaxAttempts) are spent.
func TestS3DeleteManyGivesUpOnAKeyStillThrottled(t *testing.T) {
	var requests atomic.Int32
	endpoint := proxyMinIO(t, func(w http.ResponseWriter, r *http.Request) bool {
		if !isBatchDelete(r) {
			return false
		}
		requests.Add(1)
		keys := batchDeleteKeys(t, r)
		deleteErrorsReply(w, keys, map[string]string{numbered(0): "SlowDown"})
		return true
	})
	b := newMinIOBucket(t, func(o *objectstore.S3Options) {
		o.Endpoint = endpoint
		o.MaxAttempts = 3
		o.MaxBackoff = time.Millisecond
	})
	failed, err := b.DeleteMany(context.Background(), []string{numbered(0)})
	if fmt.Sprint(failed) != "[d/00000]" || err == nil || !strings.Contains(err.Error(), "SlowDown") {
		t.Fatalf("%q failed: %v; want d/00000, SlowDown", failed, err)
	}
	if requests.Load() != 3 {
		t.Fatalf("%d DeleteObjects requests, want 3 (MaxAttempts)", requests.Load())
	}
}

// ListAfter has the store skip the keys up to after: the tail of a
// directory of many pages is one list request.
func TestS3ListAfterAsksForTheTailOnly(t *testing.T) {
	var lists atomic.Int32
	b := newMinIOBucket(t, func(o *objectstore.S3Options) {
		o.ListPageSize = 10
		o.WrapTransport = func(next http.RoundTripper) http.RoundTripper {
			return roundTripFunc(func(r *http.Request) (*http.Response, error) {
				if r.URL.Query().Get("list-type") == "2" {
					lists.Add(1)
				}
				return next.RoundTrip(r)
			})
		}
	})
	ctx := context.Background()
	for i := range 50 {
		if _, err := b.Put(ctx, fmt.Sprintf("p/%05d", i), bytes.NewReader(nil), 0, objectstore.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	var keys []string
	if err := b.ListAfter(ctx, "p/", "p/00045", func(a objectstore.Attrs) error {
		keys = append(keys, a.Key)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(keys) != "[p/00046 p/00047 p/00048 p/00049]" || lists.Load() != 1 {
		t.Fatalf("listed %v in %d requests, want p/00046 to p/00049 in 1", keys, lists.Load())
	}
}

var minioStatOpts = minio.StatObjectOptions{}
