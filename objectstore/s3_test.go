package objectstore_test

import (
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
	return miniotest.Shared(t).NewS3(t, func(o *objectstore.S3Options) {
		o.PartSize = 5 << 20
		o.ListPageSize = 100
		if tune != nil {
			tune(o)
		}
	})
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
