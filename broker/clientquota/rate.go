package clientquota

import "time"

// Rate is a byte rate measured as Kafka's quota sensors measure it: the
// sum of up to Samples samples, each covering Window from its first
// record, divided by the time they span, which counts as at least
// Samples-1 windows (a client that just began is measured over that long,
// so one burst does not read as a rate). Kafka's defaults are 11 samples
// of 1 s (quota.window.num, quota.window.size.seconds). Not safe for
// concurrent use; the caller passes the time.
type Rate struct {
	window  time.Duration
	samples []sample
	cur     int
}

type sample struct {
	start time.Time // when its first record came; zero: unused
	value float64
}

// NewRate returns a rate of n samples of window each.
func NewRate(n int, window time.Duration) *Rate {
	return &Rate{window: window, samples: make([]sample, max(n, 2))}
}

// Record adds v (bytes; negative to take back what was recorded) at now.
func (r *Rate) Record(now time.Time, v float64) {
	s := &r.samples[r.cur]
	if s.start.IsZero() || now.Sub(s.start) >= r.window {
		r.cur = (r.cur + 1) % len(r.samples)
		s = &r.samples[r.cur]
		*s = sample{start: now}
	}
	s.value += v
}

// expire forgets the samples too old to count at now.
func (r *Rate) expire(now time.Time) {
	age := time.Duration(len(r.samples)) * r.window
	for i := range r.samples {
		if s := &r.samples[i]; !s.start.IsZero() && now.Sub(s.start) >= age {
			*s = sample{}
		}
	}
}

// span is the time the samples are measured over at now: from the oldest
// one's start, and at least Samples-1 windows. Call after expire.
func (r *Rate) span(now time.Time) time.Duration {
	oldest := now
	for _, s := range r.samples {
		if !s.start.IsZero() && s.start.Before(oldest) {
			oldest = s.start
		}
	}
	elapsed := now.Sub(oldest)
	if full, least := int64(elapsed/r.window), int64(len(r.samples)-1); full < least {
		elapsed += time.Duration(least-full) * r.window
	}
	return max(elapsed, time.Millisecond)
}

// PerSecond is the rate at now.
func (r *Rate) PerSecond(now time.Time) float64 {
	r.expire(now)
	var total float64
	for _, s := range r.samples {
		total += s.value
	}
	return total / r.span(now).Seconds()
}

// Throttle is how long a client whose rate exceeds bound waits, as Kafka
// computes it: long enough for the rate over the samples' span to come
// back to the bound, (rate - bound) / bound of that span, at most the
// samples' whole time (Samples windows). Zero when within the bound or
// when bound is not positive.
func (r *Rate) Throttle(now time.Time, bound float64) time.Duration {
	if bound <= 0 {
		return 0
	}
	rate := r.PerSecond(now)
	if rate <= bound {
		return 0
	}
	d := time.Duration((rate - bound) / bound * float64(r.span(now)))
	return min(d, time.Duration(len(r.samples))*r.window)
}
