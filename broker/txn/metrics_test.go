package txn

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/twmb/franz-go/pkg/kerr"
)

// registry registers the env's current coordinator's metrics.
func (e *env) registry() *prometheus.Registry {
	e.t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(e.c.Collector())
	return reg
}

// expectIDs checks shale_transactional_ids; states not named must be 0.
func expectIDs(t *testing.T, reg *prometheus.Registry, want map[string]int) {
	t.Helper()
	var b strings.Builder
	b.WriteString(withHelp(t, reg, "shale_transactional_ids"))
	b.WriteString("# TYPE shale_transactional_ids gauge\n")
	for st := stateEmpty; st <= stateCompleteAbort; st++ {
		fmt.Fprintf(&b, "shale_transactional_ids{state=%q} %d\n", st.String(), want[st.String()])
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(b.String()), "shale_transactional_ids"); err != nil {
		t.Fatal(err)
	}
}

// withHelp returns the HELP line a metric is gathered with, so that the
// comparisons check values, not wording.
func withHelp(t *testing.T, reg *prometheus.Registry, name string) string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return fmt.Sprintf("# HELP %s %s\n", name, mf.GetHelp())
		}
	}
	t.Fatalf("no metric %s", name)
	return ""
}

// histogram returns an unlabelled histogram as gathered.
func histogram(t *testing.T, reg *prometheus.Registry, name string) *dto.Histogram {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetHistogram()
		}
	}
	t.Fatalf("no histogram %s", name)
	return nil
}

func TestMetricsCountCommitAbortAndTimeout(t *testing.T) {
	e := newEnv(t)
	reg := e.registry()
	expectIDs(t, reg, nil)

	// A commit over two partitions.
	p1, ep1 := e.init("t1")
	if c := e.add("t1", p1, ep1, map[string][]int32{"a": {0, 1}}); c != 0 {
		t.Fatal(c)
	}
	p3, ep3 := e.init("t3")
	expectIDs(t, reg, map[string]int{"Ongoing": 1, "Empty": 1})
	if c := e.end(3, "t1", p1, ep1, true); c != 0 {
		t.Fatal(c)
	}
	e.idle()

	// An abort whose marker fails once: retried after 100ms.
	p2, ep2 := e.init("t2")
	if c := e.add("t2", p2, ep2, map[string][]int32{"b": {1}}); c != 0 {
		t.Fatal(c)
	}
	e.markers.failWith(TopicPartition{"b", 1}, kerr.NotLeaderForPartition.Code)
	if c := e.end(3, "t2", p2, ep2, false); c != 0 {
		t.Fatal(c)
	}
	e.waitCalls(2)
	e.waitRetryTimer()
	expectIDs(t, reg, map[string]int{"CompleteCommit": 1, "PrepareAbort": 1, "Empty": 1})
	e.clock.Advance(100 * time.Millisecond)
	e.idle()

	// A transaction past its timeout (60s) is aborted by the coordinator.
	if c := e.add("t3", p3, ep3, map[string][]int32{"a": {2}}); c != 0 {
		t.Fatal(c)
	}
	e.advance(70 * time.Second)
	e.idle()

	const want = `
# HELP shale_transactions_total Transactions this broker's coordinator ended, by result once the decision was written: commit or abort (EndTxn), timeout (aborted by the coordinator: past transaction.timeout.ms, or its producer replaced by InitProducerId).
# TYPE shale_transactions_total counter
shale_transactions_total{result="abort"} 1
shale_transactions_total{result="commit"} 1
shale_transactions_total{result="timeout"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "shale_transactions_total"); err != nil {
		t.Fatal(err)
	}
	m := e.c.metrics
	if n := testutil.ToFloat64(m.markersWritten); n != 4 {
		t.Errorf("markers written %v, want 4 (2 commit, 1 abort, 1 timeout)", n)
	}
	if n := testutil.ToFloat64(m.markerRetries); n != 1 {
		t.Errorf("marker retries %v, want 1", n)
	}
	if n := testutil.CollectAndCount(m.completionSeconds); n != 1 {
		t.Fatalf("completion histogram series %d", n)
	}
	h := histogram(t, reg, "shale_transaction_completion_seconds")
	// The abort waited its 100ms backoff; the timed-out transaction was
	// aborted at one of the scans (60s < age <= 70s) and waited no more
	// than the rest of the advance; the commit none.
	if h.GetSampleCount() != 3 || h.GetSampleSum() < 0.1 || h.GetSampleSum() > 10.1 {
		t.Fatalf("completion histogram: count %d sum %v", h.GetSampleCount(), h.GetSampleSum())
	}
	expectIDs(t, reg, map[string]int{"CompleteCommit": 1, "CompleteAbort": 2})

	// A producer replaced during its transaction counts as a timeout.
	p1, ep1 = e.init("t1")
	if c := e.add("t1", p1, ep1, map[string][]int32{"a": {0}}); c != 0 {
		t.Fatal(c)
	}
	if r := e.initReq(4, "t1", 60_000, -1, -1); r.ErrorCode != codeConcurrentTransactions {
		t.Fatalf("init over an ongoing transaction: %+v", r)
	}
	e.idle()
	if n := testutil.ToFloat64(m.timeouts); n != 2 {
		t.Fatalf("timeouts %v after a fencing InitProducerId, want 2", n)
	}

	// A reloaded partition counts its ids afresh; a new coordinator's
	// counters start at 0.
	e.start()
	reg = e.registry()
	expectIDs(t, reg, map[string]int{"CompleteAbort": 3})
	if n := testutil.ToFloat64(e.c.metrics.commits); n != 0 {
		t.Fatalf("commits on a new coordinator %v", n)
	}
	// An unloaded partition's ids are no longer reported.
	e.c.Unload(0)
	expectIDs(t, reg, nil)
}

func TestMetricsForgetExpiredTransactionalIDs(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.TransactionalIDExpiration = time.Hour })
	reg := e.registry()
	e.init("a")
	e.init("b")
	expectIDs(t, reg, map[string]int{"Empty": 2})
	e.advance(time.Hour) // the check at 1h: not older than 1h yet
	e.advance(time.Hour)
	e.idle()
	expectIDs(t, reg, nil)
}
