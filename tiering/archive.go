package tiering

import (
	"bytes"
	"context"
	"fmt"

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
