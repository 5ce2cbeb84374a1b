package tiering

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shale-log/shale/objectstore"
)

func TestColdThreadsReuseAThreadAndRunInlineBeyondTheirBound(t *testing.T) {
	p := NewColdThreads(5, 1)
	t.Cleanup(p.Close)
	ran := 0
	for range 3 {
		p.Run(func() { ran++ })
	}
	if alive, idle, started := p.counts(); ran != 3 || (coldThreadsSupported && (alive != 1 || idle != 1 || started != 1)) {
		t.Fatalf("3 runs one after the other: ran %d, threads alive %d, idle %d, started %d; want one thread, reused", ran, alive, idle, started)
	}
	// Work asking for a cold thread while the only one is busy runs
	// where it is asked (here, on that thread), not after it.
	nested := false
	p.Run(func() { p.Run(func() { nested = true }) })
	if _, _, started := p.counts(); !nested || started > 1 {
		t.Fatalf("nested run: ran %v, threads started %d", nested, started)
	}
}

func TestColdThreadsEndWhenIdleOrClosed(t *testing.T) {
	if !coldThreadsSupported {
		t.Skip("cold threads run work inline on this system")
	}
	p := NewColdThreads(5, 4)
	p.idleFor = time.Millisecond
	var wg sync.WaitGroup
	hold := make(chan struct{})
	for range 3 {
		wg.Go(func() { p.Run(func() { <-hold }) })
	}
	waitFor(t, "three busy cold threads", func() bool { alive, idle, _ := p.counts(); return alive == 3 && idle == 0 })
	close(hold)
	wg.Wait()
	// Idle past idleFor, each ends (and its thread with it).
	waitFor(t, "the idle cold threads to end", func() bool { alive, _, _ := p.counts(); return alive == 0 })

	p.idleFor = time.Hour
	hold = make(chan struct{})
	wg.Go(func() { p.Run(func() { <-hold }) })
	waitFor(t, "one busy cold thread", func() bool { alive, idle, _ := p.counts(); return alive == 1 && idle == 0 })
	p.Run(func() {}) // a second thread, idle after
	waitFor(t, "one busy and one idle cold thread", func() bool { alive, idle, _ := p.counts(); return alive == 2 && idle == 1 })
	p.Close()
	if alive, idle, _ := p.counts(); alive != 1 || idle != 0 {
		t.Fatalf("after Close: %d alive, %d idle; want the busy one alone", alive, idle)
	}
	close(hold)
	wg.Wait()
	if alive, _, _ := p.counts(); alive != 0 {
		t.Fatalf("the busy thread is still alive after its work, closed: %d", alive)
	}
	ran := false
	p.Run(func() { ran = true })
	if _, _, started := p.counts(); !ran || started != 5 {
		t.Fatalf("closed: ran %v, threads started %d (want the work run inline)", ran, started)
	}
}

func TestColdStepsLeaveOneProcessorToHotTraffic(t *testing.T) {
	for _, c := range []struct{ procs, steps int }{{1, 1}, {2, 1}, {3, 2}, {8, 7}} {
		if got := coldSteps(c.procs); got != c.steps {
			t.Errorf("coldSteps(%d) = %d, want %d", c.procs, got, c.steps)
		}
	}
	p := NewColdThreads(5, 4)
	t.Cleanup(p.Close)
	steps := coldSteps(runtime.GOMAXPROCS(0))
	for range steps {
		p.Hold()
	}
	held := make(chan struct{})
	go func() {
		p.Hold()
		close(held)
	}()
	select {
	case <-held:
		t.Fatalf("a step held beyond the %d the gate allows", steps)
	case <-time.After(20 * time.Millisecond):
	}
	p.Release()
	<-held // the released step's place
	for range steps {
		p.Release()
	}
	var nilSet *ColdThreads
	nilSet.Hold() // holds nothing, never waits
	nilSet.Release()
}

// Many goroutines taking steps at once never hold more than the gate
// allows, and all of them get through: no wake-up is lost.
func TestColdStepsAreNeverExceededNorLost(t *testing.T) {
	p := NewColdThreads(5, 4)
	t.Cleanup(p.Close)
	var now, most atomic.Int32
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for range 2000 {
				p.Hold()
				n := now.Add(1)
				for {
					m := most.Load()
					if n <= m || most.CompareAndSwap(m, n) {
						break
					}
				}
				if n > p.steps {
					t.Errorf("%d steps held at once, the gate allows %d", n, p.steps)
				}
				now.Add(-1)
				p.Release()
			}
		})
	}
	wg.Wait()
	if held := p.held.Load(); held != 0 {
		t.Fatalf("%d steps held after every step released", held)
	}
}

// Steps are ColdStepIdle until hot traffic is seen, ColdStepHot for the
// quiet time after it, then ColdStepIdle again.
func TestColdStepIsShortWhileHotTrafficIsSeen(t *testing.T) {
	p := NewColdThreads(0, 0)
	p.quiet = 50 * time.Millisecond
	if got := p.Step(); got != ColdStepIdle {
		t.Fatalf("step %d before any hot traffic, want %d", got, ColdStepIdle)
	}
	p.NoteHot(time.Now())
	if got := p.Step(); got != ColdStepHot {
		t.Fatalf("step %d just after hot traffic, want %d", got, ColdStepHot)
	}
	if got := stepOfGate(p); got != ColdStepHot {
		t.Fatalf("the gate answers a step of %d, want %d", got, ColdStepHot)
	}
	time.Sleep(2 * p.quiet)
	if got := p.Step(); got != ColdStepIdle {
		t.Fatalf("step %d after the quiet time, want %d", got, ColdStepIdle)
	}
	var none *ColdThreads
	if got := none.Step(); got != ColdStepHot {
		t.Fatalf("a nil set's step %d, want %d", got, ColdStepHot)
	}
}

// stepOfGate returns the step g says, through objectstore's interface.
func stepOfGate(g objectstore.Gate) int {
	if s, ok := g.(objectstore.GateStep); ok {
		return s.Step()
	}
	return objectstore.GateReadMax
}
