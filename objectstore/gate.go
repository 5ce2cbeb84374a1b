package objectstore

import (
	"context"
	"io"
	"net/http/httptrace"
	"sync"
)

// Gate bounds how many steps of a caller's work may copy bytes at once:
// Hold waits for a step, Release ends it. A caller whose GETs run on
// threads the kernel runs last (a replay's, beside latency-sensitive
// work) passes one with WithGate, so that their copies never take every
// processor of the Go runtime: a thread the kernel makes wait keeps the
// processor it holds.
//
// A Get whose context carries a gate reads its body in steps of at most
// GateReadMax bytes (or what the gate's Step answers, see GateStep), each holding the gate only while it copies: over
// plain HTTP (S3 to an http:// endpoint, on Linux) around each read
// system call of the connection, released while the read waits for
// bytes to arrive; from the filesystem and memory backends around each
// read of the file or copy of the object. Elsewhere (TLS, other systems)
// the body is read as without a gate. A gate's Hold must not wait for
// anything the holder of another step waits for: steps never nest.
type Gate interface {
	Hold()
	Release()
}

// GateReadMax bounds the bytes one gated step of a body's read copies
// when the gate does not say (GateStep): a copy of some tens of
// microseconds.
const GateReadMax = 256 << 10

// GateStep is a Gate that says how many bytes one step of a body's read
// may copy now: fewer while the work it yields to is running, more when
// none is (a step is a system call, and fewer, larger ones cost less per
// byte). An answer of 0 or less is GateReadMax.
type GateStep interface {
	Step() int
}

// stepOf returns the bytes one step of g may copy now.
func stepOf(g Gate) int {
	if s, ok := g.(GateStep); ok {
		if n := s.Step(); n > 0 {
			return n
		}
	}
	return GateReadMax
}

type gateKey struct{}

// WithGate returns ctx carrying g for the Gets made with it (see Gate).
func WithGate(ctx context.Context, g Gate) context.Context {
	return context.WithValue(ctx, gateKey{}, g)
}

// gateOf returns the gate ctx carries, nil when none.
func gateOf(ctx context.Context) Gate {
	g, _ := ctx.Value(gateKey{}).(Gate)
	return g
}

// gatedReader reads r in steps of at most stepOf(g) bytes, each holding
// g: for readers that copy without waiting on a network (a file, memory).
type gatedReader struct {
	r io.Reader
	g Gate
}

// gateReader returns r read through ctx's gate, or r when ctx has none.
func gateReader(ctx context.Context, r io.Reader) io.Reader {
	if g := gateOf(ctx); g != nil {
		return gatedReader{r: r, g: g}
	}
	return r
}

func (g gatedReader) Read(p []byte) (int, error) {
	if step := stepOf(g.g); len(p) > step {
		p = p[:step]
	}
	g.g.Hold()
	defer g.g.Release()
	return g.r.Read(p)
}

// gatedConn is a connection that reads a gated body's bytes through its
// gate while the body's read runs (bulkConn).
type gatedConn interface {
	gateOn(*gatedBody)
	gateOff(*gatedBody)
}

// gatedBody is an HTTP response body read through a gate: while its Read
// runs, the connection it arrives on reads through the gate.
type gatedBody struct {
	g  Gate
	mu sync.Mutex
	// conn is the connection of the request's last attempt; nil when it
	// cannot gate its reads (TLS, other systems).
	conn gatedConn
}

// trace returns ctx with a trace that records the connection each attempt
// of its request gets.
func (b *gatedBody) trace(ctx context.Context) context.Context {
	return httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
		c, _ := info.Conn.(gatedConn)
		b.mu.Lock()
		b.conn = c
		b.mu.Unlock()
	}})
}

// read reads p from body, whose bytes come on b's connection, with the
// connection's reads gated. A nil b reads body.
func (b *gatedBody) read(body io.Reader, p []byte) (int, error) {
	if b == nil {
		return body.Read(p)
	}
	b.mu.Lock()
	c := b.conn
	b.mu.Unlock()
	if c == nil {
		return body.Read(p)
	}
	c.gateOn(b)
	defer c.gateOff(b)
	return body.Read(p)
}
