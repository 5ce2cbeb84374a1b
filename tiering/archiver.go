package tiering

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/shale-log/shale/localseg"
	"github.com/shale-log/shale/objectstore"
)

// Source is what the archiver reads from: a partition's local log.
type Source interface {
	Segments() []localseg.SegmentInfo
	OpenSealed(base int64) (*localseg.SealedSegment, error)
}

var _ Source = (*localseg.Log)(nil)

// ArchiverConfig configures one partition's archiver.
type ArchiverConfig struct {
	Bucket    objectstore.Bucket
	Layout    Layout
	Partition Partition
	Manifest  *ManifestStore
	Source    Source
	Logger    *slog.Logger
	Metrics   *Metrics // nil: none
	// CallTimeout bounds each object-store call (default 30s, plus a
	// second per MiB for segment uploads).
	CallTimeout time.Duration
	// OnCommit is called after every manifest commit, with the new
	// manifest (the broker moves the local retention guard).
	OnCommit func(*Manifest)
	// Fault, when set, is called at the points of an upload where
	// crash tests kill the process (FaultUploaded, FaultCommitted).
	Fault func(point string)
}

// Fault points of an upload (ArchiverConfig.Fault).
const (
	// FaultUploaded: the segment and its companion are in the bucket,
	// the manifest does not name them yet.
	FaultUploaded = "uploaded"
	// FaultCommitted: the manifest names the segment; the local log
	// has not been told yet (its copy cannot be deleted yet).
	FaultCommitted = "committed"
)

// Archiver uploads one partition's sealed segments and commits them to its
// manifest. The partition's leader runs it; a new leader runs a new one.
type Archiver struct {
	cfg ArchiverConfig
}

// NewArchiver returns an archiver.
func NewArchiver(cfg ArchiverConfig) *Archiver {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.CallTimeout == 0 {
		cfg.CallTimeout = 30 * time.Second
	}
	return &Archiver{cfg: cfg}
}

// UploadNext uploads the oldest sealed local segment that ends above the
// manifest's end and at or below limit (the high watermark, or the last
// stable offset), then commits it to the manifest as leader of epoch. It
// reports whether it committed a segment. ErrFenced means a newer leader
// has taken over: stop.
func (a *Archiver) UploadNext(ctx context.Context, epoch int32, limit int64) (bool, error) {
	m := a.cfg.Manifest.Current()
	end := m.End()
	var pick *localseg.SegmentInfo
	for _, s := range a.cfg.Source.Segments() {
		if s.Active || s.NextOffset > limit {
			break
		}
		if s.NextOffset > end && s.Size > 0 {
			pick = &s
			break
		}
	}
	if pick == nil {
		return false, nil
	}
	ss, err := a.cfg.Source.OpenSealed(pick.BaseOffset)
	if errors.Is(err, localseg.ErrNotSealed) {
		return false, nil // deleted or truncated meanwhile: look again next time
	}
	if err != nil {
		return false, err
	}
	defer ss.Close()
	if m.SegmentCount() > 0 && ss.BaseOffset > end {
		a.cfg.Logger.Warn("remote log has a gap: local data below the segment was deleted before upload",
			"partition", a.cfg.Partition.String(), "remote_end", end, "segment", ss.BaseOffset)
	}
	seg := Segment{BaseOffset: ss.BaseOffset, NextOffset: ss.NextOffset, Size: ss.Size, MaxTimestamp: ss.MaxTimestamp,
		UploadEpoch: epoch, Epochs: ss.Epochs}
	if _, err := rand.Read(seg.ID[:]); err != nil {
		return false, err
	}
	comp := EncodeCompanion(&Companion{OffsetIndex: ss.OffsetIndex, TimeIndex: ss.TimeIndex, ProducerSnapshot: ss.ProducerSnapshot, Epochs: ss.Epochs})
	seg.CompanionSize = int64(len(comp))
	p, l := a.cfg.Partition, a.cfg.Layout
	logKey, compKey := l.SegmentKey(p, seg.BaseOffset, seg.ID), l.CompanionKey(p, seg.BaseOffset, seg.ID)
	start := time.Now()
	if err := a.put(ctx, logKey, io.NewSectionReader(ss, 0, ss.Size), ss.Size); err != nil {
		return false, err
	}
	if err := a.put(ctx, compKey, bytes.NewReader(comp), int64(len(comp))); err != nil {
		return false, err
	}
	a.fault(FaultUploaded)
	cctx, cancel := context.WithTimeout(ctx, a.cfg.CallTimeout)
	committed := false
	nm, err := a.cfg.Manifest.Commit(cctx, epoch, func(m *Manifest) error {
		committed = false
		if m.End() >= seg.NextOffset {
			return nil // someone committed this range already
		}
		m.Segments = append(m.Segments, seg)
		committed = true
		return nil
	})
	cancel()
	if err != nil {
		if errors.Is(err, ErrFenced) {
			a.deleteQuietly(logKey, compKey)
		}
		// Otherwise the commit may or may not have landed: the
		// objects stay; orphan cleanup removes them if it did not.
		a.cfg.Metrics.uploadError()
		return false, fmt.Errorf("tiering: committing %s at %d: %w", p, seg.BaseOffset, err)
	}
	if !committed {
		a.deleteQuietly(logKey, compKey)
	} else {
		a.fault(FaultCommitted)
		took := time.Since(start)
		a.cfg.Metrics.uploaded(seg.Size+seg.CompanionSize, took)
		// One line per sealed segment: bounded by segment.bytes and
		// segment.ms, as Kafka's segment roll lines are.
		a.cfg.Logger.Info("segment uploaded", "partition", p.String(), "base", seg.BaseOffset, "next", seg.NextOffset, "bytes", seg.Size, "took", took.Round(time.Millisecond))
	}
	if a.cfg.OnCommit != nil {
		a.cfg.OnCommit(nm)
	}
	return committed, nil
}

func (a *Archiver) fault(point string) {
	if a.cfg.Fault != nil {
		a.cfg.Fault(point)
	}
}

func (a *Archiver) put(ctx context.Context, key string, r io.Reader, size int64) error {
	ctx, cancel := context.WithTimeout(ctx, a.cfg.CallTimeout+time.Duration(size>>20)*time.Second)
	defer cancel()
	if _, err := a.cfg.Bucket.Put(ctx, key, r, size, objectstore.PutOptions{IfNoneMatch: true}); err != nil {
		a.cfg.Metrics.uploadError()
		return fmt.Errorf("tiering: uploading %s: %w", key, err)
	}
	return nil
}

// deleteQuietly removes objects of an upload that will never be committed
// (best effort: orphan cleanup catches what remains).
func (a *Archiver) deleteQuietly(keys ...string) {
	ctx, cancel := context.WithTimeout(context.Background(), a.cfg.CallTimeout)
	defer cancel()
	for _, k := range keys {
		if err := a.cfg.Bucket.Delete(ctx, k); err != nil {
			a.cfg.Logger.Warn("deleting an uncommitted upload", "key", k, "err", err)
		}
	}
}
