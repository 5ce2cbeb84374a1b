package broker

import (
	"net"
	"testing"
	"time"
)

// deadlineConn records the write deadlines set on it.
type deadlineConn struct {
	net.Conn
	set []time.Time
}

func (c *deadlineConn) SetWriteDeadline(t time.Time) error {
	c.set = append(c.set, t)
	return nil
}

// TestWriterMovesItsDeadlineOnlyWhenItFallsShort: a stream of small
// answers sets the write deadline once, not once per answer; each write
// still gets at least its allowance (a timeout per MiB from when it is
// armed) and at most a timeout more; a large write moves it further, and
// the small write after it brings it back.
func TestWriterMovesItsDeadlineOnlyWhenItFallsShort(t *testing.T) {
	const timeout = time.Minute
	nc := &deadlineConn{}
	w := newConnWriter(nc, timeout)
	check := func(n int64) {
		t.Helper()
		before := time.Now()
		w.arm(n)
		after := time.Now()
		allow := timeout * time.Duration(1+n>>20)
		if len(nc.set) == 0 {
			t.Fatal("no deadline set")
		}
		d := nc.set[len(nc.set)-1]
		if d.Before(before.Add(allow)) || d.After(after.Add(allow+timeout)) {
			t.Fatalf("%d bytes: deadline %v from now, want %v to %v", n, d.Sub(after), allow, allow+timeout)
		}
	}
	for range 1000 {
		check(100)
	}
	if len(nc.set) != 1 {
		t.Fatalf("%d deadlines set for 1000 small writes, want 1", len(nc.set))
	}
	check(10 << 20)
	if len(nc.set) != 2 {
		t.Fatalf("%d deadlines set after a 10 MiB write, want 2", len(nc.set))
	}
	check(100)
	if len(nc.set) != 3 {
		t.Fatalf("%d deadlines set after a small write behind a large one, want 3", len(nc.set))
	}
	// Once the deadline falls short of a small write's allowance (a
	// quarter of the timeout has passed), it moves again.
	w.deadline = w.deadline.Add(-timeout / 2)
	check(100)
	if len(nc.set) != 4 {
		t.Fatalf("%d deadlines set after the deadline fell short, want 4", len(nc.set))
	}
}
