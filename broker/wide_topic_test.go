package broker_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker/brokertest"
	"github.com/shale-log/shale/localseg"
)

// gatedFS holds every RemoveAll under the partition directories of one
// topic until released: a disk slow to unlink a wide topic's files, or a
// removal a crash cuts short.
type gatedFS struct {
	localseg.FS
	topic string

	mu       sync.Mutex
	open     chan struct{} // closed: calls pass
	err      error         // returned by held calls once released (nil: they proceed)
	held     int
	released bool
}

func newGatedFS(topic string) *gatedFS {
	return &gatedFS{FS: localseg.OSFS{}, topic: topic, open: make(chan struct{})}
}

func (g *gatedFS) RemoveAll(dir string) error {
	if strings.HasPrefix(filepath.Base(filepath.Dir(dir)), g.topic+"-") || strings.HasPrefix(filepath.Base(dir), g.topic+"-") {
		g.mu.Lock()
		g.held++
		ch := g.open
		g.mu.Unlock()
		<-ch
		g.mu.Lock()
		err := g.err
		g.mu.Unlock()
		if err != nil {
			return err
		}
	}
	return g.FS.RemoveAll(dir)
}

// release lets the held and later calls through, failing with err (nil:
// they proceed).
func (g *gatedFS) release(err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.err = err
	if !g.released {
		g.released = true
		close(g.open)
	}
}

func (g *gatedFS) heldCalls() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.held
}

// topicDirs counts the partition directories of topic under the broker's
// log directory.
func topicDirs(t *testing.T, b *brokertest.Broker, topic string) int {
	t.Helper()
	entries, err := os.ReadDir(brokertest.LogDir(b.Dir))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range entries {
		if rest, ok := strings.CutPrefix(e.Name(), topic+"-"); ok && !strings.ContainsAny(rest, "-.") {
			n++
		}
	}
	return n
}

func deleteTopicCode(t *testing.T, cl *kgo.Client, topic string, timeout time.Duration) int16 {
	t.Helper()
	req := kmsg.NewPtrDeleteTopicsRequest()
	req.TimeoutMillis = int32(timeout.Milliseconds())
	rt := kmsg.NewDeleteTopicsRequestTopic()
	rt.Topic = &topic
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(testCtx(t), cl)
	if err != nil {
		t.Fatal(err)
	}
	return resp.Topics[0].ErrorCode
}

// produceToEach produces n records to every partition of topic, valued
// prefix-partition-i, and waits for them (franz-go retries partitions whose
// logs are not open yet).
func produceToEach(t *testing.T, b *brokertest.Broker, topic string, partitions int32, n int, prefix string) {
	t.Helper()
	cl := b.Client(kgo.DefaultProduceTopic(topic), kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.MaxBufferedRecords(1<<20))
	var recs []*kgo.Record
	for p := range partitions {
		for i := range n {
			recs = append(recs, &kgo.Record{Partition: p, Value: fmt.Appendf(nil, "%s-%d-%d", prefix, p, i)})
		}
	}
	produceSync(t, cl, recs...)
}

// deleteWithRemovalHeld starts a broker whose disk holds the removal of
// topic's directories, creates topic with five records a partition, deletes
// it, and returns once the removal is held.
func deleteWithRemovalHeld(t *testing.T, topic string, parts int32) (*brokertest.Broker, *gatedFS) {
	t.Helper()
	gate := newGatedFS(topic)
	b := brokertest.StartOn(t, t.TempDir(), gate)
	t.Cleanup(func() { gate.release(nil) })
	createTopic(t, b.Admin(), topic, parts, nil)
	produceToEach(t, b, topic, parts, 5, "old")
	if code := deleteTopicCode(t, b.Client(), topic, 5*time.Second); code != 0 {
		t.Fatalf("delete: error code %d", code)
	}
	brokertest.WaitFor(t, 30*time.Second, "the removal to reach the disk", func() (bool, string) {
		return gate.heldCalls() > 0, "no removal held yet"
	})
	return b, gate
}

// Deleting a 2000-partition topic answers within its request timeout
// while the disk holds the removal of every partition directory: the
// directories are removed in the background, after the answer.
// (DeleteTopics used to close every log, with its fsyncs, and remove its
// directory before answering: REQUEST_TIMED_OUT under load, and here,
// where the disk holds the removal, always, whatever the timeout.)
//
// The creation before is given minutes: on a loaded machine (the race
// detector, other packages' tests on two cores) writing 2000 partitions
// to etcd and opening their logs took longer than a 30 s request
// timeout, and the client, reading for the timeout plus its 10 s
// overhead, gave up with an i/o timeout before the broker answered.
func TestDeleteWideTopicAnswersBeforeItsLogsAreRemoved(t *testing.T) {
	const topic, parts = "wide", 2000
	gate := newGatedFS(topic)
	b := brokertest.StartOn(t, t.TempDir(), gate)
	t.Cleanup(func() { gate.release(nil) })
	cl := b.Client()
	req := createTopicsRequest(false, topicReq(topic, parts))
	req.TimeoutMillis = 240_000
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		t.Fatalf("creating %d partitions: %v after %v", parts, err, time.Since(start).Round(time.Millisecond))
	}
	if code := resp.Topics[0].ErrorCode; code != 0 {
		t.Fatalf("creating %d partitions: error code %d after %v", parts, code, time.Since(start).Round(time.Millisecond))
	}
	t.Logf("CreateTopics answered after %v", time.Since(start).Round(time.Millisecond))
	brokertest.WaitFor(t, 10*time.Minute, "every partition directory to be created", func() (bool, string) {
		n := topicDirs(t, b, topic)
		return n == parts, fmt.Sprintf("%d directories", n)
	})
	t.Logf("every partition directory there after %v", time.Since(start).Round(time.Millisecond))

	start = time.Now()
	// Any timeout tells an answer that waits for the held removal (never)
	// from one that does not; 30 s leaves room for the load.
	if code := deleteTopicCode(t, cl, topic, 30*time.Second); code != 0 {
		t.Fatalf("deleting a %d-partition topic: error code %d after %v", parts, code, time.Since(start).Round(time.Millisecond))
	}
	t.Logf("deleted %d partitions in %v", parts, time.Since(start).Round(time.Millisecond))
	if n := topicDirs(t, b, topic); n == 0 {
		t.Fatal("every directory was removed while the disk held the removal")
	}
	gate.release(nil)
	brokertest.WaitFor(t, 120*time.Second, "the deleted topic's directories to be removed", func() (bool, string) {
		n := topicDirs(t, b, topic)
		return n == 0, fmt.Sprintf("%d directories left", n)
	})
}

// A topic re-created under the name of one just deleted, while the old
// directories are still being removed, starts empty: its logs open once
// the old directories are gone, and no old record shows through.
func TestTopicRecreatedWhileItsOldLogsAreRemovedStartsEmpty(t *testing.T) {
	const topic, parts = "again", 8
	b, gate := deleteWithRemovalHeld(t, topic, parts)
	createTopic(t, b.Admin(), topic, parts, nil)
	if n := topicDirs(t, b, topic); n != parts {
		t.Fatalf("%d directories while the old ones are held, want %d", n, parts)
	}
	gate.release(nil)
	produceToEach(t, b, topic, parts, 2, "new")
	recs := consumeN(t, b, topic, 2*parts)
	for _, r := range recs {
		if !strings.HasPrefix(string(r.Value), "new-") || r.Offset > 1 {
			t.Errorf("partition %d offset %d holds %q: the re-created topic shows the deleted one's data", r.Partition, r.Offset, r.Value)
		}
	}
}

// A removal cut short (the broker stopped while the disk failed it) resumes
// at the next start: the deleted topic's directories still name its id, and
// go; a topic re-created under the same name meanwhile keeps only its own
// records.
func TestDeletedTopicRemovalCutShortResumesAtStart(t *testing.T) {
	const topic, parts = "cut", 4
	b, gate := deleteWithRemovalHeld(t, topic, parts)
	gate.release(syscall.EIO)
	b.RestartOn(nil)
	brokertest.WaitFor(t, 30*time.Second, "the deleted topic's directories to be removed after the restart", func() (bool, string) {
		n := topicDirs(t, b, topic)
		return n == 0, fmt.Sprintf("%d directories left", n)
	})
	createTopic(t, b.Admin(), topic, parts, nil)
	produceToEach(t, b, topic, parts, 1, "new")
	for _, r := range consumeN(t, b, topic, parts) {
		if !strings.HasPrefix(string(r.Value), "new-") || r.Offset != 0 {
			t.Errorf("partition %d offset %d holds %q after the restart", r.Partition, r.Offset, r.Value)
		}
	}
}
