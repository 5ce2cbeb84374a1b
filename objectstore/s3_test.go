package objectstore_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/minio/minio-go/v7"

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
// default ones), single and multipart puts, ranged gets and conditional
// puts still work.
func TestS3ChecksumsWhenRequired(t *testing.T) {
	b := newMinIOBucket(t, func(o *objectstore.S3Options) {
		o.RequestChecksumCalculation = "when_required"
		o.ResponseChecksumValidation = "when_required"
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
