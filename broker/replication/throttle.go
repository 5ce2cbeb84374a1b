package replication

import (
	"sync"
	"time"
)

// Throttle bounds the rate of bytes a leader sends to replicas being
// added by a reassignment (Kafka's leader.replication.throttled.rate), so
// that copying a partition onto a new broker does not take the bandwidth
// of clients and in-sync followers. It is a token bucket holding at most
// one second of rate: a read is allowed while the bucket is not empty and
// charged for what it sent afterwards, so the bucket may go into debt by
// one read. Bytes sent over any interval of length d are at most
// rate*(1s + d) plus one read. Safe for concurrent use; the caller passes
// the time.
type Throttle struct {
	rate float64 // bytes per second

	mu     sync.Mutex
	tokens float64
	last   time.Time
}

// NewThrottle returns a throttle of bytesPerSec, or nil (no bound) when
// bytesPerSec is not positive. A nil *Throttle allows everything.
func NewThrottle(bytesPerSec int64) *Throttle {
	if bytesPerSec <= 0 {
		return nil
	}
	return &Throttle{rate: float64(bytesPerSec), tokens: float64(bytesPerSec)}
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

// Allow reports whether a throttled read may be made at now.
func (t *Throttle) Allow(now time.Time) bool {
	if t == nil {
		return true
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.refillLocked(now)
	return t.tokens > 0
}

// Charge records n bytes sent at now.
func (t *Throttle) Charge(now time.Time, n int64) {
	if t == nil || n <= 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.refillLocked(now)
	t.tokens -= float64(n)
}

// Rate is the bound in bytes per second (0 for a nil throttle).
func (t *Throttle) Rate() int64 {
	if t == nil {
		return 0
	}
	return int64(t.rate)
}
