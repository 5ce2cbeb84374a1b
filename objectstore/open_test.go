package objectstore_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/shale-log/shale/objectstore"
	"github.com/shale-log/shale/objectstore/miniotest"
	"github.com/shale-log/shale/objectstore/objectstoretest"
)

func TestCheckKeyLimits(t *testing.T) {
	for key, ok := range map[string]bool{
		strings.Repeat("k", objectstore.MaxKeyLen):   true,
		strings.Repeat("k", objectstore.MaxKeyLen+1): false,
		"a/b.c/..d":   true,
		"a/./b":       false,
		"tab\there":   false,
		"del\x7f":     false,
		"ok-é/東京":     true,
		"trailing/":   false,
		"/leading":    false,
		"double//sep": false,
	} {
		if err := objectstore.CheckKey(key); (err == nil) != ok || (err != nil && !errors.Is(err, objectstore.ErrInvalidKey)) {
			t.Errorf("CheckKey(%.20q) = %v, want ok=%v", key, err, ok)
		}
	}
}

func TestWithPrefixConformance(t *testing.T) {
	objectstoretest.Run(t, func(t *testing.T) objectstore.Bucket {
		inner := objectstore.NewMem()
		// A neighbour outside the prefix stays invisible.
		inner.Put(context.Background(), "pre/fixed", bytes.NewReader(nil), 0, objectstore.PutOptions{})
		b, err := objectstore.WithPrefix(inner, "pre/fix")
		if err != nil {
			t.Fatal(err)
		}
		return b
	})
}

func TestWithPrefixStoresUnderPrefix(t *testing.T) {
	inner := objectstore.NewMem()
	b, err := objectstore.WithPrefix(inner, "cluster-1")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := b.Put(ctx, "t/0/x", strings.NewReader("x"), 1, objectstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := inner.Head(ctx, "cluster-1/t/0/x"); err != nil {
		t.Fatalf("not stored under the prefix: %v", err)
	}
	if _, err := objectstore.WithPrefix(inner, "bad/"); !errors.Is(err, objectstore.ErrInvalidKey) {
		t.Fatalf("prefix with a trailing slash: %v", err)
	}
}

func TestOpen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	for _, tc := range []struct {
		url, want string
	}{
		{"mem://", "*objectstore.Mem"},
		{"file://" + dir, "*objectstore.FS"},
		{"s3://bucket", "*objectstore.S3"},
		{"s3://bucket/some/prefix?endpoint=http://127.0.0.1:9&region=eu-west-1", "*objectstore.prefixed"},
		{"s3://bucket?endpoint=http://127.0.0.1:9&path_style=false&request_checksum=when_required&response_checksum=when_required&part_size=5242880&multipart_threshold=134217728", "*objectstore.S3"},
		{"file://relative/path", "error"},
		{"file:///" + dir[1:] + "?x=1", "error"},
		{"mem://name", "error"},
		{"s3://", "error"},
		{"s3://bucket?bogus=1", "error"},
		{"s3://bucket?path_style=yes", "error"},
		{"s3://bucket?request_checksum=never", "error"},
		{"s3://bucket?part_size=1024", "error"},
		{"s3://bucket?multipart_threshold=big", "error"},
		{"s3://bucket?create_bucket=maybe", "error"},
		{"s3://bucket//double", "error"},
		{"gs://bucket", "error"},
		{"/just/a/path", "error"},
	} {
		b, err := objectstore.Open(ctx, tc.url, objectstore.OpenOptions{})
		got := "error"
		if err == nil {
			got = fmt.Sprintf("%T", b)
			b.Close()
		}
		if got != tc.want {
			t.Errorf("Open(%q) = %s (%v), want %s", tc.url, got, err, tc.want)
		}
	}
}

func TestOpenS3URLOnMinIO(t *testing.T) {
	srv := miniotest.Shared(t)
	bucket := srv.NewBucket(t)
	for _, kv := range miniotest.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	ctx := context.Background()
	b, err := objectstore.Open(ctx, srv.URL(bucket, "shale/dev"), objectstore.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Put(ctx, "k", strings.NewReader("v"), 1, objectstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	// An independent client finds it under the prefix.
	obj, err := srv.Client().StatObject(ctx, bucket, "shale/dev/k", minioStatOpts)
	if err != nil || obj.Size != 1 {
		t.Fatalf("minio-go stat: %+v %v", obj, err)
	}
}

func TestOpenS3CreateBucketMakesAMissingBucketOnce(t *testing.T) {
	srv := miniotest.Shared(t)
	for _, kv := range miniotest.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	ctx := context.Background()
	var rnd [6]byte
	rand.Read(rnd[:])
	bucket := "created-" + hex.EncodeToString(rnd[:])
	t.Cleanup(func() {
		srv.Client().RemoveBucketWithOptions(context.Background(), bucket, minio.RemoveBucketOptions{ForceDelete: true})
	})

	// Without create_bucket a missing bucket is not created.
	b, err := objectstore.Open(ctx, srv.URL(bucket, ""), objectstore.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
	if ok, err := srv.Client().BucketExists(ctx, bucket); err != nil || ok {
		t.Fatalf("bucket exists without create_bucket: %v %v", ok, err)
	}
	// Three brokers starting at once all succeed; one bucket results.
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range errs {
		wg.Go(func() {
			b, err := objectstore.Open(ctx, srv.URL(bucket, "p")+"&create_bucket=true", objectstore.OpenOptions{})
			if err == nil {
				_, err = b.Put(ctx, fmt.Sprintf("k%d", i), strings.NewReader("v"), 1, objectstore.PutOptions{})
				b.Close()
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("open %d: %v", i, err)
		}
	}
	if ok, err := srv.Client().BucketExists(ctx, bucket); err != nil || !ok {
		t.Fatalf("bucket missing after create_bucket=true: %v %v", ok, err)
	}
}

// A broker started while its store is down must still start: with
// create_bucket=true, Open then succeeds and the bucket is made once the
// store answers; a store that hangs (frozen: connections accepted, nothing
// answered) holds Open for createWait, not for the request timeout (30s).
// A store that answers with a refusal still fails Open.
func TestOpenS3CreateBucketWaitsForAStoreThatIsDown(t *testing.T) {
	srv := miniotest.Start(t)
	for _, kv := range miniotest.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	ctx := context.Background()
	for _, down := range []struct {
		name     string
		stop, up func() error
	}{
		{"killed", func() error { srv.Kill(); return nil }, srv.Restart},
		{"frozen", func() error { srv.Pause(); return nil }, func() error { srv.Resume(); return nil }},
	} {
		bucket := "made-later-" + down.name
		url := srv.URL(bucket, "p") + "&create_bucket=true"
		if err := down.stop(); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		b, err := objectstore.Open(ctx, url, objectstore.OpenOptions{})
		if err != nil {
			t.Fatalf("open with the store %s: %v", down.name, err)
		}
		defer b.Close()
		// Far above createWait (3s), far below the request timeout.
		if took := time.Since(start); took > 15*time.Second {
			t.Fatalf("open with the store %s took %s", down.name, took)
		}
		if err := down.up(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(time.Minute)
		for {
			ok, err := srv.Client().BucketExists(ctx, bucket)
			if err == nil && ok {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("store %s: bucket not made a minute after the store came back: %v %v", down.name, ok, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		if _, err := b.Put(ctx, "k", strings.NewReader("v"), 1, objectstore.PutOptions{}); err != nil {
			t.Fatalf("store %s: put once the bucket is made: %v", down.name, err)
		}
	}

	// Wrong credentials: the store answers, and Open fails at once.
	t.Setenv("AWS_ACCESS_KEY_ID", "nobody")
	if b, err := objectstore.Open(ctx, srv.URL("refused", "")+"&create_bucket=true", objectstore.OpenOptions{}); err == nil {
		b.Close()
		t.Fatal("open with credentials the store refuses succeeded")
	} else if objectstore.Unreachable(err) {
		t.Fatalf("a refusal taken for an outage: %v", err)
	}
}
