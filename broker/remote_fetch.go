package broker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/shale-log/shale/localseg"
	"github.com/shale-log/shale/tiering"
)

// remoteFetch is one remote read serving the fetches of a partition at
// one offset. A fetch waits for it at most RemoteFetchMaxWait, as Kafka
// bounds a remote fetch by remote.fetch.max.wait.ms (KIP-1018), and is
// answered without that partition's records when it has not ended. The
// read goes on until FetchTimeout, wakes the partition's waiting fetches
// when it ends, and the next fetch at its offset takes its result. A store
// that hangs then holds a fetch no longer than the wait, and holds none
// of the fetch's other partitions (it held all of them until the read's
// timeout); a slow one still serves each read, at its own pace, where a
// read given up at the wait would have been started again and again.
type remoteFetch struct {
	offset      int64
	maxBytes    int
	maxOffset   int64
	minOneBatch bool
	// done is closed when data and err are set.
	done chan struct{}
	data tiering.Data
	err  error
	// taken: data went to a fetch or was released (guarded by the
	// tier's reads mutex).
	taken bool
}

const (
	// remoteFetchKeep is how long an ended read's data waits for the
	// fetch that gave up on it to come back (a consumer asks again at
	// once) before it is released.
	remoteFetchKeep = 5 * time.Second
	// maxRemoteFetches bounds the reads a partition keeps for later
	// fetches; a read past it serves only the fetch that started it.
	maxRemoteFetches = 16
)

// errRemotePending: the remote read serving a fetch has not ended within
// the fetch's wait; the fetch is answered without the partition's records.
var errRemotePending = errors.New("broker: a remote read outlasted the fetch's wait")

// wait waits for the read to end, until the time given, and reports
// whether it has.
func (rf *remoteFetch) wait(until time.Time) bool {
	select {
	case <-rf.done:
		return true
	default:
	}
	d := time.Until(until)
	if d <= 0 {
		return false
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-rf.done:
		return true
	case <-tm.C:
		return false
	}
}

// errManifestBehind: a read below the local log of a follower whose copy
// of the manifest ends at or below the offset (serving consumers, KIP-392,
// with a copy that predates the leader's last uploads). The offset is not
// out of range, which sent a consumer to its reset offset (the log start,
// for a replay): NOT_LEADER_OR_FOLLOWER sends it to the leader. (A leader
// that has not read its manifest answers errTierLoading before it reads
// below its local log, and one that has holds the partition's manifest.)
var errManifestBehind = fmt.Errorf("%w: this broker's copy of the remote manifest ends below the offset", errNotLeader)

// remoteRead serves a fetch of p below its local log start from the
// object store, waiting for the read until the time given:
// errRemotePending when it has not ended by then. The caller releases the
// data. errManifestBehind when the manifest this broker has ends at or
// below offset, unless it leads with its manifest read; empty data and no
// error when the remote log does not hold offset (the local one does, or
// neither).
func (t *partitionTier) remoteRead(p *partition, offset int64, maxBytes int, maxOffset int64, minOneBatch bool, until time.Time) (tiering.Data, error) {
	if offset >= t.manifest().End() && !(p.isLeader() && t.ready.Load()) {
		return tiering.Data{}, errManifestBehind
	}
	for {
		rf := t.remoteFetchAt(p, offset, maxBytes, maxOffset, minOneBatch)
		if !rf.wait(until) {
			return tiering.Data{}, errRemotePending
		}
		if data, err, ok := t.take(rf, maxBytes, maxOffset, minOneBatch); ok {
			return data, err
		}
		// Its data went to another fetch, or reaches past this one's
		// bounds: the chunks it read are in the reader's cache, and a
		// new read takes them from there.
	}
}

// remoteFetchAt returns the read at offset that a fetch gave up on, or
// starts one.
func (t *partitionTier) remoteFetchAt(p *partition, offset int64, maxBytes int, maxOffset int64, minOneBatch bool) *remoteFetch {
	t.reads.Lock()
	defer t.reads.Unlock()
	if rf := t.reads.at[offset]; rf != nil {
		return rf
	}
	rf := &remoteFetch{offset: offset, maxBytes: maxBytes, maxOffset: maxOffset, minOneBatch: minOneBatch, done: make(chan struct{})}
	if len(t.reads.at) < maxRemoteFetches {
		t.reads.at[offset] = rf
	}
	// Fetches run only while the broker's connections are open, and the
	// tier service's close waits on the group only once they have all
	// ended: no Add races its Wait.
	t.svc.wg.Add(1)
	go func() {
		defer t.svc.wg.Done()
		rf.data, rf.err = t.readRemote(offset, maxBytes, maxOffset, minOneBatch)
		close(rf.done)
		// A fetch that gave up on the read and waits for records
		// (a long poll) reads again now.
		p.wakeReaders()
		if t.svc.b.ctx.Err() != nil {
			t.forget(rf)
			return
		}
		time.AfterFunc(remoteFetchKeep, func() { t.forget(rf) })
	}()
	return rf
}

// take returns rf's result for a fetch at rf.offset with the bounds
// given, and forgets rf; ok is false when its data went to another fetch
// or reaches past those bounds (and is released).
func (t *partitionTier) take(rf *remoteFetch, maxBytes int, maxOffset int64, minOneBatch bool) (data tiering.Data, err error, ok bool) {
	t.reads.Lock()
	defer t.reads.Unlock()
	if t.reads.at[rf.offset] == rf {
		delete(t.reads.at, rf.offset)
	}
	if rf.err != nil {
		// Every fetch that waited for it learns of the failure; the
		// next one starts another read.
		return tiering.Data{}, rf.err, true
	}
	if rf.taken {
		return tiering.Data{}, nil, false
	}
	rf.taken = true
	// Records read within tighter bounds are an answer within these: a
	// batch ending below the lower high watermark ends below this one.
	fits := rf.data.Len() <= int64(maxBytes) || (minOneBatch && rf.minOneBatch)
	if rf.maxOffset <= maxOffset && fits {
		return rf.data, nil, true
	}
	rf.data.Release()
	return tiering.Data{}, nil, false
}

// forget releases rf's data if no fetch took it, and drops rf from the
// reads kept.
func (t *partitionTier) forget(rf *remoteFetch) {
	t.reads.Lock()
	defer t.reads.Unlock()
	if t.reads.at[rf.offset] == rf {
		delete(t.reads.at, rf.offset)
	}
	if !rf.taken {
		rf.taken = true
		rf.data.Release()
	}
}

// readRemote reads from the object store for remoteRead, within
// FetchTimeout.
func (t *partitionTier) readRemote(offset int64, maxBytes int, maxOffset int64, minOneBatch bool) (tiering.Data, error) {
	ctx, cancel := context.WithTimeout(t.svc.b.ctx, t.svc.cfg.FetchTimeout)
	defer cancel()
	data, err := t.svc.reader.ReadShared(ctx, t.part, t.manifest(), offset, maxBytes, maxOffset, minOneBatch)
	if errors.Is(err, tiering.ErrOutOfRange) {
		return tiering.Data{}, fmt.Errorf("%w: %w", localseg.ErrOffsetOutOfRange, err)
	}
	if err != nil && t.svc.b.ctx.Err() == nil {
		// The consumer only sees KAFKA_STORAGE_ERROR: the cause goes to
		// the log, once in a while per partition.
		now := time.Now().UnixNano()
		if last := t.readWarned.Load(); now-last >= int64(remoteReadWarnEvery) && t.readWarned.CompareAndSwap(last, now) {
			t.svc.b.log.Warn("remote read failed; the fetch gets a retriable KAFKA_STORAGE_ERROR", "topic", t.part.Topic, "partition", t.part.Index, "offset", offset, "err", err)
		}
	}
	return data, err
}

// remoteAbortedTxns returns the aborted transactions a read_committed
// fetch of p's records [from, to), read from the object store, tells its
// consumer of: those with their marker at or above from and their first
// offset below to, from the remote segments' companions (through the
// reader's cache) and from the local log, without duplicates (a segment
// both in the bucket and on disk), ascending by marker offset. to is the
// end of the records the fetch returns (the offset after its last batch),
// as Kafka bounds the search: with the fetch's last stable offset instead
// the search reads the companion of every remote segment above from. It
// waits for the store at most FetchTimeout; ctx may end it sooner.
func (t *partitionTier) remoteAbortedTxns(ctx context.Context, p *partition, from, to int64) ([]localseg.AbortedTxn, error) {
	if to <= from {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(ctx, t.svc.cfg.FetchTimeout)
	defer cancel()
	remote, err := t.svc.reader.AbortedTxns(ctx, t.part, t.manifest(), from, to)
	if err != nil {
		return nil, fmt.Errorf("broker: aborted transactions of %s in [%d, %d): %w", t.part, from, to, err)
	}
	// A transaction can start in the bucket and end on disk: the local
	// log has the markers above the manifest's end.
	local := p.log.AbortedTxns(max(from, p.log.LocalLogStartOffset()), to)
	if len(local) == 0 {
		return remote, nil
	}
	type txnKey struct{ producerID, firstOffset int64 }
	seen := make(map[txnKey]struct{}, len(remote)+len(local))
	out := make([]localseg.AbortedTxn, 0, len(remote)+len(local))
	for _, txns := range [][]localseg.AbortedTxn{remote, local} {
		for _, e := range txns {
			k := txnKey{e.ProducerID, e.FirstOffset}
			if _, dup := seen[k]; dup {
				continue
			}
			seen[k] = struct{}{}
			out = append(out, e)
		}
	}
	slices.SortStableFunc(out, func(a, b localseg.AbortedTxn) int { return cmp.Compare(a.LastOffset, b.LastOffset) })
	return out, nil
}
