package txn

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are a coordinator's Prometheus series. Each coordinator has its
// own (no package globals); the broker registers Coordinator.Collector on
// its registry. Events are counted on the shard goroutines; the ids per
// state are read at scrape time from counters the shards keep.
type metrics struct {
	transactions                  *prometheus.CounterVec // result
	commits, aborts, timeouts     prometheus.Counter
	markersWritten, markerRetries prometheus.Counter
	completionSeconds             prometheus.Histogram
}

var transactionalIDsDesc = prometheus.NewDesc("shale_transactional_ids",
	"Transactional ids this broker coordinates (the __transaction_state partitions it leads and has loaded), by state: Empty, Ongoing, PrepareCommit, PrepareAbort, CompleteCommit, CompleteAbort. Ids stay in a Prepare state while their markers are written; one that stays there long had its markers fenced or cannot reach a partition.",
	[]string{"state"}, nil)

func newMetrics() *metrics {
	m := &metrics{
		transactions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "shale", Name: "transactions_total",
			Help: "Transactions this broker's coordinator ended, by result once the decision was written: commit or abort (EndTxn), timeout (aborted by the coordinator: past transaction.timeout.ms, or its producer replaced by InitProducerId).",
		}, []string{"result"}),
		markersWritten: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "shale", Name: "transaction_markers_written_total",
			Help: "Transaction markers this broker's coordinator had written, one per partition of each ended transaction (markers of deleted partitions, dropped, are not counted).",
		}),
		markerRetries: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "shale", Name: "transaction_marker_retries_total",
			Help: "Transaction marker writes that failed for a partition (its leader moved or could not be reached, not enough replicas, a timeout) and are retried after a backoff of 100ms doubling to 5s.",
		}),
		completionSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "shale", Name: "transaction_completion_seconds",
			Help:    "Time from a transaction's end (EndTxn, or the coordinator's abort) to the last of its markers written, retries included; for a transaction a coordinator resumes after a move, from the end its predecessor recorded.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 13), // 1ms .. ~60s
		}),
	}
	m.commits = m.transactions.WithLabelValues("commit")
	m.aborts = m.transactions.WithLabelValues("abort")
	m.timeouts = m.transactions.WithLabelValues("timeout")
	return m
}

// Collector returns the coordinator's metrics for a registry:
// shale_transactions_total, shale_transaction_markers_written_total,
// shale_transaction_marker_retries_total,
// shale_transaction_completion_seconds and shale_transactional_ids.
func (c *Coordinator) Collector() prometheus.Collector { return collector{c} }

type collector struct{ c *Coordinator }

func (k collector) Describe(ch chan<- *prometheus.Desc) {
	m := k.c.metrics
	m.transactions.Describe(ch)
	m.markersWritten.Describe(ch)
	m.markerRetries.Describe(ch)
	m.completionSeconds.Describe(ch)
	ch <- transactionalIDsDesc
}

func (k collector) Collect(ch chan<- prometheus.Metric) {
	m := k.c.metrics
	m.transactions.Collect(ch)
	m.markersWritten.Collect(ch)
	m.markerRetries.Collect(ch)
	m.completionSeconds.Collect(ch)
	var byState [len(stateNames)]int64
	k.c.mu.RLock()
	for _, s := range k.c.mu.shards {
		if !s.loaded.Load() {
			continue
		}
		for st := range byState {
			byState[st] += s.idsByState[st].Load()
		}
	}
	k.c.mu.RUnlock()
	// Dead and PrepareEpochFence are never held (see doc.go).
	for st := stateEmpty; st <= stateCompleteAbort; st++ {
		ch <- prometheus.MustNewConstMetric(transactionalIDsDesc, prometheus.GaugeValue, float64(byState[st]), st.String())
	}
}

// stateCounts are a shard's stored ids per state, written on its
// goroutine and read by scrapes.
type stateCounts [len(stateNames)]atomic.Int64

func (sc *stateCounts) add(st txnState, d int64) {
	if st >= 0 && int(st) < len(sc) {
		sc[st].Add(d)
	}
}

func (sc *stateCounts) reset() {
	for i := range sc {
		sc[i].Store(0)
	}
}

// markersDone observes a completion's time from its transaction's end to
// its last marker written (on the loop).
func (s *shard) markersDone(c *completion) {
	s.c.metrics.completionSeconds.Observe(max(s.now().Sub(c.ended), 0).Seconds())
}

// endedAt is when a Prepare state was decided: the record's update time.
func endedAt(m *txnMeta) time.Time { return time.UnixMilli(m.updateMs) }
