package broker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/localseg"
	"github.com/shale-log/shale/localseg/recordbatch"
)

// repairRetryInterval is how often ranges that no source could give back
// are tried again.
const repairRetryInterval = 5 * time.Minute

// repairer puts back the lost ranges of sealed segments (damage the
// scrubber or a read found) from a good copy: the bucket when the tiering
// manifest covers the range, else another in-sync replica, read as a
// consumer reads (Fetch v12 with replica id -1, which a follower serves up
// to its high watermark, KIP-392). The log checks that the copy fits the
// range exactly before writing it. A range no source has stays recorded
// as lost, is logged, and is tried again every repairRetryInterval.
type repairer struct {
	b    *Broker
	wake chan struct{}

	mu struct {
		sync.Mutex
		// due are the partitions with lost ranges to try now; failed
		// those to try at the next retry.
		due, failed map[*partition]bool
		// failures says, per partition, when a repair last left a
		// range lost and what each source answered; a partition whose
		// ranges are all repaired leaves it.
		failures map[*partition]repairFailure
	}
}

// repairFailure is the last failed repair of a partition's lost range.
type repairFailure struct {
	at    time.Time
	tried string
}

// lastFailure reports p's last failed repair (zero: none).
func (r *repairer) lastFailure(p *partition) (time.Time, string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f := r.mu.failures[p]
	return f.at, f.tried
}

func newRepairer(b *Broker) *repairer {
	r := &repairer{b: b, wake: make(chan struct{}, 1)}
	r.mu.due, r.mu.failed = map[*partition]bool{}, map[*partition]bool{}
	r.mu.failures = map[*partition]repairFailure{}
	return r
}

// damaged is OnDamage's: the log has recorded the damage; p's lost ranges
// are tried soon. It only takes note.
func (r *repairer) damaged(p *partition) {
	r.mu.Lock()
	r.mu.due[p] = true
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// run repairs until the broker stops. Ranges recorded before a restart
// are tried at the start.
func (r *repairer) run(ctx context.Context) {
	for _, p := range r.b.replicas.all() {
		if lost, err := p.log.LostRanges(); err == nil && len(lost) > 0 {
			r.damaged(p)
		}
	}
	t := time.NewTicker(repairRetryInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.wake:
		case <-t.C:
			r.mu.Lock()
			for p := range r.mu.failed {
				r.mu.due[p] = true
			}
			clear(r.mu.failed)
			r.mu.Unlock()
		}
		for {
			r.mu.Lock()
			var p *partition
			for q := range r.mu.due {
				p = q
				break
			}
			delete(r.mu.due, p)
			r.mu.Unlock()
			if p == nil || ctx.Err() != nil {
				break
			}
			ok := r.repairPartition(ctx, p)
			r.mu.Lock()
			if ok {
				delete(r.mu.failures, p)
			} else {
				r.mu.failed[p] = true
			}
			r.mu.Unlock()
		}
	}
}

// repairPartition tries every lost range of p; false if one is left.
func (r *repairer) repairPartition(ctx context.Context, p *partition) bool {
	if p.state.Load().closed {
		return true // no longer hosted here
	}
	lost, err := p.log.LostRanges()
	if err != nil {
		r.b.log.Error("reading the lost ranges of a partition", "topic", p.topic, "partition", p.index, "err", err)
		return false
	}
	ok := true
	for _, lr := range lost {
		if ctx.Err() != nil {
			return false
		}
		if !r.repairRange(ctx, p, lr) {
			ok = false
		}
	}
	return ok
}

// repairRange puts one lost range back from the first source whose copy
// fits it.
func (r *repairer) repairRange(ctx context.Context, p *partition, lr localseg.LostRange) bool {
	var tried []string
	attrs := []any{"topic", p.topic, "partition", p.index, "from", lr.From, "to", lr.To, "segment_base", lr.SegmentBase}
	try := func(source string, fetch func(context.Context) ([]byte, error)) bool {
		fctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		data, err := fetch(fctx)
		cancel()
		if err == nil {
			err = p.log.Repair(lr, data)
		}
		if err != nil {
			tried = append(tried, fmt.Sprintf("%s: %v", source, err))
			return false
		}
		r.b.metrics.repairs.WithLabelValues("repaired").Inc()
		r.b.log.Warn("repaired a lost range of a sealed segment", append(attrs, "source", source)...)
		return true
	}
	if t := p.tier; t != nil {
		if m := t.manifest(); m != nil && m.Start() >= 0 && m.Start() <= lr.From && lr.To <= m.End() {
			if try("bucket", func(ctx context.Context) ([]byte, error) { return r.fromBucket(ctx, p, lr) }) {
				return true
			}
		}
	}
	st := p.state.Load()
	for _, id := range st.isr {
		if id == p.nodeID {
			continue
		}
		if try("replica "+strconv.Itoa(int(id)), func(ctx context.Context) ([]byte, error) { return r.fromReplica(ctx, p, id, lr) }) {
			return true
		}
	}
	r.b.metrics.repairs.WithLabelValues("failed").Inc()
	if len(tried) == 0 {
		tried = append(tried, "no other in-sync replica, and the bucket does not hold the range")
	}
	r.b.log.Error("a lost range could not be repaired: it stays recorded as lost and reads skip it; tried again later",
		append(attrs, "tried", tried)...)
	r.mu.Lock()
	r.mu.failures[p] = repairFailure{at: time.Now(), tried: fmt.Sprintf("[%d, %d): %s", lr.From, lr.To, strings.Join(tried, "; "))}
	r.mu.Unlock()
	return false
}

// fromBucket reads the batches of [lr.From, lr.To) from the remote log.
func (r *repairer) fromBucket(ctx context.Context, p *partition, lr localseg.LostRange) ([]byte, error) {
	t := p.tier
	m := t.manifest()
	var out []byte
	for off := lr.From; off < lr.To; {
		chunks, err := t.svc.reader.Read(ctx, t.part, m, off, repairMaxBytes, lr.To, true)
		if err != nil {
			return nil, err
		}
		var got []byte
		for _, c := range chunks {
			got = append(got, c...)
		}
		whole := recordbatch.WholePrefix(got)
		next := nextOffset(whole)
		if len(whole) == 0 {
			return nil, fmt.Errorf("the bucket has no batch at %d", off)
		}
		out = append(out, whole...)
		off = next
		if len(out) > repairMaxBytes {
			return nil, fmt.Errorf("more than %d bytes for the range", repairMaxBytes)
		}
	}
	return out, nil
}

// repairMaxBytes bounds what one repair reads (a lost range lies within
// one segment; a batch is at most the fetch limits).
const repairMaxBytes = 64 << 20

// fromReplica reads the batches of [lr.From, lr.To) from replica id as a
// consumer does.
func (r *repairer) fromReplica(ctx context.Context, p *partition, id int32, lr localseg.LostRange) ([]byte, error) {
	// A replica whose registration lapsed while it serves (etcd
	// restarted) is still asked.
	addr, ok := r.b.meta.snapshot().brokerAddr(id)
	if !ok {
		return nil, errors.New("never registered")
	}
	pc, err := dialPeer(ctx, r.b.cfg.DialPeer, r.b.peerTLS(), addr, r.b.cfg.NodeID, r.b.secret)
	if err != nil {
		return nil, err
	}
	defer pc.Close()
	var out []byte
	for off := lr.From; off < lr.To; {
		req := kmsg.NewPtrFetchRequest()
		req.Version = 12
		req.ReplicaID = -1
		req.MaxWaitMillis, req.MinBytes, req.MaxBytes = 0, 0, repairMaxBytes
		rt := kmsg.NewFetchRequestTopic()
		rt.Topic = p.topic
		rp := kmsg.NewFetchRequestTopicPartition()
		rp.Partition, rp.FetchOffset, rp.PartitionMaxBytes = p.index, off, repairMaxBytes
		rp.CurrentLeaderEpoch, rp.LastFetchedEpoch, rp.LogStartOffset = -1, -1, -1
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		resp, err := pc.Request(ctx, req)
		if err != nil {
			return nil, err
		}
		fr := resp.(*kmsg.FetchResponse)
		if fr.ErrorCode != 0 {
			return nil, kerr.ErrorForCode(fr.ErrorCode)
		}
		if len(fr.Topics) != 1 || len(fr.Topics[0].Partitions) != 1 {
			return nil, errors.New("malformed fetch response")
		}
		fp := fr.Topics[0].Partitions[0]
		if fp.ErrorCode != 0 {
			return nil, kerr.ErrorForCode(fp.ErrorCode)
		}
		whole := recordbatch.WholePrefix(fp.RecordBatches)
		// Keep the batches inside the range; the replica may send more.
		var kept []byte
		next := off
		for rest := whole; len(rest) > 0; {
			b, tail, _ := recordbatch.Next(rest)
			if b.BaseOffset() >= lr.To {
				break
			}
			kept = append(kept, b...)
			next = b.NextOffset()
			rest = tail
		}
		if len(kept) == 0 {
			return nil, fmt.Errorf("no batch at %d (high watermark %d)", off, fp.HighWatermark)
		}
		out = append(out, kept...)
		if len(out) > repairMaxBytes {
			return nil, fmt.Errorf("more than %d bytes for the range", repairMaxBytes)
		}
		off = next
	}
	return out, nil
}

// nextOffset is the offset after the last of whole batches (-1: none).
func nextOffset(whole []byte) int64 {
	next := int64(-1)
	for rest := whole; len(rest) > 0; {
		b, tail, err := recordbatch.Next(rest)
		if err != nil || b == nil {
			break
		}
		next, rest = b.NextOffset(), tail
	}
	return next
}
