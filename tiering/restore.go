package tiering

import (
	"context"
	"sync"

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

// EpochHistory gives the leader-epoch history of the remote log of one
// manifest after another: each epoch with the first offset it wrote,
// ascending, from the manifest's entries and those of its spilled parts.
// It keeps the epochs of each spilled part it read, by the part's key: a
// part never changes once written (retention that trims one writes a new
// part), so after a commit only the parts it has not seen are read (none,
// unless the commit spilled one), where walking the manifest reads every
// part, hundreds for a long history. It forgets the parts the latest
// manifest no longer names. Safe for concurrent use; the zero value is
// ready.
type EpochHistory struct {
	mu    sync.Mutex
	parts map[spillKey][]localseg.EpochEntry
}

// spillKey is what names a spilled part in the bucket (Layout.SpillKey).
type spillKey struct {
	base int64
	id   [16]byte
}

// Of returns the leader epochs of m's remote log, reading through l the
// spilled parts h has not seen.
func (h *EpochHistory) Of(ctx context.Context, l SpillLoader, p Partition, m *Manifest) ([]localseg.EpochEntry, error) {
	h.mu.Lock()
	known := h.parts
	h.mu.Unlock()
	parts := make(map[spillKey][]localseg.EpochEntry, len(m.Spills))
	var out []localseg.EpochEntry
	for _, s := range m.Spills {
		k := spillKey{s.BaseOffset, s.ID}
		eps, ok := known[k]
		if !ok {
			part, err := l.LoadSpill(ctx, p, s)
			if err != nil {
				return nil, err
			}
			for _, seg := range part.Segments {
				eps = appendEpochs(eps, seg.Epochs)
			}
		}
		parts[k] = eps
		out = appendEpochs(out, eps)
	}
	for _, seg := range m.Segments {
		out = appendEpochs(out, seg.Epochs)
	}
	h.mu.Lock()
	h.parts = parts
	h.mu.Unlock()
	return out, nil
}

// appendEpochs appends to history the entries of eps that start a newer
// epoch than its last. Appending a part's history so folded gives what
// appending its segments' entries one by one would.
func appendEpochs(history, eps []localseg.EpochEntry) []localseg.EpochEntry {
	for _, e := range eps {
		if n := len(history); n == 0 || e.Epoch > history[n-1].Epoch {
			history = append(history, e)
		}
	}
	return history
}
