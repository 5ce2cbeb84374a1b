package main

import (
	"context"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestKillNineKeepsCommittedOffsets: a group consumer commits what it
// consumed, the broker is killed with SIGKILL, and after a restart on the
// same data directory the group's committed offsets are all there and a
// new member of the group resumes after them.
func TestKillNineKeepsCommittedOffsets(t *testing.T) {
	p := startDev(t, "")
	adm := kadm.NewClient(p.client())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := adm.CreateTopic(ctx, 3, 1, nil, "committed"); err != nil {
		t.Fatal(err)
	}
	prod := p.client(kgo.DefaultProduceTopic("committed"))
	produce := func(cl *kgo.Client, from, to int) {
		for i := from; i < to; i++ {
			if err := cl.ProduceSync(ctx, &kgo.Record{Key: []byte(strconv.Itoa(i)), Value: []byte(strconv.Itoa(i))}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
	}
	produce(prod, 0, 90)
	cons := p.client(kgo.ConsumerGroup("survivor"), kgo.ConsumeTopics("committed"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.DisableAutoCommit(), kgo.FetchMaxWait(200*time.Millisecond))
	got := consumeAll(t, cons, 90)
	if err := cons.CommitUncommittedOffsets(ctx); err != nil {
		t.Fatal(err)
	}
	before, err := adm.FetchOffsets(ctx, "survivor")
	if err != nil || len(before) == 0 {
		t.Fatalf("committed offsets: %v %v", before, err)
	}
	p.stop(syscall.SIGKILL)
	cons.Close()
	prod.Close()

	p2 := startDev(t, p.dataDir)
	adm2 := kadm.NewClient(p2.client())
	var after kadm.OffsetResponses
	deadline := time.Now().Add(30 * time.Second)
	for {
		after, err = adm2.FetchOffsets(ctx, "survivor")
		if err == nil && after.Error() == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("fetch offsets after restart: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	total := int64(0)
	before.Each(func(o kadm.OffsetResponse) {
		a, ok := after.Lookup(o.Topic, o.Partition)
		if !ok || a.At != o.At {
			t.Fatalf("partition %d: committed %d before the kill, %v after", o.Partition, o.At, a)
		}
		total += o.At
	})
	if total != int64(len(got)) {
		t.Fatalf("committed offsets add up to %d, consumed %d", total, len(got))
	}
	// A new member of the group resumes after the committed offsets.
	produce(p2.client(kgo.DefaultProduceTopic("committed")), 90, 100)
	next := p2.client(kgo.ConsumerGroup("survivor"), kgo.ConsumeTopics("committed"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(200*time.Millisecond))
	rest := consumeAll(t, next, 10)
	for _, r := range rest {
		if n, _ := strconv.Atoi(string(r.Value)); n < 90 {
			t.Fatalf("record %d consumed again after the restart", n)
		}
	}
}
