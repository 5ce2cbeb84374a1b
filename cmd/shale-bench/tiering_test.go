package main

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/shale-log/shale/objectstore"
)

// The object-store ceilings PUT and read back every byte they count:
// parallelPuts writes n objects, and parallelGets and relayedGets read
// them in chunks (one object larger than a chunk, one smaller).
func TestObjectStoreCeilingsMoveEveryByte(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b := objectstore.NewMem()
	if _, err := parallelPuts(ctx, b, "big", 2, tierChunk+123, 2); err != nil {
		t.Fatal(err)
	}
	if _, err := parallelPuts(ctx, b, "small", 1, 1000, 1); err != nil {
		t.Fatal(err)
	}
	var objs []objectstore.Attrs
	if err := b.List(ctx, "", func(a objectstore.Attrs) error { objs = append(objs, a); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(objs) != 3 {
		t.Fatalf("%d objects, want 3", len(objs))
	}
	chunks, total := chunksOf(objs, tierChunk)
	if want := int64(2*(tierChunk+123) + 1000); total != want || len(chunks) != 5 {
		t.Fatalf("%d chunks of %d bytes, want 5 of %d", len(chunks), total, want)
	}
	if spans, _ := chunksOf(objs, tierGet); len(spans) != 3 {
		t.Fatalf("%d GETs of up to %d bytes, want 3", len(spans), tierGet)
	}
	if _, err := parallelGets(ctx, b, objs, 3); err != nil {
		t.Fatal(err)
	}
	if _, err := relayedGets(ctx, b, objs, 3); err != nil {
		t.Fatal(err)
	}
	// A missing object is an error, not a short count.
	objs = append(objs, objectstore.Attrs{Key: "gone", Size: 10})
	if _, err := parallelGets(ctx, b, objs, 3); err == nil {
		t.Fatal("parallelGets of a missing object did not fail")
	}
	if _, err := relayedGets(ctx, b, objs, 3); err == nil {
		t.Fatal("relayedGets of a missing object did not fail")
	}
}

// The non-Shale loads of the latency rounds (GETs relayed to a loopback
// connection, and GETs alone) GET chunks until their context ends,
// wrapping around the objects, and report where they stopped and what
// they moved; a missing object fails them.
func TestPacedGetsWrapAroundUntilCancelled(t *testing.T) {
	for _, relay := range []bool{true, false} {
		t.Run(fmt.Sprintf("relay=%v", relay), func(t *testing.T) {
			b := objectstore.NewMem()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if _, err := parallelPuts(ctx, b, "obj", 2, 1000, 1); err != nil {
				t.Fatal(err)
			}
			if _, err := parallelPuts(ctx, b, "big", 1, tierChunk+10, 1); err != nil {
				t.Fatal(err)
			}
			var objs []objectstore.Attrs
			if err := b.List(ctx, "obj", func(a objectstore.Attrs) error { objs = append(objs, a); return nil }); err != nil {
				t.Fatal(err)
			}
			chunks, _ := chunksOf(objs, tierChunk)
			// 2 chunks of 1000 bytes at 0.01 MB/s: about 10 chunks a second.
			lctx, lcancel := context.WithTimeout(ctx, 500*time.Millisecond)
			defer lcancel()
			at, moved, err := pacedGets(lctx, b, chunks, 1, 0.01, 2, relay)
			if err != nil {
				t.Fatal(err)
			}
			if at < 3 || moved < 2000 || moved%1000 != 0 {
				t.Fatalf("stopped at chunk %d having moved %d bytes: want past one wrap-around, whole chunks of 1000 bytes", at, moved)
			}
			// Chunks of other sizes, a small one after a large one in
			// the same slot: each is counted at its own length.
			var big []objectstore.Attrs
			if err := b.List(ctx, "big", func(a objectstore.Attrs) error { big = append(big, a); return nil }); err != nil {
				t.Fatal(err)
			}
			mixed, total := chunksOf(append(big, objs...), tierChunk)
			lctx2, lcancel2 := context.WithCancel(ctx)
			var got int64
			done := make(chan error, 1)
			go func() {
				var err error
				_, got, err = pacedGets(lctx2, b, mixed, 0, 1000, 1, relay)
				done <- err
			}()
			time.Sleep(time.Second)
			lcancel2()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if got < total {
				t.Fatalf("moved %d bytes in a second at 1000 MB/s of in-memory objects, want at least one pass of %d", got, total)
			}
			objs = append(objs, objectstore.Attrs{Key: "gone", Size: 10})
			chunks, _ = chunksOf(objs, tierChunk)
			if _, _, err := pacedGets(ctx, b, chunks, 2, 1, 1, relay); err == nil {
				t.Fatal("a missing object did not fail the load")
			}
		})
	}
}

// A quantile of a histogram reads as the bucket it lay in, never as the
// bucket's upper bound alone: go_sched_latencies_seconds has bounds at
// 0.92, 10.49 and 63.96 ms, and a p99 in its second bucket lay anywhere
// from 0.92 to 10.49 ms.
func TestHistogramQuantilesPrintTheirBucket(t *testing.T) {
	const name = "go_sched_latencies_seconds_bucket{"
	key := func(le string) string { return name + `le="` + le + `"}` }
	before := map[string]float64{key("0.000917504"): 100, key("0.010485759"): 100, key("0.063963136"): 100, key("+Inf"): 100}
	after := map[string]float64{key("0.000917504"): 1080, key("0.010485759"): 1098, key("0.063963136"): 1100, key("+Inf"): 1100}
	p99, p999 := histogramBuckets(before, after, name, 0.99, 0.999)
	if got := p99.String(); got != "0.92-10.49" {
		t.Errorf("p99 %q, want 0.92-10.49", got)
	}
	if got := p999.String(); got != "10.49-63.96" {
		t.Errorf("p99.9 %q, want 10.49-63.96", got)
	}
	p50, _ := histogramBuckets(before, after, name, 0.5, 0.5)
	if got := p50.String(); got != "0.00-0.92" {
		t.Errorf("p50 %q, want 0.00-0.92", got)
	}
	after[key("+Inf")] = 2000 // 900 waits above the last bound
	_, p999 = histogramBuckets(before, after, name, 0.99, 0.999)
	if got := p999.String(); got != ">63.96" {
		t.Errorf("p99.9 above the last bound %q, want >63.96", got)
	}
	if got, _ := histogramBuckets(after, after, name, 0.99, 0.999); got.String() != "n/a" {
		t.Errorf("nothing counted: %q, want n/a", got)
	}
	rounds := []bucketRange{{0.000917504, 0.010485759}, {0, 0.000917504}, {0.000917504, 0.010485759}}
	if got := medianBucket(rounds); got != "0.92-10.49 (0.00-0.92 to 0.92-10.49)" {
		t.Errorf("rounds %q", got)
	}
}
