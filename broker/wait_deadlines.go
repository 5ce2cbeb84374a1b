package broker

import (
	"context"
	"sync"
	"time"
)

// waitDeadlines are a connection's produce waits (acks=all, flush.messages)
// not answered yet, expired by one timer for the connection and released by
// one watch of its context, instead of a timer and a context watch per
// wait: each of those is a change of the runtime's timer heap or of the
// context's children under a lock, made and undone for every acks=all
// produce, which is answered long before its timeout.
//
// The timer is armed for the earliest deadline among the waits when it was
// last set; a wait answered in time is only taken off the list, leaving the
// timer as it is. When it fires, it expires the waits whose deadline has
// passed and is armed again for the earliest of the others, so a wait
// expires at its own deadline, and a connection whose waits are all
// answered in time sees its timer fire about once per timeout. The list
// holds at most a connection's requests in flight (maxInflightPerConn), so
// it is searched, not sorted.
type waitDeadlines struct {
	mu    sync.Mutex
	waits []*produceWait
	timer *time.Timer
	// at is when the timer fires (zero: not armed).
	at time.Time
	// watching: the connection's context is watched (closeWaits);
	// closed: it ended, and no wait is added any more.
	watching, closed bool
}

// addWait puts w on the connection's list, to expire at w.deadline. It
// returns false when the connection is closed already: the caller expires
// w itself. Requires w.mu (lock order: a wait, then the list).
func (c *conn) addWait(w *produceWait) bool {
	d := &c.waits
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return false
	}
	if !d.watching {
		d.watching = true
		context.AfterFunc(c.ctx, c.closeWaits)
	}
	w.idx = len(d.waits)
	d.waits = append(d.waits, w)
	if d.at.IsZero() || w.deadline.Before(d.at) {
		d.armLocked(w.deadline)
	}
	return true
}

// removeWait takes an answered wait off the list (nothing if it is not on
// it), with the list's reference to its call: the caller answering it
// holds another. Requires w.mu.
func (c *conn) removeWait(w *produceWait) {
	d := &c.waits
	d.mu.Lock()
	listed := false
	if i := w.idx; i >= 0 && i < len(d.waits) && d.waits[i] == w {
		d.removeAtLocked(i)
		listed = true
	}
	w.idx = -1
	d.mu.Unlock()
	if listed {
		w.pc.unref()
	}
}

// removeAtLocked takes the wait at i off the list, moving the last one
// into its place. Requires d.mu.
func (d *waitDeadlines) removeAtLocked(i int) {
	w, last := d.waits[i], len(d.waits)-1
	d.waits[i] = d.waits[last]
	d.waits[i].idx = i
	d.waits[last] = nil
	d.waits = d.waits[:last]
	w.idx = -1
}

// armLocked sets the timer to fire at at. Requires d.mu.
func (d *waitDeadlines) armLocked(at time.Time) {
	d.at = at
	if d.timer == nil {
		d.timer = time.AfterFunc(time.Until(at), d.fire)
		return
	}
	d.timer.Reset(time.Until(at))
}

// fire expires the waits whose deadline has passed, and arms the timer
// for the earliest of the others.
func (d *waitDeadlines) fire() {
	now := time.Now()
	var due []*produceWait
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return
	}
	var next time.Time
	for i := 0; i < len(d.waits); {
		w := d.waits[i]
		if w.deadline.After(now) {
			if next.IsZero() || w.deadline.Before(next) {
				next = w.deadline
			}
			i++
			continue
		}
		due = append(due, w)
		d.removeAtLocked(i)
	}
	d.at = time.Time{}
	if !next.IsZero() {
		d.armLocked(next)
	}
	d.mu.Unlock()
	for _, w := range due {
		w.expire()
		w.pc.unref() // taken off the list above
	}
}

// closeWaits ends every wait of a connection whose context ended (the
// client is gone, or the broker shuts down): each is answered at once
// (with nothing sent on a broken connection), giving back its request's
// budget.
func (c *conn) closeWaits() {
	d := &c.waits
	d.mu.Lock()
	d.closed = true
	if d.timer != nil {
		d.timer.Stop()
	}
	all := d.waits
	d.waits = nil
	for _, w := range all {
		w.idx = -1
	}
	d.mu.Unlock()
	for _, w := range all {
		w.expire()
		w.pc.unref() // taken off the list above
	}
}
