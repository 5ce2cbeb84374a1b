package replication

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Throttle bounds the rate of bytes replication moves for throttled
// replicas (KIP-73: leader.replication.throttled.rate on the leader,
// follower.replication.throttled.rate on the follower), so that copying a
// partition onto a new or returning broker does not take the bandwidth of
// clients and in-sync followers. It is a token bucket holding at most one
// second of rate: a read is allowed while the bucket is not empty and
// charged for what it moved afterwards, so the bucket may go into debt by
// one read. Bytes moved over any interval of length d are at most
// rate*(1s + d) plus one read. A rate of zero is no bound. Safe for
// concurrent use; the caller passes the time.
type Throttle struct {
	mu      sync.Mutex
	rate    float64 // bytes per second; 0: no bound
	tokens  float64
	last    time.Time
	charged int64 // bytes charged, ever
	refused int64 // reads refused, ever
}

// NewThrottle returns a throttle of bytesPerSec (no bound when it is not
// positive). A nil *Throttle allows everything.
func NewThrottle(bytesPerSec int64) *Throttle {
	t := &Throttle{}
	t.SetRate(bytesPerSec)
	return t
}

// SetRate changes the bound (no bound when bytesPerSec is not positive).
// A throttle that had no bound starts with a full bucket; a lower rate
// caps what the bucket holds; a debt is kept.
func (t *Throttle) SetRate(bytesPerSec int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	rate := max(float64(bytesPerSec), 0)
	if rate == t.rate {
		return
	}
	if t.rate == 0 {
		t.tokens, t.last = rate, time.Time{}
	}
	t.rate = rate
	t.tokens = min(t.tokens, rate)
}

// refillLocked adds what the rate earned since the last call. Requires mu.
func (t *Throttle) refillLocked(now time.Time) {
	if !t.last.IsZero() && now.After(t.last) {
		t.tokens = min(t.rate, t.tokens+t.rate*now.Sub(t.last).Seconds())
	}
	if t.last.IsZero() || now.After(t.last) {
		t.last = now
	}
}

// Allow reports whether a throttled read may be made at now. A refusal
// is counted (Refused).
func (t *Throttle) Allow(now time.Time) bool {
	if t == nil {
		return true
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.rate == 0 {
		return true
	}
	t.refillLocked(now)
	if t.tokens > 0 {
		return true
	}
	t.refused++
	return false
}

// Charge records n bytes moved at now for throttled replicas. They are
// counted (Charged) even while there is no bound.
func (t *Throttle) Charge(now time.Time, n int64) {
	if t == nil || n <= 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.charged += n
	if t.rate == 0 {
		return
	}
	t.refillLocked(now)
	t.tokens -= float64(n)
}

// Rate is the bound in bytes per second (0: none).
func (t *Throttle) Rate() int64 {
	if t == nil {
		return 0
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return int64(t.rate)
}

// Charged is the number of bytes charged so far.
func (t *Throttle) Charged() int64 {
	if t == nil {
		return 0
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.charged
}

// Refused is the number of reads refused so far: each left a throttled
// partition out of a fetch.
func (t *Throttle) Refused() int64 {
	if t == nil {
		return 0
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.refused
}

// ThrottledReplicas is a parsed leader.replication.throttled.replicas or
// follower.replication.throttled.replicas topic config: "*" (every
// replica), or a list of partition:brokerId pairs naming the replicas on
// which the throttle applies. The zero value throttles nothing.
type ThrottledReplicas struct {
	all   bool
	pairs map[[2]int32]bool // partition, broker
}

// ParseThrottledReplicas parses a throttled replicas list as Kafka's
// ThrottledReplicaListValidator accepts it: empty, "*", or
// comma-separated partition:brokerId pairs of non-negative integers, with
// spaces allowed around the items.
func ParseThrottledReplicas(s string) (ThrottledReplicas, error) {
	s = strings.TrimSpace(s)
	switch s {
	case "":
		return ThrottledReplicas{}, nil
	case "*":
		return ThrottledReplicas{all: true}, nil
	}
	out := ThrottledReplicas{pairs: map[[2]int32]bool{}}
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		part, broker, ok := strings.Cut(item, ":")
		p, err1 := strconv.ParseInt(part, 10, 32)
		b, err2 := strconv.ParseInt(broker, 10, 32)
		if !ok || err1 != nil || err2 != nil || p < 0 || b < 0 || strings.TrimLeft(part, "0123456789") != "" || strings.TrimLeft(broker, "0123456789") != "" {
			return ThrottledReplicas{}, fmt.Errorf("%q is not partition:brokerId; the list is \"*\" or partition:brokerId pairs separated by commas", item)
		}
		out.pairs[[2]int32{int32(p), int32(b)}] = true
	}
	return out, nil
}

// Contains reports whether the replica of partition on broker is
// throttled.
func (r ThrottledReplicas) Contains(partition, broker int32) bool {
	return r.all || r.pairs[[2]int32{partition, broker}]
}

// Empty reports whether the list throttles nothing.
func (r ThrottledReplicas) Empty() bool { return !r.all && len(r.pairs) == 0 }
