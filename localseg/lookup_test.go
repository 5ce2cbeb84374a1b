package localseg

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shale-log/shale/localseg/recordbatch"
)

// TestConcurrentOffsetForTimestampOverBombsStaysBounded: batches that
// expand a thousandfold (stored by a follower copy or an older broker that
// did not look inside) are decompressed as a stream under the scan budget.
// Sixteen concurrent lookups once decompressed them whole, one buffer each.
func TestConcurrentOffsetForTimestampOverBombsStaysBounded(t *testing.T) {
	const lookups, size = 16, 32 << 20
	h := newHarness(t, Config{})
	budget := recordbatch.NewBudget(recordbatch.DefaultBudgetBytes)
	h.opts.ScanBudget = budget
	h.restart()
	for range 2 {
		b, err := recordbatch.Build(nil, recordbatch.BuildOptions{Codec: recordbatch.CodecZstd, ProducerID: -1, ProducerEpoch: -1, BaseSequence: -1, BaseTimestamp: 1000},
			[]recordbatch.Record{{Value: make([]byte, size)}, {TimestampDelta: 1, Value: []byte("after")}})
		if err != nil {
			t.Fatal(err)
		}
		h.append(Batch(b))
	}

	var peak atomic.Uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	baseline := ms.HeapAlloc
	go func() {
		defer close(sampled)
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapAlloc > peak.Load() {
				peak.Store(ms.HeapAlloc)
			}
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	var wg sync.WaitGroup
	errs := make(chan error, lookups)
	for i := range lookups {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// The second record of the first or second bomb: the whole
			// bomb is stepped over first.
			off, _, _, ok, err := h.log.OffsetForTimestamp(context.Background(), 1001)
			if err != nil || !ok || off != 1 {
				errs <- err
			}
			_ = i
		}()
	}
	wg.Wait()
	close(stop)
	<-sampled
	close(errs)
	for err := range errs {
		t.Fatalf("lookup failed: %v", err)
	}
	grown := int64(peak.Load()) - int64(baseline)
	t.Logf("peak heap %d MiB above the baseline over %d concurrent lookups of %d MiB bombs", grown>>20, lookups, size>>20)
	if limit := recordbatch.DefaultBudgetBytes + 64<<20; grown > int64(limit) {
		t.Fatalf("heap grew by %d MiB, more than the %d MiB scan budget and some slack", grown>>20, recordbatch.DefaultBudgetBytes>>20)
	}
	if n := budget.InUse(); n != 0 {
		t.Fatalf("%d budget bytes still taken", n)
	}
}
