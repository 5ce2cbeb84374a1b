// Package objectstore is the small blob interface Shale's tiered storage is
// written against, and its backends: S3 (and S3-compatible stores such as
// MinIO), the local filesystem and memory. It knows nothing of Kafka.
//
// Every backend passes the one conformance suite in objectstoretest; the
// contract below is what that suite checks.
//
//	backends    NewS3 (s3://), NewFS (file://), NewMem (mem://); Open picks
//	            one from a URL
//	decorators  WithPrefix (keys under a prefix), Metrics.Wrap
//	            (Prometheus), faulty.New (injected faults, for tests)
//	helpers     ReadAll (bounded whole-object read), ReadAt (a range as
//	            parallel ranged Gets)
//	tests       objectstoretest.Run (conformance), miniotest (a real MinIO)
package objectstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// Errors every backend returns (wrapped) for the conditions they name;
// callers test them with errors.Is.
var (
	// ErrNotFound: no object under the key.
	ErrNotFound = errors.New("objectstore: object not found")
	// ErrPreconditionFailed: a conditional Put's condition did not hold
	// (the key exists for IfNoneMatch, or its ETag differs or it is
	// missing for IfMatch). Nothing was written.
	ErrPreconditionFailed = errors.New("objectstore: precondition failed")
	// ErrInvalidRange: a ranged Get starting past the object's end.
	ErrInvalidRange = errors.New("objectstore: invalid range")
	// ErrInvalidKey: a key that CheckKey refuses. Nothing was done.
	ErrInvalidKey = errors.New("objectstore: invalid key")
)

// MaxKeyLen is the longest key in bytes (S3's limit).
const MaxKeyLen = 1024

// CheckKey reports whether key is one every backend can store under the
// same name: 1 to MaxKeyLen bytes of valid UTF-8 without control
// characters, '/'-separated segments that are neither empty nor "." or
// ".." (so no leading, trailing or doubled '/'). S3 accepts more; these
// are the keys a filesystem can hold too, so a bucket can move between
// backends. The error wraps ErrInvalidKey.
func CheckKey(key string) error {
	if key == "" || len(key) > MaxKeyLen || !utf8.ValidString(key) {
		return fmt.Errorf("%w: %q", ErrInvalidKey, key)
	}
	for _, r := range key {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("%w: %q has a control character", ErrInvalidKey, key)
		}
	}
	for seg := range strings.SplitSeq(key, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("%w: %q has an empty, . or .. segment", ErrInvalidKey, key)
		}
	}
	return nil
}

// Attrs describes a stored object.
type Attrs struct {
	Key  string
	Size int64
	// ETag identifies one version of the object's content; a Put that
	// replaces the object changes it. Opaque: compare, never parse.
	ETag         string
	LastModified time.Time
}

// PutOptions make a Put conditional. At most one condition is set.
type PutOptions struct {
	// IfNoneMatch: create only; fail with ErrPreconditionFailed when the
	// key exists (S3's If-None-Match: *).
	IfNoneMatch bool
	// IfMatch: replace only the version with this ETag; fail with
	// ErrPreconditionFailed when the object changed or is missing.
	IfMatch string
}

// Bucket is a flat namespace of immutable-once-written objects.
//
// Keys: Put, Get, Head and Delete refuse a key CheckKey refuses with
// ErrInvalidKey (DeleteMany fails that key alone); the listings take any
// prefix. Keep layouts prefix-free (never both "x" and "x/y"): S3 stores
// both but MinIO lists only "x", and the filesystem backend refuses the
// second with ErrInvalidKey.
//
// Consistency: strong read-after-write, as S3 gives since 2020: a Get,
// Head or List that starts after a Put or Delete returned sees its effect.
// Atomicity: a reader sees either the whole old object or the whole new
// one, never a part. Every call honours its context's deadline and
// cancellation; a call that fails with a deadline or a transport error may
// or may not have taken effect (re-read before deciding).
type Bucket interface {
	// Put stores size bytes read from r under key, replacing what was
	// there unless opts make it conditional. A reader yielding fewer or
	// more than size bytes fails the Put and stores nothing. It returns
	// the new object's attributes.
	Put(ctx context.Context, key string, r io.Reader, size int64, opts PutOptions) (Attrs, error)
	// Get reads length bytes of the object from offset off; length < 0
	// reads to the end. A range running past the end is cut at the end;
	// one starting past the end is ErrInvalidRange (an empty object
	// read from 0 is an empty body). The caller closes the body.
	Get(ctx context.Context, key string, off, length int64) (io.ReadCloser, error)
	// Head returns an object's attributes.
	Head(ctx context.Context, key string) (Attrs, error)
	// List calls fn for every object whose key starts with prefix, in
	// ascending key order, until fn returns an error (returned as is).
	List(ctx context.Context, prefix string, fn func(Attrs) error) error
	// ListAfter is List restricted to the keys that sort after after
	// (S3's StartAfter): it calls fn for every object whose key starts
	// with prefix and is greater than after, byte by byte, in ascending
	// key order, until fn returns an error (returned as is). after need
	// not be a key nor start with prefix; "" lists what List lists. The
	// store passes over the keys up to after itself, neither handing
	// them out nor fetching their attributes: a caller whose keys embed
	// zero-padded numbers lists the tail of a long directory in the
	// requests the tail needs.
	ListAfter(ctx context.Context, prefix, after string, fn func(Attrs) error) error
	// ListDirs calls fn once for every "directory" under prefix: each
	// distinct beginning of the keys that start with prefix, up to and
	// including the first "/" after prefix (S3's common prefixes with
	// delimiter "/"), in ascending order, until fn returns an error
	// (returned as is). Keys without a "/" after prefix name none. Its
	// cost follows the directories, not the objects under them: the way
	// to find a bucket's topics without listing every segment.
	ListDirs(ctx context.Context, prefix string, fn func(dir string) error) error
	// Delete removes an object. Deleting a missing key is not an error.
	Delete(ctx context.Context, key string) error
	// DeleteMany removes the objects under keys, each whatever the
	// others' outcome, in as few requests as the store allows (S3's
	// DeleteObjects takes 1,000 keys a request). Missing keys are not an
	// error, nor is a key given twice (it is deleted, and named in
	// failed, once). It returns the keys whose delete failed or may not
	// have taken effect (a request whose response was lost), in the
	// order given, and the first of their errors: err is nil exactly when
	// failed is empty. A key CheckKey refuses fails with ErrInvalidKey
	// and the others still go; a call whose context ends fails the keys
	// it has not reached with the context's error. It is how a caller
	// deletes many objects: one Delete a key costs a round trip each.
	DeleteMany(ctx context.Context, keys []string) (failed []string, err error)
	// Close releases the backend's resources.
	Close() error
}

// ReadAll reads a whole object into memory, refusing one larger than max
// bytes (manifests and index objects: never size an allocation by what a
// store claims).
func ReadAll(ctx context.Context, b Bucket, key string, max int64) ([]byte, error) {
	body, err := b.Get(ctx, key, 0, -1)
	if err != nil {
		return nil, err
	}
	defer body.Close()
	data, err := io.ReadAll(io.LimitReader(body, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > max {
		return nil, errors.New("objectstore: " + key + " is larger than the limit")
	}
	return data, nil
}

// distinct returns keys without the repeats of a key, in the order given.
func distinct(keys []string) []string {
	seen := make(map[string]bool, len(keys))
	out := keys[:0:0]
	for _, k := range keys {
		if !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	return out
}

// deleteEach deletes each key with a call of del of its own, n calls at
// once, and returns each key's error at its index (nil: deleted); the
// keys not reached when ctx ends fail with its error. It is DeleteMany
// for a store without a batch delete.
func deleteEach(ctx context.Context, keys []string, n int, del func(ctx context.Context, key string) error) []error {
	errs := make([]error, len(keys))
	slots := make(chan struct{}, max(n, 1))
	var wg sync.WaitGroup
	for i, k := range keys {
		slots <- struct{}{}
		if err := ctx.Err(); err != nil {
			<-slots
			errs[i] = err
			continue
		}
		wg.Go(func() {
			defer func() { <-slots }()
			errs[i] = del(ctx, k)
		})
	}
	wg.Wait()
	return errs
}

// failedKeys is DeleteMany's answer for keys whose deletes ended with errs
// (errs[i] is keys[i]'s, nil: deleted).
func failedKeys(keys []string, errs []error) (failed []string, err error) {
	for i, e := range errs {
		if e != nil {
			failed = append(failed, keys[i])
			if err == nil {
				err = e
			}
		}
	}
	return failed, err
}
