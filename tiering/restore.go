package tiering

import (
	"context"

	"github.com/shale-log/shale/localseg"
)

// RestorePoint is what a replica needs to start its local log where the
// remote log ends instead of copying the history the bucket holds
// (KIP-405's follower path): the offset, the leader epochs in force there
// and the producer state as of it, from the last remote segment's manifest
// entry and companion.
type RestorePoint struct {
	Offset           int64
	Epochs           []localseg.EpochEntry
	ProducerSnapshot []byte // localseg's snapshot format; empty: none
}

// RestorePoint reads the restore point at the end of m's remote log; ok is
// false when m holds no segment.
func (r *Reader) RestorePoint(ctx context.Context, p Partition, m *Manifest) (RestorePoint, bool, error) {
	var last Segment
	switch {
	case len(m.Segments) > 0:
		last = m.Segments[len(m.Segments)-1]
	case len(m.Spills) > 0:
		part, err := r.LoadSpill(ctx, p, m.Spills[len(m.Spills)-1])
		if err != nil {
			return RestorePoint{}, false, err
		}
		last = part.Segments[len(part.Segments)-1]
	default:
		return RestorePoint{}, false, nil
	}
	comp, err := r.companion(ctx, p, last)
	if err != nil {
		return RestorePoint{}, false, err
	}
	eps := last.Epochs
	if len(eps) == 0 {
		eps = comp.Epochs
	}
	return RestorePoint{Offset: last.NextOffset, Epochs: append([]localseg.EpochEntry(nil), eps...), ProducerSnapshot: comp.ProducerSnapshot}, true, nil
}

// RemoteEpochs is the leader-epoch history of the remote log from the
// manifest entries (spilled parts read through l): each epoch with the
// first offset it wrote, ascending.
func RemoteEpochs(ctx context.Context, l SpillLoader, p Partition, m *Manifest) ([]localseg.EpochEntry, error) {
	var out []localseg.EpochEntry
	err := WalkSegments(ctx, l, p, m, 0, nil, func(s Segment) bool {
		for _, e := range s.Epochs {
			if n := len(out); n == 0 || e.Epoch > out[n-1].Epoch {
				out = append(out, e)
			}
		}
		return true
	})
	return out, err
}
