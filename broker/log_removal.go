package broker

import (
	"context"
	"errors"
	"io/fs"
	"path/filepath"
	"sync"
	"time"

	"github.com/shale-log/shale/localseg"
)

// logRemoval removes partition directories in the background: those of
// topics whose deletion is recorded and those of replicas a finished
// reassignment moved away. Like Kafka's asynchronous log deletion, it keeps
// the work that grows with a topic's width (discarding its logs, unlinking
// their files) out of DeleteTopics, which answers once the deletion is
// recorded in etcd and applied to the replica table.
//
// Only a recorded decision queues a directory. While a directory waits or
// is being removed, the replica manager opens no log in it, so a topic
// re-created under the same name never meets the old files; once such an
// open was put off, the removal applies the metadata again when it is done.
//
// A directory is removed with its partition.metadata last (after a sync of
// the directory), so that a crash half-way leaves a directory that still
// names the deleted topic id: the next start-up finds it (scanStrays) and
// removes it again, and no new topic of the same name adopts the leftover
// segments.
type logRemoval struct {
	fs   localseg.FS
	kick chan struct{} // buffered: work was queued
	// reapply is called (without locks) after directories were removed
	// that an open had waited for.
	reapply func()
	log     func(msg string, args ...any)

	mu struct {
		sync.Mutex
		queue []string
		// pending are the queued directories and the one being
		// removed, with the log to discard first (nil: none open).
		pending map[string]*localseg.Log
		// waited: an open was put off since the last removal.
		waited bool
		// failed holds the error of the last try of the pending
		// directories whose removal failed.
		failed map[string]error
	}
}

func newLogRemoval(fsys localseg.FS) *logRemoval {
	if fsys == nil {
		fsys = localseg.OSFS{}
	}
	r := &logRemoval{fs: fsys, kick: make(chan struct{}, 1)}
	r.mu.pending = map[string]*localseg.Log{}
	r.mu.failed = map[string]error{}
	return r
}

// queue queues dir for removal, after discarding l when it is not nil.
func (r *logRemoval) queue(dir string, l *localseg.Log) {
	r.mu.Lock()
	old, queued := r.mu.pending[dir]
	if !queued || old == nil {
		r.mu.pending[dir] = l
	}
	if !queued {
		r.mu.queue = append(r.mu.queue, dir)
	}
	r.mu.Unlock()
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// busy reports whether dir waits for removal or is being removed; if so, it
// notes that an open waits for it.
func (r *logRemoval) busy(dir string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.mu.pending[dir]
	if ok {
		r.mu.waited = true
	}
	return ok
}

// failure is the error of the last try to remove dir when it failed and
// dir is still pending; nil otherwise.
func (r *logRemoval) failure(dir string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.mu.pending[dir]; !ok {
		return nil
	}
	return r.mu.failed[dir]
}

// run removes queued directories until ctx ends; then it discards the logs
// still queued (their directories stay, found again at the next start). A
// directory that could not be removed stays pending (no log opens in it)
// and is tried again with a backoff from a second to a minute.
func (r *logRemoval) run(ctx context.Context) {
	defer r.discardQueued()
	var failed []string
	backoff := time.Second
	for {
		var retry *time.Timer
		var retryC <-chan time.Time
		if len(failed) > 0 {
			retry = time.NewTimer(backoff)
			retryC = retry.C
		}
		select {
		case <-ctx.Done():
			return
		case <-r.kick:
		case <-retryC:
			r.mu.Lock()
			r.mu.queue = append(r.mu.queue, failed...)
			r.mu.Unlock()
			failed = nil
			backoff = min(2*backoff, time.Minute)
		}
		if retry != nil {
			retry.Stop()
		}
		failed = append(failed, r.drain(ctx)...)
		if len(failed) == 0 {
			backoff = time.Second
		}
	}
}

// drain removes the queued directories, returning those it could not.
func (r *logRemoval) drain(ctx context.Context) (failed []string) {
	for ctx.Err() == nil {
		r.mu.Lock()
		if len(r.mu.queue) == 0 {
			waited := r.mu.waited
			r.mu.waited = false
			r.mu.Unlock()
			if waited && r.reapply != nil {
				r.reapply()
			}
			return failed
		}
		dir := r.mu.queue[0]
		r.mu.queue = r.mu.queue[1:]
		l := r.mu.pending[dir]
		r.mu.pending[dir] = nil // discarded below
		r.mu.Unlock()
		if l != nil {
			l.Discard()
		}
		if err := removePartitionDir(r.fs, dir); err != nil {
			r.log("cannot remove a partition directory; retrying", "dir", dir, "err", err)
			failed = append(failed, dir)
			r.mu.Lock()
			r.mu.failed[dir] = err
			r.mu.Unlock()
			continue
		}
		r.mu.Lock()
		delete(r.mu.pending, dir)
		delete(r.mu.failed, dir)
		r.mu.Unlock()
	}
	return failed
}

func (r *logRemoval) discardQueued() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, l := range r.mu.pending {
		if l != nil {
			l.Discard()
		}
	}
	r.mu.queue = nil
}

// removePartitionDir removes a partition directory, its partition.metadata
// last: until the other files are gone (and that is synced), the directory
// still names its topic id.
func removePartitionDir(fsys localseg.FS, dir string) error {
	entries, err := fsys.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		if e.Name() != partitionMetadataFile {
			errs = append(errs, fsys.RemoveAll(filepath.Join(dir, e.Name())))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if err := fsys.SyncDir(dir); err != nil {
		return err
	}
	return fsys.RemoveAll(dir)
}
