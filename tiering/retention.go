package tiering

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/shale-log/shale/objectstore"
)

// RetentionPolicy is a topic's total retention (local plus remote), with
// Kafka's meaning: -1 keeps forever / without a size limit.
type RetentionPolicy struct {
	RetentionMs    int64
	RetentionBytes int64
}

// PlanRetention decides which remote segments have expired: those older
// than retention.ms (by their largest timestamp), those that push the
// partition's total size (remote plus localBytes, the local data not in
// the manifest) past retention.bytes (oldest first), and those wholly
// below the log start (DeleteRecords). It returns how many leading
// segments go and the new log start offset. Pure: the caller commits the
// manifest, then deletes the objects.
func PlanRetention(m *Manifest, p RetentionPolicy, nowMs, localBytes int64) (n int, logStart int64) {
	logStart = m.LogStartOffset
	total := m.Bytes() + localBytes
	for _, s := range m.Segments {
		below := s.NextOffset <= m.LogStartOffset
		expired := p.RetentionMs >= 0 && s.MaxTimestamp >= 0 && nowMs-s.MaxTimestamp > p.RetentionMs
		oversize := p.RetentionBytes >= 0 && total-s.Size >= p.RetentionBytes
		if !below && !expired && !oversize {
			break
		}
		total -= s.Size
		n++
		logStart = max(logStart, s.NextOffset)
	}
	return n, logStart
}

// ApplyRetention runs remote retention for one partition as leader of
// epoch: it commits the manifest without the expired segments (and with
// the new log start) and then deletes their objects. A crash between the
// two leaves orphans, which PlanOrphans finds. It returns the committed
// manifest (nil when nothing expired).
func ApplyRetention(ctx context.Context, b objectstore.Bucket, l Layout, p Partition, ms *ManifestStore, epoch int32, pol RetentionPolicy, now time.Time, localBytes int64, metrics *Metrics) (*Manifest, error) {
	var doomed []Segment
	m, err := ms.Commit(ctx, epoch, func(m *Manifest) error {
		n, start := PlanRetention(m, pol, now.UnixMilli(), localBytes)
		if n == 0 {
			return errNothingToDo
		}
		doomed = append(doomed[:0], m.Segments[:n]...)
		m.Segments = append([]Segment(nil), m.Segments[n:]...)
		m.LogStartOffset = start
		return nil
	})
	if errors.Is(err, errNothingToDo) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	deleted := 0
	for _, s := range doomed {
		for _, k := range []string{l.SegmentKey(p, s.BaseOffset, s.ID), l.CompanionKey(p, s.BaseOffset, s.ID)} {
			if err := b.Delete(ctx, k); err != nil {
				metrics.deleted(deleted)
				return m, fmt.Errorf("tiering: deleting %s (left for orphan cleanup): %w", k, err)
			}
			deleted++
		}
	}
	metrics.deleted(deleted)
	return m, nil
}

var errNothingToDo = errors.New("tiering: nothing to do")

// PlanOrphans returns the keys under a partition's prefix that are
// segment, companion or spill objects the manifest does not name and that
// were last modified before now-grace (an upload in progress is younger).
// Pure: listing is the partition prefix's listing.
func PlanOrphans(m *Manifest, listing []objectstore.Attrs, now time.Time, grace time.Duration) []string {
	live := map[[16]byte]bool{}
	for _, s := range m.Segments {
		live[s.ID] = true
	}
	for _, s := range m.Spills {
		live[s.ID] = true
	}
	var out []string
	for _, a := range listing {
		id, ok := parseObjectID(a.Key)
		if !ok || live[id] || !a.LastModified.Before(now.Add(-grace)) {
			continue
		}
		out = append(out, a.Key)
	}
	return out
}

// CleanOrphans deletes a partition's orphaned objects (see PlanOrphans).
// Only the partition's leader runs it, after loading the manifest.
func CleanOrphans(ctx context.Context, b objectstore.Bucket, l Layout, p Partition, m *Manifest, now time.Time, grace time.Duration, metrics *Metrics) (int, error) {
	var listing []objectstore.Attrs
	if err := b.List(ctx, l.PartitionPrefix(p), func(a objectstore.Attrs) error {
		listing = append(listing, a)
		return nil
	}); err != nil {
		return 0, err
	}
	n := 0
	defer func() { metrics.deleted(n) }()
	for _, k := range PlanOrphans(m, listing, now, grace) {
		if err := b.Delete(ctx, k); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// DeleteTopic removes a deleted topic's objects: it writes the deletion
// marker first (so a reader of the bucket knows), deletes every object
// under the topic, and the marker last. Resumable: run it again after a
// crash (PendingDeletions finds the marked topics).
func DeleteTopic(ctx context.Context, b objectstore.Bucket, l Layout, topic string, id [16]byte, now time.Time, metrics *Metrics) error {
	marker := l.DeletedKey(topic, id)
	if err := putJSON(ctx, b, marker, DeletionMarker{Name: topic, ID: TopicDir(topic, id)[len(topic)+1:], DeletedAt: now.UTC()}, objectstore.PutOptions{}); err != nil {
		return fmt.Errorf("tiering: marking %s deleted: %w", topic, err)
	}
	var keys []string
	if err := b.List(ctx, l.TopicPrefix(topic, id), func(a objectstore.Attrs) error {
		if a.Key != marker {
			keys = append(keys, a.Key)
		}
		return nil
	}); err != nil {
		return err
	}
	for _, k := range keys {
		if err := b.Delete(ctx, k); err != nil {
			metrics.deleted(0)
			return fmt.Errorf("tiering: deleting %s: %w", k, err)
		}
	}
	metrics.deleted(len(keys))
	return b.Delete(ctx, marker)
}

// PendingDeletions lists the topics whose deletion marker is in the
// bucket (a deletion that has not finished).
func PendingDeletions(ctx context.Context, b objectstore.Bucket, l Layout) ([]DeletionMarker, error) {
	prefix := strings.TrimSuffix(l.join("x"), "x")
	var out []DeletionMarker
	err := b.List(ctx, prefix, func(a objectstore.Attrs) error {
		if _, name, ok := cutOnce(a.Key[len(prefix):]); !ok || name != deletedName {
			return nil
		}
		data, err := objectstore.ReadAll(ctx, b, a.Key, maxDescriptorSize)
		if err != nil {
			return err
		}
		d, err := DecodeDeletionMarker(data)
		if err != nil {
			return fmt.Errorf("%s: %w", a.Key, err)
		}
		out = append(out, *d)
		return nil
	})
	return out, err
}
