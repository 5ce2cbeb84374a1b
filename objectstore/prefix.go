package objectstore

import (
	"context"
	"fmt"
	"io"
	"strings"
)

// prefixed keeps a bucket's keys under prefix/: what the rest of the
// system sees as "k" is stored as "prefix/k".
type prefixed struct {
	b      Bucket
	prefix string // with its trailing '/'
}

var _ Bucket = (*prefixed)(nil)

func (p *prefixed) countRequests(m *Metrics) bool {
	rc, ok := p.b.(requestCounted)
	return ok && rc.countRequests(m)
}

// WithPrefix returns b seen from under prefix (a valid key, or "" for b
// itself): keys are stored as prefix + "/" + key, List sees only them.
func WithPrefix(b Bucket, prefix string) (Bucket, error) {
	if prefix == "" {
		return b, nil
	}
	if err := CheckKey(prefix); err != nil {
		return nil, fmt.Errorf("objectstore: prefix: %w", err)
	}
	return &prefixed{b: b, prefix: prefix + "/"}, nil
}

func (p *prefixed) key(key string) (string, error) {
	if err := CheckKey(key); err != nil {
		return "", err
	}
	if len(p.prefix)+len(key) > MaxKeyLen {
		return "", fmt.Errorf("%w: %q is too long under %q", ErrInvalidKey, key, p.prefix)
	}
	return p.prefix + key, nil
}

func (p *prefixed) Put(ctx context.Context, key string, r io.Reader, size int64, opts PutOptions) (Attrs, error) {
	k, err := p.key(key)
	if err != nil {
		return Attrs{}, err
	}
	a, err := p.b.Put(ctx, k, r, size, opts)
	a.Key = key
	return a, err
}

func (p *prefixed) Get(ctx context.Context, key string, off, length int64) (io.ReadCloser, error) {
	k, err := p.key(key)
	if err != nil {
		return nil, err
	}
	return p.b.Get(ctx, k, off, length)
}

func (p *prefixed) Head(ctx context.Context, key string) (Attrs, error) {
	k, err := p.key(key)
	if err != nil {
		return Attrs{}, err
	}
	a, err := p.b.Head(ctx, k)
	a.Key = key
	return a, err
}

func (p *prefixed) List(ctx context.Context, prefix string, fn func(Attrs) error) error {
	return p.b.List(ctx, p.prefix+prefix, p.unprefixed(fn))
}

// ListAfter asks for the stored keys after P/after, P the wrapper's
// prefix: k sorts after after exactly when P/k sorts after P/after. An
// after of "" stays "" (not P/), so it lists what List lists, even an
// object another client stored as P/ itself.
func (p *prefixed) ListAfter(ctx context.Context, prefix, after string, fn func(Attrs) error) error {
	if after != "" {
		after = p.prefix + after
	}
	return p.b.ListAfter(ctx, p.prefix+prefix, after, p.unprefixed(fn))
}

// unprefixed passes fn the attributes of the stored objects with the keys
// seen from under the prefix.
func (p *prefixed) unprefixed(fn func(Attrs) error) func(Attrs) error {
	return func(a Attrs) error {
		a.Key = strings.TrimPrefix(a.Key, p.prefix)
		return fn(a)
	}
}

func (p *prefixed) ListDirs(ctx context.Context, prefix string, fn func(string) error) error {
	return p.b.ListDirs(ctx, p.prefix+prefix, func(d string) error {
		return fn(strings.TrimPrefix(d, p.prefix))
	})
}

func (p *prefixed) Delete(ctx context.Context, key string) error {
	k, err := p.key(key)
	if err != nil {
		return err
	}
	return p.b.Delete(ctx, k)
}

// DeleteMany deletes the keys under the prefix in one call of the inner
// bucket's; a key too long with the prefix fails alone with ErrInvalidKey.
func (p *prefixed) DeleteMany(ctx context.Context, keys []string) ([]string, error) {
	keys = distinct(keys)
	errs := make([]error, len(keys))
	stored := make([]string, 0, len(keys))
	for i, key := range keys {
		k, err := p.key(key)
		if err != nil {
			errs[i] = err
			continue
		}
		stored = append(stored, k)
	}
	if len(stored) == 0 {
		return failedKeys(keys, errs)
	}
	innerFailed, innerErr := p.b.DeleteMany(ctx, stored)
	failedInside := make(map[string]bool, len(innerFailed))
	for _, k := range innerFailed {
		failedInside[strings.TrimPrefix(k, p.prefix)] = true
	}
	// Each key the inner call failed has its first error: the error of
	// the first of them, which is the only one of them failedKeys keeps.
	for i, key := range keys {
		if errs[i] == nil && failedInside[key] {
			errs[i] = innerErr
		}
	}
	return failedKeys(keys, errs)
}

func (p *prefixed) Close() error { return p.b.Close() }
