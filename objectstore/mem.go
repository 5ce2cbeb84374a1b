package objectstore

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"
)

// Mem is an in-memory bucket (mem://): for tests and for the parts of a
// system that need a store but no durability.
type Mem struct {
	mu      sync.Mutex
	objects map[string]memObject
}

type memObject struct {
	data  []byte
	attrs Attrs
}

var _ Bucket = (*Mem)(nil)

// NewMem returns an empty in-memory bucket.
func NewMem() *Mem { return &Mem{objects: map[string]memObject{}} }

func (m *Mem) Put(ctx context.Context, key string, r io.Reader, size int64, opts PutOptions) (Attrs, error) {
	if err := ctx.Err(); err != nil {
		return Attrs{}, err
	}
	if err := CheckKey(key); err != nil {
		return Attrs{}, err
	}
	if size < 0 {
		return Attrs{}, fmt.Errorf("objectstore: put %s: negative size", key)
	}
	data, err := io.ReadAll(io.LimitReader(r, size+1))
	if err != nil {
		return Attrs{}, fmt.Errorf("objectstore: put %s: %w", key, err)
	}
	if int64(len(data)) != size {
		return Attrs{}, fmt.Errorf("objectstore: put %s: read %d bytes, expected %d", key, len(data), size)
	}
	sum := md5.Sum(data)
	a := Attrs{Key: key, Size: size, ETag: `"` + hex.EncodeToString(sum[:]) + `"`, LastModified: time.Now()}
	m.mu.Lock()
	defer m.mu.Unlock()
	old, exists := m.objects[key]
	switch {
	case opts.IfNoneMatch && exists:
		return Attrs{}, fmt.Errorf("%w: %s exists", ErrPreconditionFailed, key)
	case opts.IfMatch != "" && (!exists || old.attrs.ETag != opts.IfMatch):
		return Attrs{}, fmt.Errorf("%w: %s is not at %s", ErrPreconditionFailed, key, opts.IfMatch)
	}
	m.objects[key] = memObject{data: data, attrs: a}
	return a, nil
}

func (m *Mem) Get(ctx context.Context, key string, off, length int64) (io.ReadCloser, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := CheckKey(key); err != nil {
		return nil, err
	}
	m.mu.Lock()
	o, ok := m.objects[key]
	m.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, key)
	}
	data, err := cutRange(o.data, off, length)
	if err != nil {
		return nil, fmt.Errorf("%w: %s at %d", err, key, off)
	}
	return io.NopCloser(gateReader(ctx, bytes.NewReader(data))), nil
}

// cutRange applies Get's range rules to a whole object.
func cutRange(data []byte, off, length int64) ([]byte, error) {
	n := int64(len(data))
	if off < 0 || off > n || (off == n && n > 0) {
		return nil, ErrInvalidRange
	}
	end := n
	if length >= 0 && length < n-off { // not off+length: it may overflow
		end = off + length
	}
	return data[off:end], nil
}

func (m *Mem) Head(ctx context.Context, key string) (Attrs, error) {
	if err := ctx.Err(); err != nil {
		return Attrs{}, err
	}
	if err := CheckKey(key); err != nil {
		return Attrs{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	o, ok := m.objects[key]
	if !ok {
		return Attrs{}, fmt.Errorf("%w: %s", ErrNotFound, key)
	}
	return o.attrs, nil
}

func (m *Mem) List(ctx context.Context, prefix string, fn func(Attrs) error) error {
	return m.ListAfter(ctx, prefix, "", fn)
}

func (m *Mem) ListAfter(ctx context.Context, prefix, after string, fn func(Attrs) error) error {
	m.mu.Lock()
	var attrs []Attrs
	for k, o := range m.objects {
		if k > after && strings.HasPrefix(k, prefix) {
			attrs = append(attrs, o.attrs)
		}
	}
	m.mu.Unlock()
	sort.Slice(attrs, func(i, j int) bool { return attrs[i].Key < attrs[j].Key })
	for _, a := range attrs {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(a); err != nil {
			return err
		}
	}
	return nil
}

func (m *Mem) ListDirs(ctx context.Context, prefix string, fn func(string) error) error {
	m.mu.Lock()
	seen := map[string]bool{}
	var dirs []string
	for k := range m.objects {
		if d, ok := dirOf(k, prefix); ok && !seen[d] {
			seen[d] = true
			dirs = append(dirs, d)
		}
	}
	m.mu.Unlock()
	return handDirs(ctx, dirs, fn)
}

// handDirs sorts dirs by key and hands them to fn, as ListDirs does.
func handDirs(ctx context.Context, dirs []string, fn func(string) error) error {
	sort.Strings(dirs) // by key: "a-b/" comes before "a/"
	for _, d := range dirs {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(d); err != nil {
			return err
		}
	}
	return nil
}

// dirOf is the directory under prefix that key is in (see ListDirs), if
// any.
func dirOf(key, prefix string) (string, bool) {
	if !strings.HasPrefix(key, prefix) {
		return "", false
	}
	i := strings.IndexByte(key[len(prefix):], '/')
	if i < 0 {
		return "", false
	}
	return key[:len(prefix)+i+1], true
}

func (m *Mem) Delete(ctx context.Context, key string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := CheckKey(key); err != nil {
		return err
	}
	m.mu.Lock()
	delete(m.objects, key)
	m.mu.Unlock()
	return nil
}

func (m *Mem) DeleteMany(ctx context.Context, keys []string) ([]string, error) {
	keys = distinct(keys)
	return failedKeys(keys, deleteEach(ctx, keys, 1, m.Delete))
}

func (m *Mem) Close() error { return nil }
