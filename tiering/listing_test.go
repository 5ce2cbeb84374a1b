package tiering

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shale-log/shale/objectstore"
)

// listCounting counts the objects List and ListAfter hand out.
type listCounting struct {
	objectstore.Bucket
	listed atomic.Int64
}

func (c *listCounting) List(ctx context.Context, prefix string, fn func(objectstore.Attrs) error) error {
	return c.ListAfter(ctx, prefix, "", fn)
}

func (c *listCounting) ListAfter(ctx context.Context, prefix, after string, fn func(objectstore.Attrs) error) error {
	return c.Bucket.ListAfter(ctx, prefix, after, func(a objectstore.Attrs) error {
		c.listed.Add(1)
		return fn(a)
	})
}

// Finding a bucket's topics, and its unfinished or recent deletions (what
// every broker does when it starts), costs requests per topic, not per
// segment: ListTopics lists no object at all, and the deletions list a
// deleted topic's directory only as far as its first object besides the
// marker. A year of history is millions of objects.
func TestListingTopicsAndDeletionsDoesNotListSegments(t *testing.T) {
	ctx := context.Background()
	mem := objectstore.NewMem()
	l := Layout{Prefix: "archive"}
	put := func(key string) {
		t.Helper()
		if _, err := mem.Put(ctx, key, bytes.NewReader(nil), 0, objectstore.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	topic := func(name string, id byte, segments int) [16]byte {
		t.Helper()
		tid := [16]byte{id}
		d := TopicDescriptor{Name: name, ID: TopicDir(name, tid)[len(name)+1:], Partitions: 2}
		if err := PutTopic(ctx, mem, l, d); err != nil {
			t.Fatal(err)
		}
		for p := range int32(2) {
			part := Partition{Topic: name, TopicID: tid, Index: p}
			for s := range segments {
				put(l.SegmentKey(part, int64(s)*100, [16]byte{byte(s), byte(s >> 8)}))
				put(l.CompanionKey(part, int64(s)*100, [16]byte{byte(s), byte(s >> 8)}))
			}
		}
		return tid
	}
	topic("orders", 1, 300)
	topic("clicks", 2, 300)
	gone := topic("gone", 3, 300)
	done := topic("done", 4, 0)
	put(l.GroupShardKey("cluster", 0))
	if err := EnsureArchive(ctx, mem, l, time.Now()); err != nil {
		t.Fatal(err)
	}
	// "gone" is being deleted: its marker, and its segments still there.
	// "done" was deleted: its marker alone.
	for _, d := range []struct {
		name string
		id   [16]byte
	}{{"gone", gone}, {"done", done}} {
		m := DeletionMarker{Name: d.name, ID: TopicDir(d.name, d.id)[len(d.name)+1:], DeletedAt: time.Now().UTC()}
		if err := putJSON(ctx, mem, l.DeletedKey(d.name, d.id), m, objectstore.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := mem.Delete(ctx, l.TopicKey("done", done)); err != nil {
		t.Fatal(err)
	}

	b := &listCounting{Bucket: mem}
	topics, err := ListTopics(ctx, b, l)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range topics {
		names = append(names, d.Name)
	}
	if !slices.Equal(names, []string{"clicks", "orders"}) || b.listed.Load() != 0 {
		t.Fatalf("ListTopics: %v, listing %d objects; want [clicks orders] (in directory order), none listed", names, b.listed.Load())
	}
	pending, err := PendingDeletions(ctx, b, l)
	if err != nil {
		t.Fatal(err)
	}
	if len(pending) != 1 || pending[0].Name != "gone" || b.listed.Load() > 2 {
		t.Fatalf("PendingDeletions: %+v, listing %d objects; want gone, at most 2 listed (done's marker, gone's first segment)", pending, b.listed.Load())
	}
	b.listed.Store(0)
	recent, err := RecentDeletions(ctx, b, l, time.Now().Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	var deleted []string
	for _, m := range recent {
		deleted = append(deleted, m.Name)
	}
	if !slices.Equal(deleted, []string{"done", "gone"}) || b.listed.Load() != 0 {
		t.Fatalf("RecentDeletions: %+v, listing %d objects; want done and gone, none listed", recent, b.listed.Load())
	}
}

// deleteWatching records how many objects had been listed when each
// delete came.
type deleteWatching struct {
	*listCounting
	mu        sync.Mutex
	listedAt  []int64
	failFirst int // deletes to fail
}

func (d *deleteWatching) DeleteMany(ctx context.Context, keys []string) ([]string, error) {
	var failed, rest []string
	d.mu.Lock()
	for _, k := range keys {
		d.listedAt = append(d.listedAt, d.listed.Load())
		if len(d.listedAt) <= d.failFirst {
			failed = append(failed, k)
		} else {
			rest = append(rest, k)
		}
	}
	d.mu.Unlock()
	if _, err := d.listCounting.Bucket.DeleteMany(ctx, rest); err != nil {
		return keys, err
	}
	if len(failed) > 0 {
		return failed, errors.New("refused")
	}
	return nil, nil
}

// Deleting a topic's objects deletes as the listing goes, a page at a
// time, not after holding the whole listing (millions of keys for a year
// of history), and goes on past failed deletes: what they left is found
// the next time.
func TestDeletingATopicDeletesAsItLists(t *testing.T) {
	ctx := context.Background()
	mem := objectstore.NewMem()
	l := Layout{Prefix: "archive"}
	p := testPartition
	const objects = 2500
	for i := range objects {
		key := l.SegmentKey(p, int64(i)*10, [16]byte{byte(i), byte(i >> 8)})
		if _, err := mem.Put(ctx, key, bytes.NewReader(nil), 0, objectstore.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	d := &deleteWatching{listCounting: &listCounting{Bucket: mem}, failFirst: 3}
	if err := DeleteTopic(ctx, d, l, p.Topic, p.TopicID, time.Now(), nil); err == nil {
		t.Fatal("refused deletes not reported")
	}
	if len(d.listedAt) != objects || d.listedAt[0] > deletePage || d.listedAt[0] == 0 {
		t.Fatalf("%d deletes, the first after %d objects listed", len(d.listedAt), d.listedAt[0])
	}
	n, err := SweepDeletedTopic(ctx, d, l, p.Topic, p.TopicID, nil)
	if n != 3 || err != nil {
		t.Fatalf("the next sweep found %d (%v), want the 3 refused", n, err)
	}
	if keys := listAttrs(t, mem, l.TopicPrefix(p.Topic, p.TopicID)); len(keys) != 1 || keys[0].Key != l.DeletedKey(p.Topic, p.TopicID) {
		t.Fatalf("left: %d objects", len(keys))
	}
}
