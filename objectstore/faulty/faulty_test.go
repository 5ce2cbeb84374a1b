package faulty_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/shale-log/shale/objectstore"
	"github.com/shale-log/shale/objectstore/faulty"
	"github.com/shale-log/shale/objectstore/objectstoretest"
)

// With no rules the wrapper is the bucket it wraps.
func TestConformanceWithoutFaults(t *testing.T) {
	objectstoretest.Run(t, func(t *testing.T) objectstore.Bucket { return faulty.New(objectstore.NewMem()) })
}

func put(b objectstore.Bucket, key, v string) error {
	_, err := b.Put(context.Background(), key, strings.NewReader(v), int64(len(v)), objectstore.PutOptions{})
	return err
}

func TestFailBudgetAndPrefix(t *testing.T) {
	b := faulty.New(objectstore.NewMem())
	boom := errors.New("boom")
	f := b.Add(faulty.Rule{Op: faulty.Put, KeyPrefix: "t/", Times: 2, Fail: true, Err: boom})
	if err := put(b, "other", "x"); err != nil {
		t.Fatalf("unmatched key: %v", err)
	}
	for range 2 {
		if err := put(b, "t/a", "x"); !errors.Is(err, boom) {
			t.Fatalf("matched put: %v, want boom", err)
		}
	}
	if err := put(b, "t/a", "x"); err != nil {
		t.Fatalf("after the budget: %v", err)
	}
	if f.Fired() != 2 || b.Calls(faulty.Put) != 4 || b.Calls(faulty.Get) != 0 {
		t.Fatalf("fired %d, puts %d", f.Fired(), b.Calls(faulty.Put))
	}
	if _, err := b.Inner().Head(context.Background(), "t/a"); err != nil {
		t.Fatalf("the put after the budget did not reach the store: %v", err)
	}
}

func TestLostResponseTakesEffect(t *testing.T) {
	b := faulty.New(objectstore.NewMem())
	b.Add(faulty.Rule{Op: faulty.Put | faulty.Delete, Times: 2, LoseResponse: true})
	if err := put(b, "k", "v"); !errors.Is(err, faulty.ErrLostResponse) {
		t.Fatalf("put: %v", err)
	}
	if _, err := b.Head(context.Background(), "k"); err != nil {
		t.Fatalf("the lost put did not take effect: %v", err)
	}
	if err := b.Delete(context.Background(), "k"); !errors.Is(err, faulty.ErrLostResponse) {
		t.Fatalf("delete: %v", err)
	}
	if _, err := b.Head(context.Background(), "k"); !errors.Is(err, objectstore.ErrNotFound) {
		t.Fatalf("the lost delete did not take effect: %v", err)
	}
}

func TestMeanwhileRunsBetweenTheEffectAndTheLostResponse(t *testing.T) {
	b := faulty.New(objectstore.NewMem())
	var seen string
	b.Add(faulty.Rule{Op: faulty.Put, Times: 1, LoseResponse: true, Meanwhile: func(key string) {
		// The lost put took effect; another writer replaces it.
		seen = key
		if err := put(b.Inner(), key, "theirs"); err != nil {
			t.Error(err)
		}
	}})
	if err := put(b, "k", "mine"); !errors.Is(err, faulty.ErrLostResponse) || seen != "k" {
		t.Fatalf("put: %v, meanwhile saw %q", err, seen)
	}
	body, err := b.Get(context.Background(), "k", 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(body)
	body.Close()
	if string(data) != "theirs" {
		t.Fatalf("stored %q", data)
	}
}

func TestTruncatedBody(t *testing.T) {
	b := faulty.New(objectstore.NewMem())
	put(b, "k", "0123456789")
	b.Add(faulty.Rule{Op: faulty.Get, Times: 1, Truncate: true, TruncateAfter: 4})
	body, err := b.Get(context.Background(), "k", 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(body)
	body.Close()
	if string(data) != "0123" || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("read %q, %v", data, err)
	}
	body, _ = b.Get(context.Background(), "k", 0, -1)
	if data, err := io.ReadAll(body); string(data) != "0123456789" || err != nil {
		t.Fatalf("second read %q %v", data, err)
	}
}

func TestStallEndsWithTheDeadline(t *testing.T) {
	b := faulty.New(objectstore.NewMem())
	b.Add(faulty.Rule{Op: faulty.Any, Stall: true})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := b.Head(ctx, "k"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("head: %v", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatal("stall outlived the deadline")
	}
}

func TestHoldLetsTheCallGoOnceReleased(t *testing.T) {
	b := faulty.New(objectstore.NewMem())
	if err := put(b, "k", "v"); err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	f := b.Add(faulty.Rule{Op: faulty.Get, Hold: release, Times: 1})
	got := make(chan error, 1)
	go func() {
		body, err := b.Get(context.Background(), "k", 0, -1)
		if err == nil {
			body.Close()
		}
		got <- err
	}()
	for f.Fired() == 0 {
		time.Sleep(time.Millisecond)
	}
	select {
	case err := <-got:
		t.Fatalf("the held get returned before its release: %v", err)
	default:
	}
	close(release)
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b.Add(faulty.Rule{Op: faulty.Head, Hold: make(chan struct{})})
	cancel()
	if _, err := b.Head(ctx, "k"); !errors.Is(err, context.Canceled) {
		t.Fatalf("a held head whose context ended: %v", err)
	}
}

func TestLatency(t *testing.T) {
	b := faulty.New(objectstore.NewMem())
	b.Add(faulty.Rule{Op: faulty.List, Latency: 30 * time.Millisecond, Times: 1})
	start := time.Now()
	if err := b.List(context.Background(), "", func(objectstore.Attrs) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 30*time.Millisecond {
		t.Fatalf("list took %v", d)
	}
}

func TestALateWriteLandsAfterItsCallerGaveUp(t *testing.T) {
	b := faulty.New(objectstore.NewMem())
	release := make(chan struct{})
	late := b.Add(faulty.Rule{Op: faulty.Put | faulty.Delete, KeyPrefix: "k", Times: 1, Late: release})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	body := strings.NewReader("mine")
	if _, err := b.Put(ctx, "k", body, 4, objectstore.PutOptions{}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("put: %v", err)
	}
	body.Reset("") // the caller reuses its buffer: the held write kept its bytes
	if _, err := b.Inner().Head(context.Background(), "k"); !errors.Is(err, objectstore.ErrNotFound) {
		t.Fatalf("the held put landed before its release: %v", err)
	}
	close(release)
	for deadline := time.Now().Add(5 * time.Second); late.Landed() == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the held put never landed")
		}
	}
	rc, err := b.Get(context.Background(), "k", 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(rc)
	rc.Close()
	if string(data) != "mine" {
		t.Fatalf("stored %q", data)
	}
	// The budget is spent: the next write goes straight through.
	if err := put(b, "k2", "x"); err != nil || late.Fired() != 1 {
		t.Fatalf("put: %v, fired %d", err, late.Fired())
	}
}

// A DeleteMany is one delete call, matched by any of its keys: an error
// before it fails every key and deletes none; a lost response comes after
// every key went and fails them all; a late one lands at its release.
func TestDeleteManyIsOneCall(t *testing.T) {
	b := faulty.New(objectstore.NewMem())
	ctx := context.Background()
	left := func() string {
		var keys []string
		b.Inner().List(ctx, "", func(a objectstore.Attrs) error {
			keys = append(keys, a.Key)
			return nil
		})
		return strings.Join(keys, " ")
	}
	for _, k := range []string{"u/1", "t/1", "t/2", "u/2"} {
		if err := put(b, k, "x"); err != nil {
			t.Fatal(err)
		}
	}
	f := b.Add(faulty.Rule{Op: faulty.Delete, KeyPrefix: "t/", Times: 1, Fail: true})
	if failed, err := b.DeleteMany(ctx, []string{"u/1"}); len(failed) != 0 || err != nil {
		t.Fatalf("delete of a key outside the prefix: %q failed: %v", failed, err)
	}
	failed, err := b.DeleteMany(ctx, []string{"u/2", "t/1"})
	if strings.Join(failed, " ") != "u/2 t/1" || !errors.Is(err, faulty.ErrInjected) {
		t.Fatalf("failed call: %q failed: %v", failed, err)
	}
	if f.Fired() != 1 || b.Calls(faulty.Delete) != 2 || left() != "t/1 t/2 u/2" {
		t.Fatalf("fired %d, deletes %d, left %s", f.Fired(), b.Calls(faulty.Delete), left())
	}

	var meanwhile []string
	b.Add(faulty.Rule{Op: faulty.Delete, Times: 1, LoseResponse: true, Meanwhile: func(k string) { meanwhile = append(meanwhile, k) }})
	failed, err = b.DeleteMany(ctx, []string{"t/1", "u/2", "t/1"})
	if strings.Join(failed, " ") != "t/1 u/2" || !errors.Is(err, faulty.ErrLostResponse) {
		t.Fatalf("lost response: %q failed: %v", failed, err)
	}
	if left() != "t/2" || strings.Join(meanwhile, " ") != "t/1 u/2" {
		t.Fatalf("after a lost response: left %s, meanwhile saw %q", left(), meanwhile)
	}

	release := make(chan struct{})
	late := b.Add(faulty.Rule{Op: faulty.Delete, Times: 1, Late: release})
	tctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	failed, err = b.DeleteMany(tctx, []string{"t/2"})
	if strings.Join(failed, " ") != "t/2" || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("late call: %q failed: %v", failed, err)
	}
	close(release)
	for deadline := time.Now().Add(5 * time.Second); late.Landed() == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the held delete never landed")
		}
	}
	if left() != "" {
		t.Fatalf("after the late delete landed: left %s", left())
	}
}
