package replication

import (
	"strconv"
	"strings"
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

func TestUnboundThrottleAllowsAll(t *testing.T) {
	var none *Throttle
	if !none.Allow(time.Now()) || none.Rate() != 0 {
		t.Fatal("a nil throttle must allow everything")
	}
	none.Charge(time.Now(), 1<<30)
	th := NewThrottle(0)
	th.Charge(time.Now(), 1<<30)
	if !th.Allow(time.Now()) || th.Rate() != 0 || th.Refused() != 0 {
		t.Fatal("a throttle of rate 0 must allow everything")
	}
	if th.Charged() != 1<<30 {
		t.Fatalf("charged %d, want the bytes counted without a bound", th.Charged())
	}
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

// TestThrottleSetRate: a bound set on an unbound throttle starts with a
// full bucket; lowering the rate caps the bucket; removing the bound
// allows at once, even in debt; the refusals are counted.
func TestThrottleSetRate(t *testing.T) {
	th := NewThrottle(0)
	now := time.Unix(0, 0)
	th.Charge(now, 1<<20) // unbound: no debt
	th.SetRate(1000)
	if !th.Allow(now) {
		t.Fatal("a new bound must start with a full bucket")
	}
	th.Charge(now, 1000)
	if th.Allow(now) {
		t.Fatal("allowed with the bucket empty")
	}
	if th.Allow(now.Add(500*time.Millisecond)) != true {
		t.Fatal("refused after the rate refilled half a second")
	}
	th.SetRate(10) // the bucket of 500 is capped at 10
	th.Charge(now.Add(500*time.Millisecond), 20)
	if th.Allow(now.Add(1400 * time.Millisecond)) {
		t.Fatal("a lowered rate kept the old bucket")
	}
	th.SetRate(0)
	if !th.Allow(now.Add(1400 * time.Millisecond)) {
		t.Fatal("refused with the bound removed")
	}
	if got := th.Refused(); got != 2 {
		t.Fatalf("%d refusals counted, want 2", got)
	}
	if got := th.Charged(); got != 1<<20+1000+20 {
		t.Fatalf("%d bytes charged", got)
	}
}

func TestParseThrottledReplicas(t *testing.T) {
	for _, tc := range []struct {
		in      string
		ok      bool
		yes, no [][2]int32
	}{
		{in: "", ok: true, no: [][2]int32{{0, 0}}},
		{in: "  ", ok: true, no: [][2]int32{{0, 0}}},
		{in: "*", ok: true, yes: [][2]int32{{0, 0}, {7, 3}}},
		{in: " * ", ok: true, yes: [][2]int32{{5, 5}}},
		{in: "0:1,1:2", ok: true, yes: [][2]int32{{0, 1}, {1, 2}}, no: [][2]int32{{1, 1}, {0, 2}}},
		{in: "0:1, 1:2 ,2:0", ok: true, yes: [][2]int32{{2, 0}, {1, 2}}},
		{in: "0:1,", ok: false},
		{in: "0", ok: false},
		{in: "0:", ok: false},
		{in: ":1", ok: false},
		{in: "-1:1", ok: false},
		{in: "+1:1", ok: false},
		{in: "0:1:2", ok: false},
		{in: "a:1", ok: false},
		{in: "0 :1", ok: false},
		{in: "*,0:1", ok: false},
		{in: "99999999999:1", ok: false},
	} {
		r, err := ParseThrottledReplicas(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("%q: err %v, want ok %v", tc.in, err, tc.ok)
			continue
		}
		for _, pb := range tc.yes {
			if !r.Contains(pb[0], pb[1]) {
				t.Errorf("%q does not contain %d:%d", tc.in, pb[0], pb[1])
			}
		}
		for _, pb := range tc.no {
			if r.Contains(pb[0], pb[1]) {
				t.Errorf("%q contains %d:%d", tc.in, pb[0], pb[1])
			}
		}
	}
}

func FuzzParseThrottledReplicas(f *testing.F) {
	for _, s := range []string{"", "*", "0:1,1:2", " 3:4 , 5:6", "0:1:2", "-1:0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseThrottledReplicas(s)
		if err != nil {
			if !r.Empty() {
				t.Fatalf("%q: an error with a non-empty list", s)
			}
			return
		}
		// Every pair the string names is contained.
		if strings.TrimSpace(s) == "*" || strings.TrimSpace(s) == "" {
			return
		}
		for _, item := range strings.Split(s, ",") {
			p, b, _ := strings.Cut(strings.TrimSpace(item), ":")
			pi, _ := strconv.ParseInt(p, 10, 32)
			bi, _ := strconv.ParseInt(b, 10, 32)
			if !r.Contains(int32(pi), int32(bi)) {
				t.Fatalf("%q: %s not contained", s, item)
			}
		}
	})
}
