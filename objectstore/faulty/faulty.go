// Package faulty wraps an objectstore.Bucket with injected faults for
// tests: errors, latency, stalls until the caller's deadline, responses
// lost after the operation took effect, and bodies cut short. Faults are
// rules with budgets (fail the next N matching calls), and the wrapper
// counts the calls that reach it, so a test can say what fired.
package faulty

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/shale-log/shale/objectstore"
)

// Op is a set of bucket operations.
type Op uint8

const (
	Put Op = 1 << iota
	Get
	Head
	// List is every listing: List, ListAfter and ListDirs.
	List
	// Delete is every delete: Delete and DeleteMany (one call, however
	// many keys).
	Delete
	// Any matches every operation.
	Any = Put | Get | Head | List | Delete
)

func (o Op) String() string {
	var names []string
	for i, n := range []string{"put", "get", "head", "list", "delete"} {
		if o&(1<<i) != 0 {
			names = append(names, n)
		}
	}
	return strings.Join(names, "|")
}

var (
	// ErrInjected is the error of a rule with no Err of its own.
	ErrInjected = errors.New("faulty: injected error")
	// ErrLostResponse is returned by a call that took effect but whose
	// response a LoseResponse rule dropped, as a connection reset after
	// the request was processed would.
	ErrLostResponse = errors.New("faulty: response lost after the operation took effect")
)

// Rule is one fault. A call matches when its operation is in Op and its
// key (a listing's prefix; any of a DeleteMany's keys) starts with
// KeyPrefix. The effects apply in this order: Latency, then Hold, then
// Stall, then Err, Late or the call, then LoseResponse or TruncateAfter.
// A DeleteMany is one call, whose keys share its fate: an error before it
// fails every key and deletes none.
type Rule struct {
	Op        Op
	KeyPrefix string
	// Times is how many matching calls the rule fires on; 0 means
	// every one until it is removed.
	Times int
	// After is how many matching calls pass untouched before the rule
	// fires: the one that comes after a known number of reads.
	After int
	// Latency delays the call (or until the context ends).
	Latency time.Duration
	// Stall blocks the call until its context ends, then fails it with
	// the context's error: a store that accepted the connection and
	// went silent.
	Stall bool
	// Hold blocks the call until Hold is closed, then lets it go on (or
	// until its context ends, which fails it with the context's error):
	// a slow answer that the test, not a clock, ends.
	Hold <-chan struct{}
	// Fail fails the call before it reaches the store with Err, or
	// ErrInjected when Err is nil.
	Fail bool
	Err  error
	// LoseResponse performs a Put or Delete, then reports ErrLostResponse
	// (a DeleteMany that deleted every key fails every key with it).
	LoseResponse bool
	// Meanwhile, with LoseResponse, is called with the key (each of a
	// DeleteMany's) after the call took effect and before its response
	// is lost: what another writer does while the response is on its way
	// (a newer leader's commit, say).
	Meanwhile func(key string)
	// Late holds a Put or Delete (or DeleteMany) on its way to the store
	// until Late is closed, then performs it whatever became of its caller: a request
	// the store received and acts on late, after the writer gave up on
	// it. The caller waits for the release or for its context, which
	// fails the call with the context's error (outcome unknown) while
	// the write still lands at the release; a Put's body is read at the
	// call, so the caller may close it. Landed on the Fault counts the
	// writes that landed so.
	Late <-chan struct{}
	// Truncate cuts a Get's body after TruncateAfter bytes with
	// io.ErrUnexpectedEOF: a connection that died mid-body.
	Truncate      bool
	TruncateAfter int64
}

// Fault is an added rule.
type Fault struct {
	rule   Rule
	b      *Bucket
	passed int // matching calls let through (Rule.After)
	fired  int
	landed int
}

// Landed is how many writes a Late rule held have reached the store
// (whether the store took them or refused them, their condition failed).
func (f *Fault) Landed() int {
	f.b.mu.Lock()
	defer f.b.mu.Unlock()
	return f.landed
}

// Fired is how many calls the rule has fired on.
func (f *Fault) Fired() int {
	f.b.mu.Lock()
	defer f.b.mu.Unlock()
	return f.fired
}

// Remove stops the rule.
func (f *Fault) Remove() {
	f.b.mu.Lock()
	defer f.b.mu.Unlock()
	for i, g := range f.b.faults {
		if g == f {
			f.b.faults = append(f.b.faults[:i], f.b.faults[i+1:]...)
			return
		}
	}
}

// Bucket is the fault-injecting wrapper.
type Bucket struct {
	inner objectstore.Bucket
	mu    sync.Mutex
	// Guarded by mu.
	faults []*Fault
	calls  map[Op]int
}

var _ objectstore.Bucket = (*Bucket)(nil)

// New wraps inner.
func New(inner objectstore.Bucket) *Bucket {
	return &Bucket{inner: inner, calls: map[Op]int{}}
}

// Inner is the wrapped bucket.
func (b *Bucket) Inner() objectstore.Bucket { return b.inner }

// Add adds a rule; rules added earlier fire first, and one call fires
// every rule that matches it (so a test can combine latency and an error).
func (b *Bucket) Add(r Rule) *Fault {
	b.mu.Lock()
	defer b.mu.Unlock()
	f := &Fault{rule: r, b: b}
	b.faults = append(b.faults, f)
	return f
}

// Clear removes every rule.
func (b *Bucket) Clear() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.faults = nil
}

// Calls is how many calls of the operations in op were made.
func (b *Bucket) Calls(op Op) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for o, c := range b.calls {
		if o&op != 0 {
			n += c
		}
	}
	return n
}

// effects is what the matching rules ask of one call.
type effects struct {
	latency      time.Duration
	holds        []<-chan struct{}
	stall        bool
	err          error
	loseResponse bool
	meanwhile    []func(string)
	truncate     int64 // -1: whole body
	late         <-chan struct{}
	lateFault    *Fault
}

// match applies the rules to a call of op on keys (one, but for
// DeleteMany's): a rule matches when one of them starts with its prefix.
func (b *Bucket) match(op Op, keys ...string) effects {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls[op]++
	e := effects{truncate: -1}
	kept := b.faults[:0]
	for _, f := range b.faults {
		r := f.rule
		if r.Op&op == 0 || !slices.ContainsFunc(keys, func(k string) bool { return strings.HasPrefix(k, r.KeyPrefix) }) {
			kept = append(kept, f)
			continue
		}
		if f.passed < r.After {
			f.passed++
			kept = append(kept, f)
			continue
		}
		f.fired++
		e.latency += r.Latency
		if r.Hold != nil {
			e.holds = append(e.holds, r.Hold)
		}
		e.stall = e.stall || r.Stall
		if r.Fail && e.err == nil {
			e.err = r.Err
			if e.err == nil {
				e.err = ErrInjected
			}
			e.err = fmt.Errorf("faulty: %s %s: %w", op, describe(keys), e.err)
		}
		e.loseResponse = e.loseResponse || r.LoseResponse
		if r.LoseResponse && r.Meanwhile != nil {
			e.meanwhile = append(e.meanwhile, r.Meanwhile)
		}
		if r.Late != nil && e.late == nil {
			e.late, e.lateFault = r.Late, f
		}
		if r.Truncate && (e.truncate < 0 || r.TruncateAfter < e.truncate) {
			e.truncate = max(r.TruncateAfter, 0)
		}
		if r.Times == 0 || f.fired < r.Times {
			kept = append(kept, f)
		}
	}
	b.faults = kept
	return e
}

// describe names a call's keys in an error.
func describe(keys []string) string {
	if len(keys) == 1 {
		return keys[0]
	}
	return fmt.Sprintf("%d keys from %s", len(keys), keys[0])
}

// runMeanwhile calls the Meanwhile hooks of a call whose response is lost.
func (e effects) runMeanwhile(key string) {
	for _, f := range e.meanwhile {
		f(key)
	}
}

// before applies latency, stall and error.
func (e effects) before(ctx context.Context) error {
	if e.latency > 0 {
		t := time.NewTimer(e.latency)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
	for _, h := range e.holds {
		select {
		case <-h:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if e.stall {
		<-ctx.Done()
		return ctx.Err()
	}
	return e.err
}

// lateResult is the outcome of a write a Late rule held.
type lateResult[T any] struct {
	v   T
	err error
}

// hold performs write at the release of the Late rule that matched, on a
// context of its own, and returns its outcome, or the caller's context
// error when that ends first (the write still lands at the release).
func hold[T any](b *Bucket, ctx context.Context, e effects, write func(ctx context.Context) (T, error)) (T, error) {
	done := make(chan lateResult[T], 1)
	go func() {
		<-e.late
		v, err := write(context.WithoutCancel(ctx))
		b.mu.Lock()
		e.lateFault.landed++
		b.mu.Unlock()
		done <- lateResult[T]{v, err}
	}()
	select {
	case r := <-done:
		return r.v, r.err
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}

func (b *Bucket) Put(ctx context.Context, key string, r io.Reader, size int64, opts objectstore.PutOptions) (objectstore.Attrs, error) {
	e := b.match(Put, key)
	if err := e.before(ctx); err != nil {
		return objectstore.Attrs{}, err
	}
	var (
		a   objectstore.Attrs
		err error
	)
	if e.late != nil {
		body, rerr := io.ReadAll(io.LimitReader(r, size))
		if rerr != nil {
			return objectstore.Attrs{}, rerr
		}
		a, err = hold(b, ctx, e, func(ctx context.Context) (objectstore.Attrs, error) {
			return b.inner.Put(ctx, key, bytes.NewReader(body), int64(len(body)), opts)
		})
	} else {
		a, err = b.inner.Put(ctx, key, r, size, opts)
	}
	if err == nil && e.loseResponse {
		e.runMeanwhile(key)
		return objectstore.Attrs{}, fmt.Errorf("faulty: put %s: %w", key, ErrLostResponse)
	}
	return a, err
}

func (b *Bucket) Get(ctx context.Context, key string, off, length int64) (io.ReadCloser, error) {
	e := b.match(Get, key)
	if err := e.before(ctx); err != nil {
		return nil, err
	}
	body, err := b.inner.Get(ctx, key, off, length)
	if err != nil || e.truncate < 0 {
		return body, err
	}
	return &truncated{ReadCloser: body, left: e.truncate}, nil
}

type truncated struct {
	io.ReadCloser
	left int64
}

func (t *truncated) Read(p []byte) (int, error) {
	if t.left <= 0 {
		return 0, fmt.Errorf("faulty: body cut: %w", io.ErrUnexpectedEOF)
	}
	if int64(len(p)) > t.left {
		p = p[:t.left]
	}
	n, err := t.ReadCloser.Read(p)
	t.left -= int64(n)
	return n, err
}

func (b *Bucket) Head(ctx context.Context, key string) (objectstore.Attrs, error) {
	e := b.match(Head, key)
	if err := e.before(ctx); err != nil {
		return objectstore.Attrs{}, err
	}
	return b.inner.Head(ctx, key)
}

func (b *Bucket) List(ctx context.Context, prefix string, fn func(objectstore.Attrs) error) error {
	e := b.match(List, prefix)
	if err := e.before(ctx); err != nil {
		return err
	}
	return b.inner.List(ctx, prefix, fn)
}

func (b *Bucket) ListAfter(ctx context.Context, prefix, after string, fn func(objectstore.Attrs) error) error {
	e := b.match(List, prefix)
	if err := e.before(ctx); err != nil {
		return err
	}
	return b.inner.ListAfter(ctx, prefix, after, fn)
}

func (b *Bucket) ListDirs(ctx context.Context, prefix string, fn func(string) error) error {
	e := b.match(List, prefix)
	if err := e.before(ctx); err != nil {
		return err
	}
	return b.inner.ListDirs(ctx, prefix, fn)
}

func (b *Bucket) Delete(ctx context.Context, key string) error {
	e := b.match(Delete, key)
	if err := e.before(ctx); err != nil {
		return err
	}
	var err error
	if e.late != nil {
		_, err = hold(b, ctx, e, func(ctx context.Context) (struct{}, error) {
			return struct{}{}, b.inner.Delete(ctx, key)
		})
	} else {
		err = b.inner.Delete(ctx, key)
	}
	if err == nil && e.loseResponse {
		e.runMeanwhile(key)
		return fmt.Errorf("faulty: delete %s: %w", key, ErrLostResponse)
	}
	return err
}

func (b *Bucket) DeleteMany(ctx context.Context, keys []string) ([]string, error) {
	keys = distinct(keys)
	e := b.match(Delete, keys...)
	if err := e.before(ctx); err != nil {
		return keys, err
	}
	var (
		failed []string
		err    error
	)
	if e.late != nil {
		failed, err = hold(b, ctx, e, func(ctx context.Context) ([]string, error) {
			return b.inner.DeleteMany(ctx, keys)
		})
		if err != nil && len(failed) == 0 {
			failed = keys // the caller gave up first
		}
	} else {
		failed, err = b.inner.DeleteMany(ctx, keys)
	}
	if err == nil && e.loseResponse {
		for _, k := range keys {
			e.runMeanwhile(k)
		}
		return keys, fmt.Errorf("faulty: delete %s: %w", describe(keys), ErrLostResponse)
	}
	return failed, err
}

// distinct returns keys without the repeats of a key, in the order given
// (a new slice: the caller's is never handed back).
func distinct(keys []string) []string {
	seen := make(map[string]bool, len(keys))
	var out []string
	for _, k := range keys {
		if !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	return out
}

func (b *Bucket) Close() error { return b.inner.Close() }
