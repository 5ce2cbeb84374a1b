package brokertest

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// GroupFailoverTopic is the topic the group failover workload consumes:
// GroupFailoverPartitions partitions of three replicas with
// min.insync.replicas=2, in the consumer group GroupFailoverGroup.
const (
	GroupFailoverTopic      = "group-work"
	GroupFailoverPartitions = 6
	GroupFailoverGroup      = "failover-group"
	groupFailoverMembers    = 3
)

// groupLedger is what the workload's producer and group members did:
// records acknowledged and consumed, and the highest offset each
// partition's commits were acknowledged up to.
type groupLedger struct {
	mu         sync.Mutex
	acked      map[string]ackedAt // by value
	consumed   map[string]int
	committed  map[int32]int64 // acknowledged commits
	observed   map[int32]int64 // OffsetFetch answers
	violations []string
	commits    int
}

// ackedAt is where the producer was told a record landed.
type ackedAt struct {
	partition int32
	offset    int64
}

// violateLocked records a violation; past the first 20 it only fails the
// run, which the first already does. Requires l.mu.
func (l *groupLedger) violateLocked(format string, args ...any) {
	if len(l.violations) < 20 {
		l.violations = append(l.violations, fmt.Sprintf(format, args...))
	}
}

// RunGroupFailover runs a consumer group of several franz-go members over
// an acks=all producer on GroupFailoverTopic, committing after each poll,
// and calls kill with the group's coordinator once every partition has a
// committed offset. The members must find the new coordinator and go on.
// It checks that no acknowledged commit is lost or moves backwards (an
// OffsetFetch never answers less than an earlier answer or an
// acknowledged commit, and no member is handed a record below an
// acknowledged commit of its partition), and that every acknowledged
// record is consumed at least once. seeds reach the cluster; the
// brokers' __consumer_offsets must have three replicas.
func RunGroupFailover(t testing.TB, seeds []string, kill func(coordinator int32)) {
	t.Helper()
	w := startGroupWorkload(t, seeds, 120*time.Second)
	defer w.stop()
	coordinator := w.coordinator()
	before := w.consumed()
	kill(coordinator)
	t.Logf("killed the coordinator, broker %d, after %d records consumed", coordinator, before)
	WaitFor(t, 30*time.Second, "another broker coordinates the group", func() (bool, string) {
		c := groupCoordinator(t, w.ctx, w.adm)
		return c >= 0 && c != coordinator, fmt.Sprintf("coordinator %d", c)
	})
	w.goesOn(before)
	w.finish()
}

// RunGroupSoak runs RunGroupFailover's group through rounds faults, with
// its checks: fault applies one (given the round and the group's
// coordinator) and heals it before it returns, and after each the group
// must commit and consume on.
func RunGroupSoak(t testing.TB, seeds []string, rounds int, fault func(round int, coordinator int32)) {
	t.Helper()
	w := startGroupWorkload(t, seeds, 90*time.Second+time.Duration(rounds)*45*time.Second)
	defer w.stop()
	for round := range rounds {
		coordinator := w.coordinator()
		before := w.consumed()
		fault(round, coordinator)
		w.goesOn(before)
	}
	w.finish()
}

// groupWorkload is the producer, the group's members and the observer of
// committed offsets that RunGroupFailover and RunGroupSoak run.
type groupWorkload struct {
	t       testing.TB
	ctx     context.Context
	seeds   []string
	adm     *kadm.Client
	l       *groupLedger
	observe func()
	// stopProducing ends the producer, produced closes once it has.
	stopProducing, produced chan struct{}
	stop                    func()
}

// coordinator waits until FindCoordinator names the group's coordinator,
// and returns it.
func (w *groupWorkload) coordinator() int32 {
	w.t.Helper()
	c := int32(-1)
	WaitFor(w.t, 30*time.Second, "the group has a coordinator", func() (bool, string) {
		c = groupCoordinator(w.t, w.ctx, w.adm)
		return c >= 0, "FindCoordinator names none"
	})
	return c
}

// consumed is how many distinct records the members have consumed.
func (w *groupWorkload) consumed() int {
	w.l.mu.Lock()
	defer w.l.mu.Unlock()
	return len(w.l.consumed)
}

// goesOn waits until the group commits again and consumes on, past
// before records consumed.
func (w *groupWorkload) goesOn(before int) {
	w.t.Helper()
	w.l.mu.Lock()
	commits := w.l.commits
	w.l.mu.Unlock()
	WaitFor(w.t, 45*time.Second, "the group commits again and consumes on", func() (bool, string) {
		w.l.mu.Lock()
		defer w.l.mu.Unlock()
		return w.l.commits > commits+20 && len(w.l.consumed) > before+600, fmt.Sprintf("%d commits, %d consumed", w.l.commits-commits, len(w.l.consumed)-before)
	})
}

// finish stops the producer, waits until every acknowledged record is
// consumed, and reports the violations found.
func (w *groupWorkload) finish() {
	t, l := w.t, w.l
	t.Helper()
	close(w.stopProducing)
	<-w.produced
	w.stopProducing = make(chan struct{})
	var missing []string
	for deadline := time.Now().Add(45 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		l.mu.Lock()
		missing = missing[:0]
		for v := range l.acked {
			if l.consumed[v] == 0 {
				missing = append(missing, v)
			}
		}
		l.mu.Unlock()
		if len(missing) == 0 || time.Now().After(deadline) {
			break
		}
	}
	w.observe()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, v := range l.violations {
		t.Error(v)
	}
	if len(missing) > 0 {
		t.Errorf("%d of %d acknowledged records not consumed within 45s:", len(missing), len(l.acked))
		sort.Slice(missing, func(i, j int) bool {
			a, b := l.acked[missing[i]], l.acked[missing[j]]
			return a.partition < b.partition || a.partition == b.partition && a.offset < b.offset
		})
		for _, v := range missing[:min(len(missing), 10)] {
			at := l.acked[v]
			t.Errorf("  record %s, acknowledged at partition %d offset %d (commits acknowledged up to %d, read up to %d); the partition now holds %s",
				v, at.partition, at.offset, l.committed[at.partition], l.observed[at.partition], w.heldAt(at))
		}
		t.FailNow()
	}
	dups := 0
	for _, n := range l.consumed {
		if n > 1 {
			dups++
		}
	}
	t.Logf("%d records acknowledged, %d consumed (%d more than once, within the uncommitted window), %d commits acknowledged", len(l.acked), len(l.consumed), dups, l.commits)
}

// startGroupWorkload creates GroupFailoverTopic and starts the producer,
// the members and the observer, within timeout; it returns once every
// partition has a committed offset. Its stop ends them.
func startGroupWorkload(t testing.TB, seeds []string, timeout time.Duration) *groupWorkload {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	admCl, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.MetadataMinAge(10*time.Millisecond), kgo.RetryTimeout(20*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(admCl.Close)
	adm := kadm.NewClient(admCl)
	if _, err := adm.CreateTopic(ctx, GroupFailoverPartitions, 3, map[string]*string{"min.insync.replicas": kadm.StringPtr("2")}, GroupFailoverTopic); err != nil {
		t.Fatal(err)
	}
	l := &groupLedger{acked: map[string]ackedAt{}, consumed: map[string]int{}, committed: map[int32]int64{}, observed: map[int32]int64{}}

	// The producer: one record per partition in each request.
	prod, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.DefaultProduceTopic(GroupFailoverTopic),
		kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(0), kgo.ProduceRequestTimeout(3*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(prod.Close)
	stopProducing := make(chan struct{})
	produced := make(chan struct{})
	go func() {
		defer close(produced)
		for i := 0; ; i += GroupFailoverPartitions {
			select {
			case <-stopProducing:
				return
			default:
			}
			recs := make([]*kgo.Record, GroupFailoverPartitions)
			for p := range recs {
				recs[p] = &kgo.Record{Partition: int32(p), Value: []byte(strconv.Itoa(i + p))}
			}
			pctx, pcancel := context.WithTimeout(ctx, 30*time.Second)
			res := prod.ProduceSync(pctx, recs...)
			pcancel()
			l.mu.Lock()
			for _, r := range res {
				if r.Err == nil {
					l.acked[string(r.Record.Value)] = ackedAt{r.Record.Partition, r.Record.Offset}
				}
			}
			l.mu.Unlock()
			time.Sleep(5 * time.Millisecond)
		}
	}()

	// The members: poll, record, commit, and only then let a rebalance
	// take partitions away.
	stopConsuming := make(chan struct{})
	var members sync.WaitGroup
	for m := 0; m < groupFailoverMembers; m++ {
		cl, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.ConsumerGroup(GroupFailoverGroup), kgo.ConsumeTopics(GroupFailoverTopic),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.DisableAutoCommit(), kgo.BlockRebalanceOnPoll(),
			kgo.FetchMaxWait(200*time.Millisecond), kgo.SessionTimeout(20*time.Second), kgo.RetryTimeout(30*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cl.Close)
		members.Add(1)
		go func() {
			defer members.Done()
			for {
				select {
				case <-stopConsuming:
					return
				default:
				}
				pctx, pcancel := context.WithTimeout(ctx, 500*time.Millisecond)
				fs := cl.PollFetches(pctx)
				pcancel()
				var recs []*kgo.Record
				l.mu.Lock()
				fs.EachRecord(func(r *kgo.Record) {
					if c := l.committed[r.Partition]; r.Offset < c {
						l.violateLocked("partition %d: record at offset %d handed out again after a commit up to %d was acknowledged", r.Partition, r.Offset, c)
					}
					l.consumed[string(r.Value)]++
					recs = append(recs, r)
				})
				l.mu.Unlock()
				if len(recs) > 0 {
					cctx, ccancel := context.WithTimeout(ctx, 30*time.Second)
					err := cl.CommitRecords(cctx, recs...)
					ccancel()
					if err == nil {
						l.mu.Lock()
						l.commits++
						for _, r := range recs {
							if r.Offset+1 > l.committed[r.Partition] {
								l.committed[r.Partition] = r.Offset + 1
							}
						}
						l.mu.Unlock()
					}
				}
				cl.AllowRebalance()
			}
		}()
	}

	// The observer: committed offsets never move backwards.
	stopObserving := make(chan struct{})
	observed := make(chan struct{})
	observe := func() {
		octx, ocancel := context.WithTimeout(ctx, 5*time.Second)
		defer ocancel()
		l.mu.Lock()
		acknowledged := make(map[int32]int64, len(l.committed))
		for p, o := range l.committed {
			acknowledged[p] = o
		}
		l.mu.Unlock()
		offs, err := adm.FetchOffsets(octx, GroupFailoverGroup)
		if err != nil || offs.Error() != nil {
			return // the coordinator is moving
		}
		l.mu.Lock()
		defer l.mu.Unlock()
		offs.Each(func(o kadm.OffsetResponse) {
			if o.Topic != GroupFailoverTopic || o.At < 0 {
				return
			}
			if prev := l.observed[o.Partition]; o.At < prev {
				l.violateLocked("partition %d: committed offset %d read after %d", o.Partition, o.At, prev)
			}
			if a := acknowledged[o.Partition]; o.At < a {
				l.violateLocked("partition %d: committed offset %d read after a commit up to %d was acknowledged", o.Partition, o.At, a)
			}
			l.observed[o.Partition] = max(l.observed[o.Partition], o.At)
		})
	}
	go func() {
		defer close(observed)
		for {
			select {
			case <-stopObserving:
				return
			case <-time.After(100 * time.Millisecond):
				observe()
			}
		}
	}()
	w := &groupWorkload{t: t, ctx: ctx, seeds: seeds, adm: adm, l: l, observe: observe, stopProducing: stopProducing, produced: produced}
	var once sync.Once
	w.stop = func() {
		once.Do(func() {
			close(w.stopProducing)
			close(stopConsuming)
			close(stopObserving)
			<-produced
			members.Wait()
			<-observed
			cancel()
		})
	}
	t.Cleanup(w.stop)

	WaitFor(t, 60*time.Second, "every partition has a committed offset", func() (bool, string) {
		l.mu.Lock()
		defer l.mu.Unlock()
		return len(l.committed) == GroupFailoverPartitions && len(l.consumed) > 300, fmt.Sprintf("committed %v, %d consumed", l.committed, len(l.consumed))
	})
	if td, err := adm.ListTopics(ctx, "__consumer_offsets"); err != nil || td["__consumer_offsets"].Err != nil {
		t.Fatalf("__consumer_offsets: %v %v", err, td["__consumer_offsets"].Err)
	} else {
		for _, p := range td["__consumer_offsets"].Partitions {
			if len(p.Replicas) != 3 {
				t.Fatalf("__consumer_offsets partition %d has replicas %v, want three", p.Partition, p.Replicas)
			}
		}
	}
	return w
}

// heldAt says what the partition holds at a record's acknowledged offset
// now, read with a client of its own: a record lost, or another in its
// place (a log that diverged under a commit), or the record itself (a
// group that skipped it).
func (w *groupWorkload) heldAt(at ackedAt) string {
	cl, err := kgo.NewClient(kgo.SeedBrokers(w.seeds...), kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{
		GroupFailoverTopic: {at.partition: kgo.NewOffset().At(at.offset)},
	}), kgo.FetchMaxWait(200*time.Millisecond))
	if err != nil {
		return err.Error()
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	fs := cl.PollRecords(ctx, 1)
	if errs := fs.Errors(); len(errs) > 0 {
		return fmt.Sprintf("nothing readable (%v)", errs[0].Err)
	}
	var held string
	fs.EachRecord(func(r *kgo.Record) {
		if held == "" {
			held = fmt.Sprintf("record %s at offset %d", r.Value, r.Offset)
		}
	})
	if held == "" {
		return "nothing within 5s"
	}
	return held
}

// groupCoordinator is the group's coordinator as FindCoordinator answers,
// or -1.
func groupCoordinator(t testing.TB, ctx context.Context, adm *kadm.Client) int32 {
	t.Helper()
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	for _, r := range adm.FindGroupCoordinators(cctx, GroupFailoverGroup) {
		if r.Err == nil {
			return r.NodeID
		}
	}
	return -1
}
