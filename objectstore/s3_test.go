package objectstore_test

import (
	"context"
	"testing"

	"github.com/minio/minio-go/v7"

	"github.com/shale-log/shale/objectstore"
	"github.com/shale-log/shale/objectstore/miniotest"
	"github.com/shale-log/shale/objectstore/objectstoretest"
)

func TestMain(m *testing.M) { miniotest.Main(m) }

// newMinIOBucket is an S3 bucket on the package's MinIO, with the
// smallest part size S3 allows (so the suite's large object is a
// multipart upload) and small list pages (so listing paginates).
func newMinIOBucket(t *testing.T, tune func(*objectstore.S3Options)) *objectstore.S3 {
	t.Helper()
	srv := miniotest.Shared(t)
	opts := objectstore.S3Options{
		Bucket:       srv.NewBucket(t),
		Endpoint:     srv.Endpoint,
		Region:       "us-east-1",
		PathStyle:    true,
		AccessKey:    miniotest.AccessKey,
		SecretKey:    miniotest.SecretKey,
		PartSize:     5 << 20,
		ListPageSize: 100,
	}
	if tune != nil {
		tune(&opts)
	}
	b, err := objectstore.NewS3(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestS3Conformance(t *testing.T) {
	objectstoretest.Run(t, func(t *testing.T) objectstore.Bucket { return newMinIOBucket(t, nil) })
}

func TestS3ConformanceChecksumsWhenRequired(t *testing.T) {
	objectstoretest.Run(t, func(t *testing.T) objectstore.Bucket {
		return newMinIOBucket(t, func(o *objectstore.S3Options) {
			o.RequestChecksumCalculation = "when_required"
			o.ResponseChecksumValidation = "when_required"
		})
	})
}

var minioStatOpts = minio.StatObjectOptions{}
