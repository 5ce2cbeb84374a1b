package objectstore

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"hash/fnv"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// FS is a bucket in a local directory (file:///path): the `shale dev`
// default. Its layout under the root:
//
//	objects/   one file per object, holding exactly the object's bytes,
//	           at the key's path (key "t/0/x.log" is objects/t/0/x.log).
//	           So a key cannot also be a directory of others: a Put of
//	           "x/y" while "x" exists (or the reverse) is ErrInvalidKey;
//	           layouts are prefix-free anyway (see Bucket). A segment
//	           longer than a file name (255 bytes) is ErrInvalidKey too.
//	           The ETag is the file's user.shale.etag xattr: the CRC-32C
//	           of the bytes (hardware-assisted, unlike MD5), the size,
//	           the modification time in ns and the inode, in hex, so it
//	           changes with every write, even of the same bytes; a file
//	           without the xattr (copied in by hand, or a filesystem
//	           without xattrs) has it computed when asked.
//	tmp/       objects being written
//	locks/     lock files serialising the last step of writes per key
//
// A Put writes a temporary file, fsyncs it, then under a flock on one
// of 64 lock files (picked by the key's hash) checks the put's condition,
// renames the file into place and fsyncs the directory: an object is
// either wholly there or not at all after a crash, and conditional puts
// are linearisable across goroutines and processes sharing the root.
//
// A directory fsync that fails after the change it was to make durable (a
// rename into place, a removal, a new directory) leaves the change visible
// but perhaps lost at the next crash, and Linux reports a writeback error
// once: a later fsync may succeed without making it durable. A reader of
// the visible state (a manifest commit reading back its write of unknown
// outcome) would then build on what a crash can take back, such as local
// segments deleted because the bucket names them. So from the first such
// failure the bucket answers every call with that error, as a store that
// is down, until it is opened again (after the disk has been seen to).
type FS struct {
	root, objects, tmp, locks string
	// syncDir fsyncs a directory (the package's syncDir; tests fail it).
	syncDir func(dir string) error
	// broken is the first failed directory fsync after a change; nil
	// while there is none.
	broken atomic.Pointer[error]
}

var _ Bucket = (*FS)(nil)

const (
	fsETagXattr = "user.shale.etag"
	fsLockFiles = 64
	fsMaxName   = 255
)

// NewFS opens (creating it if needed) a bucket rooted at dir, and
// removes temporary files more than an hour old that a crash left.
func NewFS(dir string) (*FS, error) {
	root, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("objectstore: %w", err)
	}
	f := &FS{root: root, objects: filepath.Join(root, "objects"), tmp: filepath.Join(root, "tmp"), locks: filepath.Join(root, "locks"), syncDir: syncDir}
	for _, d := range []string{f.objects, f.tmp, f.locks} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("objectstore: %w", err)
		}
	}
	if err := syncDir(root); err != nil {
		return nil, err
	}
	if ents, err := os.ReadDir(f.tmp); err == nil {
		for _, e := range ents {
			if info, err := e.Info(); err == nil && time.Since(info.ModTime()) > time.Hour {
				os.Remove(filepath.Join(f.tmp, e.Name()))
			}
		}
	}
	return f, nil
}

// Root is the directory the bucket lives in.
func (f *FS) Root() string { return f.root }

// path maps a valid key to its file, and checks every name fits.
func (f *FS) path(key string) (string, error) {
	if err := CheckKey(key); err != nil {
		return "", err
	}
	for seg := range strings.SplitSeq(key, "/") {
		if len(seg) > fsMaxName {
			return "", fmt.Errorf("%w: %q: segment too long for a file name", ErrInvalidKey, key)
		}
	}
	return filepath.Join(f.objects, filepath.FromSlash(key)), nil
}

// keyOf maps a file under objects/ back to its key.
func (f *FS) keyOf(path string) (string, bool) {
	rel, err := filepath.Rel(f.objects, path)
	if err != nil {
		return "", false
	}
	key := filepath.ToSlash(rel)
	if _, err := f.path(key); err != nil {
		return "", false
	}
	return key, true
}

// conflict tells whether err is a key meeting a directory of other keys,
// or a directory meeting a key.
func conflict(err error) bool {
	return errors.Is(err, syscall.ENOTDIR) || errors.Is(err, syscall.EISDIR) ||
		errors.Is(err, syscall.EEXIST) || errors.Is(err, syscall.ENOTEMPTY)
}

func notFound(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)
}

// openFile opens an object's file; a directory (of other keys) is no
// object.
func openFile(key, path string) (*os.File, error) {
	file, err := os.Open(path)
	if notFound(err) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, key)
	}
	if err != nil {
		return nil, err
	}
	if info, err := file.Stat(); err != nil || info.IsDir() {
		file.Close()
		if err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %s", ErrNotFound, key)
	}
	return file, nil
}

func (f *FS) Put(ctx context.Context, key string, r io.Reader, size int64, opts PutOptions) (Attrs, error) {
	if err := f.usable(ctx); err != nil {
		return Attrs{}, err
	}
	path, err := f.path(key)
	if err != nil {
		return Attrs{}, err
	}
	if size < 0 {
		return Attrs{}, fmt.Errorf("objectstore: put %s: negative size", key)
	}
	tmp, err := os.CreateTemp(f.tmp, "put-*")
	if err != nil {
		return Attrs{}, fmt.Errorf("objectstore: put %s: %w", key, err)
	}
	committed := false
	defer func() {
		if !committed {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	h := crc32.New(castagnoli)
	if _, err := io.Copy(io.MultiWriter(tmp, h), newExactReader(ctx, key, r, size)); err != nil {
		return Attrs{}, fmt.Errorf("objectstore: put %s: %w", key, err)
	}
	info, err := tmp.Stat() // the last write is done: mtime is final
	if err != nil {
		return Attrs{}, fmt.Errorf("objectstore: put %s: %w", key, err)
	}
	etag := fsETag(h.Sum32(), info)
	if err := unix.Fsetxattr(int(tmp.Fd()), fsETagXattr, []byte(etag), 0); err != nil && !errors.Is(err, unix.ENOTSUP) {
		return Attrs{}, fmt.Errorf("objectstore: put %s: set etag: %w", key, err)
	}
	if err := tmp.Sync(); err != nil {
		return Attrs{}, fmt.Errorf("objectstore: put %s: %w", key, err)
	}
	info, err = tmp.Stat()
	if err != nil {
		return Attrs{}, fmt.Errorf("objectstore: put %s: %w", key, err)
	}
	if err := tmp.Close(); err != nil {
		return Attrs{}, fmt.Errorf("objectstore: put %s: %w", key, err)
	}

	unlock, err := f.lock(key)
	if err != nil {
		return Attrs{}, err
	}
	defer unlock()
	if opts.IfNoneMatch || opts.IfMatch != "" {
		cur, err := f.head(key, path)
		exists := err == nil
		if err != nil && !errors.Is(err, ErrNotFound) {
			return Attrs{}, err
		}
		switch {
		case opts.IfNoneMatch && exists:
			return Attrs{}, fmt.Errorf("%w: %s exists", ErrPreconditionFailed, key)
		case opts.IfMatch != "" && (!exists || cur.ETag != opts.IfMatch):
			return Attrs{}, fmt.Errorf("%w: %s is not at %s", ErrPreconditionFailed, key, opts.IfMatch)
		}
	}
	// Ask for the context once more: past this point the put happens.
	if err := ctx.Err(); err != nil {
		return Attrs{}, err
	}
	// A Delete of a sibling may remove an emptied directory between
	// mkdirs and the rename: then make it again.
	for attempt := 0; ; attempt++ {
		if err = f.mkdirs(filepath.Dir(path)); err == nil {
			if err = os.Rename(tmp.Name(), path); err == nil {
				break
			}
		}
		if conflict(err) {
			return Attrs{}, fmt.Errorf("%w: %s: a key and a directory of keys meet (%v)", ErrInvalidKey, key, err)
		}
		if !notFound(err) || attempt == 10 {
			return Attrs{}, fmt.Errorf("objectstore: put %s: %w", key, err)
		}
	}
	committed = true
	if err := f.syncChange(filepath.Dir(path)); err != nil {
		return Attrs{}, err
	}
	return Attrs{Key: key, Size: size, ETag: etag, LastModified: info.ModTime()}, nil
}

// mkdirs makes dir and its missing parents under objects/, fsyncing the
// parent of each directory it makes.
func (f *FS) mkdirs(dir string) error {
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	rel, err := filepath.Rel(f.objects, dir)
	if err != nil || rel == "." {
		return err
	}
	cur := f.objects
	for _, name := range strings.Split(rel, string(filepath.Separator)) {
		next := filepath.Join(cur, name)
		switch err := os.Mkdir(next, 0o755); {
		case err == nil:
			if err := f.syncChange(cur); err != nil {
				return err
			}
		case errors.Is(err, fs.ErrExist):
			if info, serr := os.Stat(next); serr == nil && !info.IsDir() {
				return fmt.Errorf("%s: %w", next, syscall.ENOTDIR)
			}
		default:
			return err
		}
		cur = next
	}
	return nil
}

// usable returns the context's error, or the bucket's if a directory
// fsync failed (see FS).
func (f *FS) usable(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := f.broken.Load(); err != nil {
		return *err
	}
	return nil
}

// syncChange fsyncs dir after a change to it; on failure the bucket is
// unusable from then on (see FS).
func (f *FS) syncChange(dir string) error {
	err := f.syncDir(dir)
	if err == nil {
		return nil
	}
	err = fmt.Errorf("objectstore: the bucket at %s is unusable until reopened, a change may not survive a crash: %w", f.root, err)
	f.broken.CompareAndSwap(nil, &err)
	return *f.broken.Load()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("objectstore: sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("objectstore: sync %s: %w", dir, err)
	}
	return nil
}

// lock takes the flock that serialises writes to key's group of keys.
func (f *FS) lock(key string) (unlock func(), err error) {
	h := fnv.New32a()
	h.Write([]byte(key))
	name := filepath.Join(f.locks, fmt.Sprintf("%02d", h.Sum32()%fsLockFiles))
	lf, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("objectstore: lock %s: %w", key, err)
	}
	for {
		err = unix.Flock(int(lf.Fd()), unix.LOCK_EX)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		lf.Close()
		return nil, fmt.Errorf("objectstore: lock %s: %w", key, err)
	}
	return func() { lf.Close() }, nil
}

func (f *FS) Get(ctx context.Context, key string, off, length int64) (io.ReadCloser, error) {
	if err := f.usable(ctx); err != nil {
		return nil, err
	}
	path, err := f.path(key)
	if err != nil {
		return nil, err
	}
	file, err := openFile(key, path)
	if errors.Is(err, ErrNotFound) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("objectstore: get %s: %w", key, err)
	}
	info, err := file.Stat()
	if err != nil {
		file.Close()
		return nil, fmt.Errorf("objectstore: get %s: %w", key, err)
	}
	n := info.Size()
	if off < 0 || off > n || (off == n && n > 0) {
		file.Close()
		return nil, fmt.Errorf("%w: %s at %d", ErrInvalidRange, key, off)
	}
	end := n
	if length >= 0 && length < n-off { // not off+length: it may overflow
		end = off + length
	}
	return ctxReadCloser{ctx: ctx, Reader: gateReader(ctx, io.NewSectionReader(file, off, end-off)), Closer: file}, nil
}

func (f *FS) Head(ctx context.Context, key string) (Attrs, error) {
	if err := f.usable(ctx); err != nil {
		return Attrs{}, err
	}
	path, err := f.path(key)
	if err != nil {
		return Attrs{}, err
	}
	return f.head(key, path)
}

func (f *FS) head(key, path string) (Attrs, error) {
	file, err := openFile(key, path)
	if errors.Is(err, ErrNotFound) {
		return Attrs{}, err
	}
	if err != nil {
		return Attrs{}, fmt.Errorf("objectstore: head %s: %w", key, err)
	}
	defer file.Close()
	a, err := fileAttrs(key, file)
	if err != nil {
		return Attrs{}, fmt.Errorf("objectstore: head %s: %w", key, err)
	}
	return a, nil
}

// fileAttrs reads an open object file's attributes; one descriptor, so
// size and ETag describe the same version.
func fileAttrs(key string, file *os.File) (Attrs, error) {
	info, err := file.Stat()
	if err != nil {
		return Attrs{}, err
	}
	a := Attrs{Key: key, Size: info.Size(), LastModified: info.ModTime()}
	var buf [128]byte
	if n, err := unix.Fgetxattr(int(file.Fd()), fsETagXattr, buf[:]); err == nil && n > 2 {
		a.ETag = string(buf[:n])
		return a, nil
	}
	h := crc32.New(castagnoli)
	if _, err := io.Copy(h, io.NewSectionReader(file, 0, info.Size())); err != nil {
		return Attrs{}, err
	}
	a.ETag = fsETag(h.Sum32(), info)
	return a, nil
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// fsETag is an object file's ETag (see FS).
func fsETag(crc uint32, info os.FileInfo) string {
	var ino uint64
	if st, ok := info.Sys().(*syscall.Stat_t); ok {
		ino = st.Ino
	}
	return fmt.Sprintf(`"%08x-%x-%x-%x"`, crc, info.Size(), info.ModTime().UnixNano(), ino)
}

func (f *FS) ListDirs(ctx context.Context, prefix string, fn func(string) error) error {
	if err := f.usable(ctx); err != nil {
		return err
	}
	// The deepest directory the prefix names in full, and the start of
	// the names in it.
	dir, base, rest := f.objects, "", prefix
	if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
		for _, s := range strings.Split(prefix[:i], "/") {
			if s == "" || s == "." || s == ".." {
				return nil // no valid key has this prefix
			}
			dir = filepath.Join(dir, s)
		}
		base, rest = prefix[:i+1], prefix[i+1:]
	}
	entries, err := os.ReadDir(dir)
	if notFound(err) || errors.Is(err, syscall.ENAMETOOLONG) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("objectstore: list %q: %w", prefix, err)
	}
	var dirs []string
	for _, e := range entries {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), rest) {
			continue
		}
		// A directory whose objects were all deleted may stay behind:
		// it names a directory only while it holds an object.
		held, err := f.holdsObject(ctx, filepath.Join(dir, e.Name()))
		if err != nil {
			return fmt.Errorf("objectstore: list %q: %w", prefix, err)
		}
		if held {
			dirs = append(dirs, base+e.Name()+"/")
		}
	}
	return handDirs(ctx, dirs, fn)
}

// holdsObject reports whether the directory holds an object, at any
// depth; it stops at the first.
func (f *FS) holdsObject(ctx context.Context, dir string) (bool, error) {
	errFound := errors.New("found")
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if notFound(err) {
				return nil // deleted meanwhile
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if _, ok := f.keyOf(path); ok && !d.IsDir() {
			return errFound
		}
		return nil
	})
	if err == errFound {
		return true, nil
	}
	return false, err
}

func (f *FS) List(ctx context.Context, prefix string, fn func(Attrs) error) error {
	return f.ListAfter(ctx, prefix, "", fn)
}

// ListAfter skips the files up to after by name, unopened, and the
// directories whose keys all sort before it.
func (f *FS) ListAfter(ctx context.Context, prefix, after string, fn func(Attrs) error) error {
	if err := f.usable(ctx); err != nil {
		return err
	}
	// Walk the deepest directory the prefix names in full.
	start := f.objects
	if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
		for _, s := range strings.Split(prefix[:i], "/") {
			if s == "" || s == "." || s == ".." {
				return nil // no valid key has this prefix
			}
			start = filepath.Join(start, s)
		}
	}
	var attrs []Attrs
	err := filepath.WalkDir(start, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if notFound(err) || errors.Is(err, syscall.ENAMETOOLONG) {
				return nil // gone (or never there): nothing to list
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		key, ok := f.keyOf(path)
		if d.IsDir() {
			// An after beyond "d/" but not starting with it is
			// beyond every key in d: skip d unread.
			if dir := key + "/"; ok && after > dir && !strings.HasPrefix(after, dir) {
				return filepath.SkipDir
			}
			return nil
		}
		if !ok || key <= after || !strings.HasPrefix(key, prefix) {
			return nil
		}
		file, err := os.Open(path)
		if notFound(err) {
			return nil // deleted while listing
		}
		if err != nil {
			return err
		}
		a, err := fileAttrs(key, file)
		file.Close()
		if err != nil {
			return err
		}
		attrs = append(attrs, a)
		return nil
	})
	if err != nil {
		return fmt.Errorf("objectstore: list %q: %w", prefix, err)
	}
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

func (f *FS) Delete(ctx context.Context, key string) error {
	if err := f.usable(ctx); err != nil {
		return err
	}
	path, err := f.path(key)
	if err != nil {
		return err
	}
	unlock, err := f.lock(key)
	if err != nil {
		return err
	}
	defer unlock()
	if info, err := os.Lstat(path); notFound(err) || (err == nil && info.IsDir()) {
		return nil // no such object (a directory is others' keys)
	}
	if err := os.Remove(path); err != nil {
		if notFound(err) {
			return nil
		}
		return fmt.Errorf("objectstore: delete %s: %w", key, err)
	}
	dir := filepath.Dir(path)
	if err := f.syncChange(dir); err != nil {
		return err
	}
	// Remove directories the delete emptied (rmdir refuses non-empty
	// ones); one left behind by a crash is harmless.
	for dir != f.objects && os.Remove(dir) == nil {
		dir = filepath.Dir(dir)
	}
	return nil
}

// DeleteMany deletes the keys one after another, as Delete does: each
// removal has its directory fsynced before the next.
func (f *FS) DeleteMany(ctx context.Context, keys []string) ([]string, error) {
	keys = distinct(keys)
	return failedKeys(keys, deleteEach(ctx, keys, 1, f.Delete))
}

func (f *FS) Close() error { return nil }
