package clientquota

import "time"

// Bucket measures controller_mutation_rate (KIP-599) as Kafka's token
// bucket does: it holds at most quota × samples × window tokens (the burst
// a client may spend at once), gains quota tokens a second, and a request
// takes one per partition it creates or deletes, below zero if it must.
// A client is over its quota while its bucket is below zero. Not safe for
// concurrent use; the caller passes the time.
type Bucket struct {
	tokens float64
	last   time.Time // zero: never used (full)
}

// refill adds what quota earned since the last call, up to burst.
func (b *Bucket) refill(now time.Time, quota, burst float64) {
	if b.last.IsZero() {
		b.tokens = burst
	} else if now.After(b.last) {
		b.tokens = min(burst, b.tokens+quota*now.Sub(b.last).Seconds())
	}
	b.last = now
}

// Take takes n tokens at now.
func (b *Bucket) Take(now time.Time, n, quota, burst float64) {
	b.refill(now, quota, burst)
	b.tokens -= n
}

// Throttle is how long until the bucket is back at zero at quota's pace:
// zero when it is not below it, or when quota is not positive.
func (b *Bucket) Throttle(now time.Time, quota, burst float64) time.Duration {
	if quota <= 0 {
		return 0
	}
	b.refill(now, quota, burst)
	if b.tokens >= 0 {
		return 0
	}
	return time.Duration(-b.tokens / quota * float64(time.Second))
}
