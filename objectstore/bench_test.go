package objectstore_test

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"strconv"
	"testing"

	"github.com/minio/minio-go/v7"
	"golang.org/x/sync/errgroup"

	"github.com/shale-log/shale/objectstore"
	"github.com/shale-log/shale/objectstore/miniotest"
)

// BenchmarkMinIOGet reads one 64 MiB object from MinIO: through the S3
// bucket in one stream and in parallel 4 MiB ranges, beside the ceiling,
// the same parallel ranged GETs by an independent client (minio-go's
// Core, one request per range and nothing else).
// MB/s is the figure; run it alone:
//
//	go test -run '^$' -bench MinIOGet -benchtime 10x ./objectstore
func BenchmarkMinIOGet(b *testing.B) {
	const size, part, conc = 64 << 20, 4 << 20, 8
	ctx := context.Background()
	srv := miniotest.Shared(b)
	bucket := srv.NewBucket(b)
	s3b, err := objectstore.NewS3(ctx, objectstore.S3Options{
		Bucket: bucket, Endpoint: srv.Endpoint, Region: "us-east-1", PathStyle: true,
		AccessKey: miniotest.AccessKey, SecretKey: miniotest.SecretKey,
	})
	if err != nil {
		b.Fatal(err)
	}
	data := make([]byte, size)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	if _, err := s3b.Put(ctx, "obj", bytes.NewReader(data), size, objectstore.PutOptions{}); err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, size)

	b.Run("shale-one-stream", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			body, err := s3b.Get(ctx, "obj", 0, -1)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := io.ReadFull(body, buf); err != nil {
				b.Fatal(err)
			}
			body.Close()
		}
	})
	b.Run("shale-parallel-4MiBx"+strconv.Itoa(conc), func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			if _, err := objectstore.ReadAt(ctx, s3b, "obj", buf, 0, part, conc); err != nil {
				b.Fatal(err)
			}
		}
	})
	core := minio.Core{Client: srv.Client()}
	b.Run("ceiling-minio-go-parallel-4MiBx"+strconv.Itoa(conc), func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			g, gctx := errgroup.WithContext(ctx)
			g.SetLimit(conc)
			for off := int64(0); off < size; off += part {
				g.Go(func() error {
					opts := minio.GetObjectOptions{}
					if err := opts.SetRange(off, off+part-1); err != nil {
						return err
					}
					obj, _, _, err := core.GetObject(gctx, bucket, "obj", opts)
					if err != nil {
						return err
					}
					defer obj.Close()
					_, err = io.ReadFull(obj, buf[off:off+part])
					return err
				})
			}
			if err := g.Wait(); err != nil {
				b.Fatal(err)
			}
		}
	})
	if !bytes.Equal(buf, data) {
		b.Fatal("read back differs")
	}
}

// BenchmarkMinIOPut writes one 64 MiB object to MinIO through the S3
// bucket (multipart, 8 MiB parts, 4 in flight), beside the ceiling: the
// same upload by minio-go with the same part size and parallelism, and
// no payload hashing (the SDK hashes parts it signs over plain HTTP).
func BenchmarkMinIOPut(b *testing.B) {
	const size, part, conc = 64 << 20, 8 << 20, 4
	ctx := context.Background()
	srv := miniotest.Shared(b)
	bucket := srv.NewBucket(b)
	s3b, err := objectstore.NewS3(ctx, objectstore.S3Options{
		Bucket: bucket, Endpoint: srv.Endpoint, Region: "us-east-1", PathStyle: true,
		AccessKey: miniotest.AccessKey, SecretKey: miniotest.SecretKey,
		PartSize: part, MultipartThreshold: part, Concurrency: conc,
	})
	if err != nil {
		b.Fatal(err)
	}
	data := make([]byte, size)
	r := rand.New(rand.NewPCG(3, 4))
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	b.Run("shale-multipart-8MiBx4", func(b *testing.B) {
		b.SetBytes(size)
		for i := 0; b.Loop(); i++ {
			if _, err := s3b.Put(ctx, "put-"+strconv.Itoa(i), bytes.NewReader(data), size, objectstore.PutOptions{}); err != nil {
				b.Fatal(err)
			}
		}
	})
	mc := srv.Client()
	b.Run("ceiling-minio-go-multipart-8MiBx4", func(b *testing.B) {
		b.SetBytes(size)
		for i := 0; b.Loop(); i++ {
			if _, err := mc.PutObject(ctx, bucket, "ceiling-"+strconv.Itoa(i), bytes.NewReader(data), size,
				minio.PutObjectOptions{PartSize: part, NumThreads: conc, ConcurrentStreamParts: true, DisableContentSha256: true}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkMinIODelete deletes 20,000 empty objects from MinIO (put
// before each round, untimed): in one DeleteMany (DeleteObjects of 1,000
// keys, 4 in flight) beside single Deletes, 8 in flight, as a caller
// without a batch delete would. keys/s is the figure; run it alone:
//
//	go test -run '^$' -bench MinIODelete -benchtime 1x -count 3 ./objectstore
func BenchmarkMinIODelete(b *testing.B) {
	const n, conc = 20000, 8
	ctx := context.Background()
	srv := miniotest.Shared(b)
	s3b, err := objectstore.NewS3(ctx, objectstore.S3Options{
		Bucket: srv.NewBucket(b), Endpoint: srv.Endpoint, Region: "us-east-1", PathStyle: true,
		AccessKey: miniotest.AccessKey, SecretKey: miniotest.SecretKey,
	})
	if err != nil {
		b.Fatal(err)
	}
	keys := make([]string, n)
	for i := range keys {
		keys[i] = "del/" + strconv.Itoa(1e6+i)
	}
	putAll := func(b *testing.B) {
		b.StopTimer()
		defer b.StartTimer()
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(32)
		for _, k := range keys {
			g.Go(func() error {
				_, err := s3b.Put(gctx, k, bytes.NewReader(nil), 0, objectstore.PutOptions{})
				return err
			})
		}
		if err := g.Wait(); err != nil {
			b.Fatal(err)
		}
	}
	report := func(b *testing.B, rounds int) {
		b.ReportMetric(float64(n*rounds)/b.Elapsed().Seconds(), "keys/s")
	}
	b.Run("delete-many", func(b *testing.B) {
		rounds := 0
		for b.Loop() {
			putAll(b)
			if failed, err := s3b.DeleteMany(ctx, keys); err != nil {
				b.Fatalf("%d failed: %v", len(failed), err)
			}
			rounds++
		}
		report(b, rounds)
	})
	b.Run("single-deletes-x"+strconv.Itoa(conc), func(b *testing.B) {
		rounds := 0
		for b.Loop() {
			putAll(b)
			g, gctx := errgroup.WithContext(ctx)
			g.SetLimit(conc)
			for _, k := range keys {
				g.Go(func() error { return s3b.Delete(gctx, k) })
			}
			if err := g.Wait(); err != nil {
				b.Fatal(err)
			}
			rounds++
		}
		report(b, rounds)
	})
}
