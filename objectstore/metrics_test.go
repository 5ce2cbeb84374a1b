package objectstore_test

import (
	"context"
	"io"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/shale-log/shale/objectstore"
	"github.com/shale-log/shale/objectstore/objectstoretest"
)

func TestMetricsConformance(t *testing.T) {
	m := objectstore.NewMetrics(nil)
	objectstoretest.Run(t, func(t *testing.T) objectstore.Bucket { return m.Wrap(objectstore.NewMem()) })
}

func TestMetricsCount(t *testing.T) {
	reg := prometheus.NewRegistry()
	b := objectstore.NewMetrics(reg).Wrap(objectstore.NewMem())
	ctx := context.Background()
	b.Put(ctx, "k", strings.NewReader("hello"), 5, objectstore.PutOptions{})
	b.Put(ctx, "k", strings.NewReader("again"), 5, objectstore.PutOptions{IfNoneMatch: true})
	body, _ := b.Get(ctx, "k", 1, 3)
	io.ReadAll(body)
	body.Close()
	b.Head(ctx, "missing")
	b.Delete(ctx, "k")
	want := `
# HELP shale_objectstore_bytes_total Bytes written by puts and read from get bodies.
# TYPE shale_objectstore_bytes_total counter
shale_objectstore_bytes_total{op="get"} 3
shale_objectstore_bytes_total{op="put"} 5
# HELP shale_objectstore_requests_total Object store calls by operation and result (ok, not_found, precondition_failed, invalid, error).
# TYPE shale_objectstore_requests_total counter
shale_objectstore_requests_total{op="delete",result="ok"} 1
shale_objectstore_requests_total{op="get",result="ok"} 1
shale_objectstore_requests_total{op="head",result="not_found"} 1
shale_objectstore_requests_total{op="put",result="ok"} 1
shale_objectstore_requests_total{op="put",result="precondition_failed"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "shale_objectstore_bytes_total", "shale_objectstore_requests_total"); err != nil {
		t.Fatal(err)
	}
}
