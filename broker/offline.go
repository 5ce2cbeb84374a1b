package broker

import (
	"fmt"
	"sort"
	"sync"
	"time"
)

// Backoff of a partition whose log cannot be opened or went offline: the
// broker retries by itself (a full disk that gets space back, a transient
// I/O error), first after minOfflineBackoff, doubling to maxOfflineBackoff.
const (
	minOfflineBackoff = 500 * time.Millisecond
	maxOfflineBackoff = 30 * time.Second
)

type partitionKey struct {
	topic string
	index int32
}

// offlineSet tracks the partitions this broker should host but cannot
// serve because of their logs. Safe for concurrent use: the replica
// manager updates it, request handlers and health checks read it.
type offlineSet struct {
	mu sync.Mutex
	m  map[partitionKey]*offlineState
}

type offlineState struct {
	err         error // nil while the partition is online
	backoff     time.Duration
	next        time.Time // no retry before
	onlineSince time.Time
}

func (o *offlineSet) stateLocked(k partitionKey) *offlineState {
	if o.m == nil {
		o.m = map[partitionKey]*offlineState{}
	}
	st := o.m[k]
	if st == nil {
		st = &offlineState{}
		o.m[k] = st
	}
	return st
}

// failed records a failed open (or an offline log) at now and schedules
// the next attempt: the backoff doubles while failures follow each other,
// and starts again from the minimum after a partition stayed online for
// the maximum backoff.
func (o *offlineSet) failed(k partitionKey, err error, now time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	st := o.stateLocked(k)
	switch {
	case st.backoff == 0 || (st.err == nil && now.Sub(st.onlineSince) > maxOfflineBackoff):
		st.backoff = minOfflineBackoff
	default:
		st.backoff = min(2*st.backoff, maxOfflineBackoff)
	}
	st.err = err
	st.next = now.Add(st.backoff)
}

// blocked records that the partition cannot open for a reason outside its
// log (the removal of an old directory in its place fails), due to be
// tried again as soon as that clears. It reports whether the partition
// was not already offline for this reason.
func (o *offlineSet) blocked(k partitionKey, err error, now time.Time) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	st := o.stateLocked(k)
	news := st.err == nil || st.err.Error() != err.Error()
	st.err = err
	st.next = now
	return news
}

// noteFailure records that an open log went offline (once) and reports
// whether it is time to reopen it.
func (o *offlineSet) noteFailure(k partitionKey, err error, now time.Time) bool {
	o.mu.Lock()
	st := o.m[k]
	known := st != nil && st.err != nil
	o.mu.Unlock()
	if !known {
		o.failed(k, err, now)
		return false
	}
	return o.due(k, now)
}

// due reports whether the partition may be (re)opened now.
func (o *offlineSet) due(k partitionKey, now time.Time) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	st := o.m[k]
	return st == nil || st.err == nil || !now.Before(st.next)
}

// anyDue reports whether some offline partition may be retried now.
func (o *offlineSet) anyDue(now time.Time) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, st := range o.m {
		if st.err != nil && !now.Before(st.next) {
			return true
		}
	}
	return false
}

// opened records a successful open.
func (o *offlineSet) opened(k partitionKey, now time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if st := o.m[k]; st != nil {
		st.err = nil
		st.onlineSince = now
	}
}

func (o *offlineSet) backoffOf(k partitionKey) time.Duration {
	o.mu.Lock()
	defer o.mu.Unlock()
	if st := o.m[k]; st != nil {
		return st.backoff
	}
	return 0
}

// forgetExcept drops the partitions no longer assigned to this broker.
func (o *offlineSet) forgetExcept(assigned map[partitionKey]bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for k := range o.m {
		if !assigned[k] {
			delete(o.m, k)
		}
	}
}

// errOf is the error that keeps a partition offline (nil when online).
func (o *offlineSet) errOf(k partitionKey) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if st := o.m[k]; st != nil && st.err != nil {
		return fmt.Errorf("%w: %w", errPartitionOffline, st.err)
	}
	return nil
}

func (o *offlineSet) count() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := 0
	for _, st := range o.m {
		if st.err != nil {
			n++
		}
	}
	return n
}

// describe lists up to max offline partitions with their errors, in order.
func (o *offlineSet) describe(max int) []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []string
	for k, st := range o.m {
		if st.err != nil {
			out = append(out, fmt.Sprintf("%s-%d: %v", k.topic, k.index, st.err))
		}
	}
	sort.Strings(out)
	if len(out) > max {
		out = append(out[:max], fmt.Sprintf("and %d more", len(out)-max))
	}
	return out
}
