package tiering

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shale-log/shale/objectstore"
)

// ColdThreads runs cold work (the reads of a replay's GET bodies, and the
// writes of what they read) on OS threads of lower scheduling priority than the rest of
// the process: threads of their own, each niced once when started and
// kept for the work alone, so that when hot traffic (a produce, a fetch
// of the local log) and cold work want the same CPUs, the kernel runs hot
// traffic first, and cold work takes what it leaves.
//
// Go's scheduler has no priorities: a goroutine that copies a GET's body
// or writes megabytes of it to a client holds a processor until it blocks
// or is preempted, and the kernel shares the CPUs equally between the
// threads that run them and the thread of a produce. On a machine whose
// CPUs a replay keeps busy (the object store and the consumer beside the
// broker), a produce's thread then waits its turn behind them, for
// milliseconds. Niced, the cold threads wait instead; when nothing hot
// runs, they have the CPUs to themselves.
//
// A thread whose niceness was raised cannot lower it again without
// privilege, so a cold thread never goes back to the runtime's pool:
// its goroutine stays locked to it, and when it has been idle for a
// while the goroutine ends and the runtime ends the thread with it.
// Beyond max threads busy at once, work runs on the caller's goroutine,
// at the process's priority. Where threads cannot be niced (not Linux),
// or with nice 0, all work runs on the caller's goroutine.
//
// Niced threads are not enough on their own: the kernel runs a niced
// thread last, but while it waits (or runs) with one of Go's processors
// (a P) in hand, that P serves nothing else until the runtime takes it
// back, which for a thread in a system call is sysmon's next look (20 us
// to 10 ms) and for one running Go code a preemption the thread must run
// to honour. Cold threads holding every P leave a produce's goroutine
// runnable with no P to run on, however eager the kernel is to run its
// thread, and a garbage collection's stop-the-world waits for them. So
// the steps of cold work that hold a P for long (the system calls that
// copy a GET's body or a response's bytes, each of at most Step bytes) pass
// a gate, Hold, that lets at most GOMAXPROCS-1 of them run at once: one
// P at least is always left to hot traffic. The gate does not reach the
// Go code between those steps, so what runs on a cold thread is kept to
// the copies and little else: a GET's request (the SDK's signing and
// parsing, tens of microseconds of Go code) runs on the goroutine that
// asks for it, at the process's priority.
type ColdThreads struct {
	nice int
	max  int
	// steps is how many steps of cold work may hold a P at once, held
	// how many do (Hold), waiting how many wait in Hold for one, and
	// wake carries a wake-up from Release to a waiting Hold.
	steps   int32
	held    atomic.Int32
	waiting atomic.Int32
	wake    chan struct{}
	// idleFor is how long an idle thread waits for work before it ends.
	idleFor time.Duration
	// hotAt is when hot traffic was last seen (NoteHot), in Unix
	// nanoseconds; quiet is how long after it steps stay ColdStepHot.
	hotAt atomic.Int64
	quiet time.Duration

	mu struct {
		sync.Mutex
		idle   []*coldThread // most recently idle last
		alive  int
		closed bool
	}
	// started counts the threads started (tests).
	started int
}

type coldThread struct {
	work chan func()
	done chan struct{}
}

// A Get whose context carries the set (objectstore.WithGate) reads its
// body through the gate.
var _ objectstore.Gate = (*ColdThreads)(nil)

// coldIdleFor is how long an idle cold thread is kept.
const coldIdleFor = 30 * time.Second

// NewColdThreads returns a set of at most max cold threads, niced by nice
// (1 to 19); with nice 0 or less, or max 0 or less, Run calls its work
// directly.
func NewColdThreads(nice, max int) *ColdThreads {
	if !coldThreadsSupported {
		nice = 0
	}
	return &ColdThreads{nice: min(nice, 19), max: max, idleFor: coldIdleFor, quiet: 250 * time.Millisecond,
		steps: int32(coldSteps(runtime.GOMAXPROCS(0))), wake: make(chan struct{}, coldWakes)}
}

// ColdStepHot and ColdStepIdle bound the bytes one step of cold work
// copies (Step): ColdStepHot while hot traffic was seen within the quiet
// time, ColdStepIdle when none was.
//
// A step is a system call, and one longer than sysmon's 20 us look has
// its P handed to another thread while it runs and taken back after, a
// few thread switches each: in 256 KiB steps those cost the broker about
// as much as the copies. A cold replay alone, 3 rounds of 511 MiB, broker
// CPU ms per replayed MB: 1.29-1.39 in 256 KiB steps against 0.92-1.21
// in 1 MiB steps (interleaved, load 18-25), and 0.80-0.85 in 1 MiB steps
// against 0.58 in 4 MiB steps, a chunk (interleaved, load 3-5). Beside
// hot traffic, steps stay short, so that a step holds a processor for
// some tens of microseconds at a time (see coldWriteMax's figures in
// broker).
const (
	ColdStepHot  = 256 << 10
	ColdStepIdle = 4 << 20
)

// NoteHot tells the set that hot traffic (a produce, a fetch from the
// local log) is served at now: for the quiet time from then, steps are
// ColdStepHot.
func (p *ColdThreads) NoteHot(now time.Time) {
	n := now.UnixNano()
	// At most one store a millisecond: produces on many connections do
	// not all write the same cache line.
	if n-p.hotAt.Load() >= int64(time.Millisecond) {
		p.hotAt.Store(n)
	}
}

// hot reports whether hot traffic was seen within d of now.
func (p *ColdThreads) hot(now time.Time, d time.Duration) bool {
	return now.UnixNano()-p.hotAt.Load() < int64(d)
}

// Step returns the bytes one step of cold work may copy now (see
// ColdStepHot). A nil set answers ColdStepHot.
func (p *ColdThreads) Step() int {
	if p == nil || p.hot(time.Now(), p.quiet) {
		return ColdStepHot
	}
	return ColdStepIdle
}

// A gated read of a GET's body takes its step's size from the set.
var _ objectstore.GateStep = (*ColdThreads)(nil)

// coldSteps is how many cold steps may hold a processor at once with
// procs processors: all but one, and one with a single processor (cold
// work must progress; the kernel still runs it last).
func coldSteps(procs int) int { return max(procs-1, 1) }

// Hold waits until fewer than GOMAXPROCS-1 steps of cold work hold a
// processor, and counts the caller's step among them until it calls
// Release. A step is a system call that copies (a read of a GET's body,
// a write of what it read to a client) and the Go code around it, never
// a wait: a step that would block releases first, and holds again once
// it can go on. A nil set holds nothing.
//
// A step released is taken by whichever Hold gets to it first, not handed
// to the longest waiting: a released step handed to a cold thread the
// kernel has not run yet (niced, on a busy machine, it may wait for
// milliseconds) stays unused until it runs, while the cold threads that
// are running wait for it. Release wakes a waiter, which tries again.
func (p *ColdThreads) Hold() {
	if p == nil {
		return
	}
	for !p.tryHold() {
		p.waiting.Add(1)
		if p.tryHold() {
			p.waiting.Add(-1)
			return
		}
		<-p.wake
		p.waiting.Add(-1)
	}
}

// tryHold takes a step if one is free.
func (p *ColdThreads) tryHold() bool {
	for {
		n := p.held.Load()
		if n >= p.steps {
			return false
		}
		if p.held.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// Release ends the step Hold began, and wakes a waiting Hold, if any.
// A wake-up that finds the wake channel full is dropped: the wake-ups
// in it wake the waiters, who try again.
func (p *ColdThreads) Release() {
	if p == nil {
		return
	}
	p.held.Add(-1)
	if p.waiting.Load() > 0 {
		select {
		case p.wake <- struct{}{}:
		default:
		}
	}
}

// coldWakes bounds the wake-ups waiting for a Hold to take them: more
// than the cold threads that can wait at once (a wake-up left when its
// waiter took a step without it only costs a later waiter a retry).
const coldWakes = 256

// Run runs fn on a cold thread and returns when it has returned; on the
// caller's goroutine when every cold thread is busy, the set is closed or
// disabled. A nil set runs fn directly.
func (p *ColdThreads) Run(fn func()) {
	t := p.take()
	if t == nil {
		fn()
		return
	}
	t.work <- fn
	<-t.done
	p.put(t)
}

// take returns an idle thread, or starts one if fewer than max are alive;
// nil when there is none to be had.
func (p *ColdThreads) take() *coldThread {
	if p == nil || p.nice <= 0 || p.max <= 0 {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.mu.closed {
		return nil
	}
	if n := len(p.mu.idle); n > 0 {
		t := p.mu.idle[n-1]
		p.mu.idle[n-1] = nil
		p.mu.idle = p.mu.idle[:n-1]
		return t
	}
	if p.mu.alive >= p.max {
		return nil
	}
	p.mu.alive++
	p.started++
	t := &coldThread{work: make(chan func()), done: make(chan struct{})}
	go p.loop(t)
	return t
}

// put returns a thread that finished its work to the idle ones.
func (p *ColdThreads) put(t *coldThread) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.mu.closed {
		close(t.work) // its goroutine ends, and the thread with it
		p.mu.alive--
		return
	}
	p.mu.idle = append(p.mu.idle, t)
}

// retire ends an idle thread that waited idleFor: true when it was idle
// (it is no longer), false when Run has just taken it.
func (p *ColdThreads) retire(t *coldThread) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, it := range p.mu.idle {
		if it == t {
			p.mu.idle = append(p.mu.idle[:i], p.mu.idle[i+1:]...)
			p.mu.alive--
			return true
		}
	}
	return false
}

// loop is a cold thread: its goroutine, locked to a thread niced for it,
// runs the work it is given until it is retired or the set closes.
func (p *ColdThreads) loop(t *coldThread) {
	// Never unlocked: the niced thread must not run anything else, and
	// ends when this goroutine does.
	runtime.LockOSThread()
	niceThread(p.nice)
	idle := time.NewTimer(p.idleFor)
	defer idle.Stop()
	for {
		select {
		case fn, ok := <-t.work:
			if !ok {
				return
			}
			fn()
			t.done <- struct{}{}
			idle.Reset(p.idleFor)
		case <-idle.C:
			if p.retire(t) {
				return
			}
			// Taken as the timer fired: its work is on the way.
			idle.Reset(p.idleFor)
		}
	}
}

// Close ends the idle threads; those busy end when their work returns.
// Run calls its work directly from then on.
func (p *ColdThreads) Close() {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.mu.closed = true
	for _, t := range p.mu.idle {
		close(t.work)
		p.mu.alive--
	}
	p.mu.idle = nil
}

// counts returns the threads alive and idle, and started so far (tests).
func (p *ColdThreads) counts() (alive, idle, started int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mu.alive, len(p.mu.idle), p.started
}

// Cold returns the reader's cold threads, those RunCold runs work on, for
// work that also passes their gate (Hold).
func (r *Reader) Cold() *ColdThreads { return r.cold }
