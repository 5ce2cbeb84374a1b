package replication

import (
	"testing"
	"time"
)

// TestThrottleBoundsBytesPerTick drives a throttle with a clock of 10 ms
// ticks and a reader that, at each tick it is allowed, sends a full read:
// over any stretch of ticks the bytes sent stay within the rate plus one
// second of burst and one read, and a reader that keeps asking gets the
// rate.
func TestThrottleBoundsBytesPerTick(t *testing.T) {
	const (
		rate = 2 << 20 // bytes per second
		read = 1 << 20 // one fetch's partition bytes
		tick = 10 * time.Millisecond
		n    = 3000 // 30 s
	)
	th := NewThrottle(rate)
	now := time.Unix(1000, 0)
	sent := make([]int64, n+1) // sent[i]: bytes sent in ticks before i
	for i := 0; i < n; i++ {
		sent[i+1] = sent[i]
		if th.Allow(now) {
			th.Charge(now, read)
			sent[i+1] += read
		}
		now = now.Add(tick)
	}
	for _, window := range []int{1, 10, 100, 1000, n} {
		for i := 0; i+window <= n; i += max(1, window/10) {
			got := sent[i+window] - sent[i]
			bound := int64(rate + rate*float64(window)*tick.Seconds() + read)
			if got > bound {
				t.Fatalf("%d bytes sent in %d ticks from tick %d, bound %d", got, window, i, bound)
			}
		}
	}
	if want := int64(rate * float64(n) * tick.Seconds()); sent[n] < want-read {
		t.Fatalf("%d bytes sent in %s at %d B/s: the throttle held back more than the rate", sent[n], time.Duration(n)*tick, rate)
	}
}

func TestNilThrottleAllowsAll(t *testing.T) {
	th := NewThrottle(0)
	if th != nil || !th.Allow(time.Now()) || th.Rate() != 0 {
		t.Fatal("a throttle of rate 0 must allow everything")
	}
	th.Charge(time.Now(), 1<<30)
}

func TestThrottleRefusesInDebtUntilRefilled(t *testing.T) {
	th := NewThrottle(1000)
	now := time.Unix(0, 0)
	th.Charge(now, 3000) // 1000 in the bucket, 2000 of debt
	if th.Allow(now.Add(1999 * time.Millisecond)) {
		t.Fatal("allowed while in debt")
	}
	if !th.Allow(now.Add(2001 * time.Millisecond)) {
		t.Fatal("refused after the debt was paid")
	}
}
