package broker

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"time"

	"github.com/shale-log/shale/localseg"
	"github.com/shale-log/shale/localseg/recordbatch"
	"github.com/shale-log/shale/tiering"
)

// The remote log of a tiered compacted topic (cleanup.policy with compact,
// remote.storage.enable=true) is compacted by its leader, in its archive
// term, every log.cleaner.backoff.ms once a pass is due by the same rules
// as the log cleaner's (cleanDue): the leader is the only writer of the
// manifest, and its passes are fenced by its leader epoch as its uploads
// are. The local log, which keeps local.retention of what the bucket
// holds, is not compacted (logCleaner.compactOptions).

// remoteCompactionDir is where passes write the new segments on their
// way up, under the data directory (a name without a dash: never taken
// for a partition's directory).
const remoteCompactionDir = "remote-compaction"

// remoteCompactionCallTimeout bounds each object-store call of a pass
// (plus a second per MiB of an upload).
const remoteCompactionCallTimeout = 30 * time.Second

// compactRemote runs one pass over p's remote log, as leader of epoch,
// when one is due.
func (t *partitionTier) compactRemote(ctx context.Context, p *partition, epoch int32, now time.Time) {
	b := t.svc.b
	cfg := p.cfg.Load()
	c := b.cleaner
	if cfg == nil || !cfg.compact || b.cfg.LogCleanerBackoff < 0 || c.isFailed(p) {
		return
	}
	log := b.log.With("topic", t.part.Topic, "partition", t.part.Index)
	scratch := filepath.Join(b.cfg.DataDir, remoteCompactionDir)
	if err := os.MkdirAll(scratch, 0o755); err != nil {
		log.Warn("remote compaction: no scratch directory", "err", err)
		return
	}
	cc := tiering.CompactConfig{
		Bucket:           t.svc.bucket,
		Layout:           t.svc.layout,
		Partition:        t.part,
		Store:            t.store,
		Reader:           t.svc.reader,
		Epoch:            epoch,
		Options:          c.passOptions(cfg, now, min(p.highWatermark(), p.lastStableOffset())),
		SegmentBytes:     cfg.log.SegmentBytes,
		IndexInterval:    cfg.log.IndexIntervalBytes,
		LocalAbortedTxns: p.log.AbortedTxns,
		LastBatches:      p.log.LastBatches(),
		ScratchDir:       scratch,
		CallTimeout:      remoteCompactionCallTimeout,
		Metrics:          t.svc.metrics,
		Fault:            t.svc.cfg.Fault,
		Uploading: func(key string, pending bool) {
			if pending {
				t.svc.spared.Store(key, true)
			} else {
				t.svc.spared.Delete(key)
			}
		},
	}
	// The cleaner note is read once a term, then kept as passes write it.
	lctx, cancel := context.WithTimeout(ctx, remoteCompactionCallTimeout)
	defer cancel()
	if cc.Note, cc.NoteKnown = t.cleanerNote.Load(), t.cleanerNoteKnown.Load(); !cc.NoteKnown {
		note, err := tiering.ReadCleanerNote(lctx, cc.Bucket, cc.Layout, cc.Partition)
		if err != nil {
			if ctx.Err() == nil {
				log.Warn("remote compaction: reading the cleaner note", "err", err)
			}
			return
		}
		t.cleanerNote.Store(note)
		t.cleanerNoteKnown.Store(true)
		cc.Note, cc.NoteKnown = note, true
	}
	cl, err := tiering.RemoteCleanable(lctx, cc)
	if err != nil {
		if ctx.Err() == nil {
			log.Warn("remote compaction: reading the remote log", "err", err)
		}
		return
	}
	if _, due := cleanDue(cl, cfg, now); !due {
		return
	}
	start := time.Now()
	res, err := tiering.CompactRemote(ctx, cc)
	// Bytes that do not check out leave the remote log alone for an
	// hour, as the cleaner does a local one; anything else (the store
	// out, the term ended, the manifest changed under the pass) is tried
	// again at the next look.
	corrupt := errors.Is(err, localseg.ErrSegmentCorrupt) || errors.Is(err, tiering.ErrCorrupt) ||
		errors.Is(err, recordbatch.ErrCorrupt) || errors.Is(err, recordbatch.ErrInvalidRecord) || errors.Is(err, recordbatch.ErrDecompressTooLarge)
	if err != nil && !corrupt && ctx.Err() == nil && !errors.Is(err, tiering.ErrFenced) && !errors.Is(err, tiering.ErrCompactionRaced) {
		log.Warn("remote compaction cut short; the next look starts again", "err", err)
	}
	if c.account(log, "remote compaction", res.CompactStats, start, err, !corrupt) {
		c.markFailed(p)
	}
	// A commit that took: the objects it replaced go, whatever came after.
	t.svc.deleteReplacedLater(res.Replaced)
	if res.Note != nil {
		t.cleanerNote.Store(res.Note)
	}
}

// deleteReplacedLater deletes the objects a remote compaction replaced
// once ReplacedDeleteDelay has passed; the orphan sweeps spare them
// meanwhile (spare). A broker that stops before leaves them to
// the leaders' orphan sweeps (no manifest names them).
func (s *tierService) deleteReplacedLater(keys []string) {
	if len(keys) == 0 {
		return
	}
	for _, k := range keys {
		s.spared.Store(k, true)
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer func() {
			for _, k := range keys {
				s.spared.Delete(k)
			}
		}()
		if !sleepCtx(s.b.ctx, s.cfg.ReplacedDeleteDelay) {
			return
		}
		ctx, cancel := context.WithTimeout(s.b.ctx, time.Minute)
		defer cancel()
		if err := tiering.DeleteReplaced(ctx, s.bucket, keys, s.metrics); err != nil {
			s.b.log.Warn("deleting the objects a remote compaction replaced (left for orphan sweeps)", "err", err)
		}
	}()
}

// spare reports whether the orphan sweeps must keep key: an object a
// remote compaction is writing and has not committed yet, or one it
// replaced that deleteReplacedLater has yet to delete
// (tiering.ArchiverConfig.Spare).
func (s *tierService) spare(key string) bool {
	_, ok := s.spared.Load(key)
	return ok
}
