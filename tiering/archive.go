package tiering

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"slices"

	"github.com/shale-log/shale/localseg"
	"github.com/shale-log/shale/localseg/recordbatch"
	"github.com/shale-log/shale/objectstore"
)

// LoadManifest reads a partition's manifest from the bucket alone (an
// empty manifest when the partition has none).
func LoadManifest(ctx context.Context, b objectstore.Bucket, l Layout, p Partition) (*Manifest, error) {
	return NewManifestStore(b, l.ManifestKey(p), nil).Load(ctx)
}

// ReadBatches calls fn with every record batch of partition p from the
// batch holding offset from to the manifest's end, in order, reading the
// bucket alone through r. It is how a partition's history is read without
// a broker or etcd; fn must not keep the batch after it returns.
func ReadBatches(ctx context.Context, r *Reader, p Partition, m *Manifest, from int64, fn func(recordbatch.Batch) error) error {
	off := max(from, m.Start())
	for off < m.End() {
		parts, err := r.Read(ctx, p, m, off, 4<<20, m.End(), true)
		if err != nil {
			return err
		}
		if parts == nil {
			return nil
		}
		next := off
		for buf := bytes.Join(parts, nil); len(buf) > 0; {
			b, rest, err := recordbatch.Next(buf)
			if err != nil {
				break // a partial last batch: read again from it
			}
			if err := recordbatch.Check(b); err != nil {
				return fmt.Errorf("tiering: %s at %d: %w", p, b.BaseOffset(), err)
			}
			buf = rest
			if b.LastOffset() < off {
				continue
			}
			if err := fn(b); err != nil {
				return err
			}
			next = b.NextOffset()
		}
		if next <= off {
			return fmt.Errorf("%w: %s: no whole batch at %d", ErrCorrupt, p, off)
		}
		off = next
	}
	return nil
}

// ReadCommittedBatches is ReadBatches as a read_committed consumer reads:
// it leaves out transaction markers (control batches) and the batches of
// aborted transactions, which it learns from the segments' companions
// (their aborted transactions, section 5 of the format). As the consumer
// does, it takes a producer's transactional batches for aborted from the
// first offset of one of its aborted transactions until its next marker.
func ReadCommittedBatches(ctx context.Context, r *Reader, p Partition, m *Manifest, from int64, fn func(recordbatch.Batch) error) error {
	from = max(from, m.Start())
	aborted, err := r.AbortedTxns(ctx, p, m, from, m.End())
	if err != nil {
		return err
	}
	slices.SortFunc(aborted, func(a, b localseg.AbortedTxn) int { return cmp.Compare(a.FirstOffset, b.FirstOffset) })
	next := 0
	aborting := map[int64]bool{} // producers whose batches are aborted until their marker
	return ReadBatches(ctx, r, p, m, from, func(b recordbatch.Batch) error {
		for next < len(aborted) && aborted[next].FirstOffset <= b.LastOffset() {
			aborting[aborted[next].ProducerID] = true
			next++
		}
		switch {
		case b.Control():
			// The producer's marker ends what it aborted (a COMMIT
			// marker ends no aborted transaction: none was open).
			delete(aborting, b.ProducerID())
			return nil
		case b.Transactional() && aborting[b.ProducerID()]:
			return nil
		}
		return fn(b)
	})
}
