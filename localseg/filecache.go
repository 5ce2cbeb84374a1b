package localseg

import (
	"container/list"
	"errors"
	"sync"
)

// FileCache bounds the segment files open at once across all logs sharing
// it, and the memory their loaded indexes take.
//
// A sealed segment opens its .log file and loads its two index files on
// first use and gives both up when the cache evicts it, least recently used
// first. Each open segment costs exactly one descriptor: the active segment
// reads through its writable handle. Active segments are evictable like
// the others (a broker with thousands of idle partitions must not hold a
// descriptor for each): an evicted active segment is reopened read-write
// on its next append or read, which goes through acquire. Closing a
// descriptor loses no written data (the page cache keeps it; fsync on the
// reopened descriptor syncs the file). A segment in use (a Range not yet
// released, an append, a lookup, a background fsync) is never closed under
// its user: eviction skips it, and deletion closes it when the last
// reference goes. So the bound is soft: it can be exceeded by segments in
// use, never by idle ones.
//
// Why load whole index files, bounded, rather than mmap or pread searches:
// index files carry a checksum that must be verified before any entry is
// trusted, which reads the file once anyway; after that, a binary search in
// memory costs nothing, and the bound (DefaultIndexCacheBytes across all
// logs) keeps tens of thousands of sealed segments from holding their
// indexes at once. A default segment (1 GiB, an entry per 4 KiB) has
// indexes of about 6 MiB in memory.
type FileCache struct {
	maxFiles int
	mu       struct {
		sync.Mutex
		maxBytes int64
		lru      list.List // of *segment: open; most recent first
		open     int       // descriptors open
		bytes    int64     // memory of loaded sealed indexes
	}
}

// DefaultIndexCacheBytes bounds the memory of loaded sealed-segment
// indexes per FileCache.
const DefaultIndexCacheBytes = 128 << 20

// NewFileCache returns a cache that keeps at most max descriptors open.
func NewFileCache(max int) *FileCache {
	if max < 2 {
		max = 2
	}
	c := &FileCache{maxFiles: max}
	c.mu.maxBytes = DefaultIndexCacheBytes
	return c
}

// SetMaxIndexBytes changes the bound on loaded index memory.
func (c *FileCache) SetMaxIndexBytes(n int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.mu.maxBytes = n
	c.evictLocked()
}

// OpenFiles is the number of segment descriptors open now.
func (c *FileCache) OpenFiles() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mu.open
}

// IndexBytes is the memory held by loaded sealed-segment indexes.
func (c *FileCache) IndexBytes() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mu.bytes
}

// errSegmentGone: the segment was deleted (retention, truncation) or its
// log closed between finding it and opening it. Read retries on it.
var errSegmentGone = errors.New("localseg: segment deleted")

// cacheState is a segment's part of the cache. Guarded by FileCache.mu.
type cacheState struct {
	elem     *list.Element // in lru when open
	open     bool          // file is open and counted
	refs     int           // users in flight
	writable bool          // the active segment: reopened read-write
	deleted  bool          // retired: close when the last reference goes
	bytes    int64         // memory of its loaded indexes
}

// acquire returns the segment's open file with a reference held; release
// gives it back.
func (c *FileCache) acquire(s *segment) (File, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s.cache.deleted {
		return nil, errSegmentGone
	}
	if !s.cache.open {
		if err := s.openLocked(s.cache.writable); err != nil {
			return nil, err
		}
		s.cache.open = true
		c.mu.open++
		s.cache.elem = c.mu.lru.PushFront(s)
	} else if s.cache.elem != nil {
		c.mu.lru.MoveToFront(s.cache.elem)
	}
	s.cache.refs++
	c.evictLocked()
	return s.file, nil
}

// release gives back a reference from acquire.
func (c *FileCache) release(s *segment) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s.cache.refs--
	if s.cache.refs > 0 {
		return
	}
	if s.cache.deleted {
		c.closeLocked(s)
		return
	}
	c.evictLocked()
}

// evictLocked closes least recently used idle segments until the cache is
// within its bounds. Requires c.mu.
func (c *FileCache) evictLocked() {
	for e := c.mu.lru.Back(); e != nil && (c.mu.open > c.maxFiles || c.mu.bytes > c.mu.maxBytes); {
		prev := e.Prev()
		if s := e.Value.(*segment); s.cache.refs == 0 {
			c.closeLocked(s)
		}
		e = prev
	}
}

// closeLocked closes a segment's file and forgets its loaded indexes.
// Requires c.mu and no references.
func (c *FileCache) closeLocked(s *segment) {
	if s.cache.elem != nil {
		c.mu.lru.Remove(s.cache.elem)
		s.cache.elem = nil
	}
	if s.cache.open {
		s.closeFileLocked()
		s.cache.open = false
		c.mu.open--
	}
	c.mu.bytes -= s.cache.bytes
	s.cache.bytes = 0
	s.idx, s.tidx, s.loaded = nil, nil, false
}

// ensureLoaded loads a sealed segment's indexes. The caller holds a
// reference, so they are not dropped before it is done with them.
func (c *FileCache) ensureLoaded(s *segment, f File) error {
	c.mu.Lock()
	done := s.loaded || s.isActive()
	c.mu.Unlock()
	if done {
		return nil
	}
	s.loadMu.Lock()
	defer s.loadMu.Unlock()
	c.mu.Lock()
	done = s.loaded || s.isActive()
	c.mu.Unlock()
	if done {
		return nil
	}
	idx, tidx, err := s.readIndexes(f)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.setLoadedLocked(s, idx, tidx)
	c.evictLocked()
	return nil
}

// setLoadedLocked installs a sealed segment's indexes. Requires c.mu.
func (c *FileCache) setLoadedLocked(s *segment, idx []indexEntry, tidx []timeEntry) {
	c.mu.bytes -= s.cache.bytes
	s.idx, s.tidx, s.loaded = idx, tidx, true
	s.cache.bytes = indexMemory(idx, tidx)
	c.mu.bytes += s.cache.bytes
}

// admit adds an active segment with its writable handle to the cache. It
// is evictable like any idle segment; acquire reopens it read-write.
func (c *FileCache) admit(s *segment, f File) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s.file = f
	s.cache.open = true
	s.cache.writable = true
	c.mu.open++
	s.cache.elem = c.mu.lru.PushFront(s)
	c.evictLocked()
}

// install adds a sealed segment made whole elsewhere (a compaction's new
// segment) with its open read-only handle and its indexes, and holds a
// reference on it (release gives it back): until then its file is never
// reopened by name, which it may not have yet.
func (c *FileCache) install(s *segment, f File, idx []indexEntry, tidx []timeEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s.file = f
	s.cache.open = true
	c.mu.open++
	s.cache.elem = c.mu.lru.PushFront(s)
	s.cache.refs++
	c.setLoadedLocked(s, idx, tidx)
	c.evictLocked()
}

// admitted reports whether admit took s's writable handle (the cache then
// closes it).
func (c *FileCache) admitted(s *segment) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return s.cache.writable || s.cache.open
}

// seal hands a sealed segment's indexes to the cache; reopened later, it
// is read-only. Readers switch from the live indexes to these atomically.
func (c *FileCache) seal(s *segment, idx []indexEntry, tidx []timeEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.setLoadedLocked(s, idx, tidx)
	s.activeIdx.Store(nil)
	s.activeTidx.Store(nil)
	s.cache.writable = false
	if s.cache.open && !s.cache.deleted && s.cache.elem == nil {
		s.cache.elem = c.mu.lru.PushFront(s)
	}
	c.evictLocked()
}

// retire removes a segment for good (deleted, or its log closed): its file
// is closed now, or when the last reference goes.
func (c *FileCache) retire(s *segment) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s.cache.writable = false
	s.cache.deleted = true
	if s.cache.refs == 0 {
		c.closeLocked(s)
	} else if s.cache.elem != nil {
		c.mu.lru.Remove(s.cache.elem)
		s.cache.elem = nil
	}
}
