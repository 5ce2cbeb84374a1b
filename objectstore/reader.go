package objectstore

import (
	"context"
	"fmt"
	"io"
)

// exactReader yields exactly size bytes of r, failing otherwise: a reader
// that ends early fails at its end, and one with bytes left over fails
// before its last byte is handed on, so a backend streaming from it never
// sends a complete body and stores nothing. It also stops when ctx is
// done.
type exactReader struct {
	ctx    context.Context
	r      io.Reader
	key    string
	size   int64
	left   int64
	probed bool
}

func newExactReader(ctx context.Context, key string, r io.Reader, size int64) *exactReader {
	return &exactReader{ctx: ctx, r: r, key: key, size: size, left: size}
}

func (e *exactReader) Read(p []byte) (int, error) {
	if err := e.ctx.Err(); err != nil {
		return 0, err
	}
	if e.left == 0 {
		if err := e.probe(); err != nil {
			return 0, err
		}
		return 0, io.EOF
	}
	if int64(len(p)) > e.left {
		p = p[:e.left]
	}
	n, err := e.r.Read(p)
	e.left -= int64(n)
	if e.left == 0 {
		if perr := e.probe(); perr != nil {
			return 0, perr
		}
		return n, nil
	}
	if err == io.EOF {
		return n, fmt.Errorf("objectstore: put %s: reader ended after %d of %d bytes: %w", e.key, e.size-e.left, e.size, io.ErrUnexpectedEOF)
	}
	return n, err
}

// probe checks the reader has nothing after its size bytes.
func (e *exactReader) probe() error {
	if e.probed {
		return nil
	}
	var b [1]byte
	for {
		n, err := e.r.Read(b[:])
		if n > 0 {
			return fmt.Errorf("objectstore: put %s: reader has more than %d bytes", e.key, e.size)
		}
		if err == io.EOF {
			e.probed = true
			return nil
		}
		if err != nil {
			return fmt.Errorf("objectstore: put %s: %w", e.key, err)
		}
	}
}

// ctxReadCloser stops a body's reads once ctx is done.
type ctxReadCloser struct {
	ctx context.Context
	io.Reader
	io.Closer
}

func (c ctxReadCloser) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.Reader.Read(p)
}
