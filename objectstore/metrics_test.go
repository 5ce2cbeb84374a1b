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

// topicOfFirstDir is a key's first directory, as a topic.
func topicOfFirstDir(key string) (string, bool) {
	dir, _, ok := strings.Cut(key, "/")
	return dir, ok
}

// TestMetricsCount: calls by operation and result, bytes, and, attributed
// to topics, each call of a store that counts no requests of its own as
// one billed request of its key's topic (none for a key of no topic), and
// each key of a batch delete as the free request of its Delete, whatever
// topics the batch spans; a topic's series gone once it is forgotten.
func TestMetricsCount(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := objectstore.NewMetrics(reg)
	m.AttributeToTopics(topicOfFirstDir)
	// Under a prefix, as an S3 bucket is opened: the calls still count.
	pb, err := objectstore.WithPrefix(objectstore.NewMem(), "cluster")
	if err != nil {
		t.Fatal(err)
	}
	b := m.Wrap(pb)
	ctx := context.Background()
	b.Put(ctx, "t1/k", strings.NewReader("hello"), 5, objectstore.PutOptions{})
	b.Put(ctx, "t1/k", strings.NewReader("again"), 5, objectstore.PutOptions{IfNoneMatch: true})
	body, _ := b.Get(ctx, "t1/k", 1, 3)
	io.ReadAll(body)
	body.Close()
	b.Head(ctx, "t2/missing")
	b.List(ctx, "t2/", func(objectstore.Attrs) error { return nil })
	b.Put(ctx, "cluster.json", strings.NewReader("{}"), 2, objectstore.PutOptions{})
	b.Delete(ctx, "t1/k")
	b.DeleteMany(ctx, []string{"t2/a", "t1/b", "cluster.json", "t2/c"})
	want := `
# HELP shale_objectstore_bytes_total Bytes written by puts and read from get bodies.
# TYPE shale_objectstore_bytes_total counter
shale_objectstore_bytes_total{op="get"} 3
shale_objectstore_bytes_total{op="put"} 7
# HELP shale_objectstore_requests_total Object store calls by operation and result (ok, not_found, precondition_failed, invalid, error).
# TYPE shale_objectstore_requests_total counter
shale_objectstore_requests_total{op="delete",result="ok"} 1
shale_objectstore_requests_total{op="delete_many",result="ok"} 1
shale_objectstore_requests_total{op="get",result="ok"} 1
shale_objectstore_requests_total{op="head",result="not_found"} 1
shale_objectstore_requests_total{op="list",result="ok"} 1
shale_objectstore_requests_total{op="put",result="ok"} 2
shale_objectstore_requests_total{op="put",result="precondition_failed"} 1
# HELP shale_objectstore_topic_requests_total Requests the store bills, by the topic whose objects they touch and billing class (as shale_objectstore_s3_requests_total): for an S3 bucket each HTTP request it answered, retries and multipart parts included (a batch delete's by its first key's topic); for other stores each call (list is a put, head a get, delete free), and each key of a batch delete (free). Requests for objects of no topic (the archive descriptor) are not counted here.
# TYPE shale_objectstore_topic_requests_total counter
shale_objectstore_topic_requests_total{class="free",topic="t1"} 2
shale_objectstore_topic_requests_total{class="free",topic="t2"} 2
shale_objectstore_topic_requests_total{class="get",topic="t1"} 1
shale_objectstore_topic_requests_total{class="get",topic="t2"} 1
shale_objectstore_topic_requests_total{class="put",topic="t1"} 2
shale_objectstore_topic_requests_total{class="put",topic="t2"} 1
`
	names := []string{"shale_objectstore_bytes_total", "shale_objectstore_requests_total", "shale_objectstore_topic_requests_total"}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), names...); err != nil {
		t.Fatal(err)
	}
	m.ForgetTopic("t1")
	if n := testutil.CollectAndCount(reg, "shale_objectstore_topic_requests_total"); n != 3 {
		t.Errorf("after forgetting t1: %d series of shale_objectstore_topic_requests_total, want t2's 3", n)
	}
}
