package objectstore_test

import (
	"testing"

	"github.com/shale-log/shale/objectstore"
	"github.com/shale-log/shale/objectstore/objectstoretest"
)

func TestMemConformance(t *testing.T) {
	objectstoretest.Run(t, func(t *testing.T) objectstore.Bucket { return objectstore.NewMem() })
}
