package tiering

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are tiering's Prometheus collectors. A nil *Metrics records
// nothing.
type Metrics struct {
	uploadedBytes    prometheus.Counter
	uploadedSegments prometheus.Counter
	uploadErrors     prometheus.Counter
	uploadSeconds    prometheus.Histogram
	uploadPhases     *prometheus.CounterVec
	commits          prometheus.Counter
	cacheHits        prometheus.Counter
	cacheMisses      prometheus.Counter
	cacheEvictions   prometheus.Counter
	gets             prometheus.Counter
	getErrors        prometheus.Counter
	deletes          prometheus.Counter
	remoteFetch      prometheus.Histogram
	aheadSkipped     prometheus.Counter
	aheadEvicted     prometheus.Counter
}

// NewMetrics registers tiering's collectors with reg (nil: unregistered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		uploadedBytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "shale_tiering_uploaded_bytes_total",
			Help: "Bytes uploaded to the object store (segments and companions)."}),
		uploadedSegments: prometheus.NewCounter(prometheus.CounterOpts{Name: "shale_tiering_uploaded_segments_total",
			Help: "Segments uploaded and committed."}),
		uploadErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "shale_tiering_upload_errors_total",
			Help: "Failed segment uploads and manifest commits (retried)."}),
		uploadSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "shale_tiering_upload_seconds",
			Help: "Time to upload and commit one segment.", Buckets: prometheus.ExponentialBuckets(0.01, 2, 14)}),
		uploadPhases: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "shale_tiering_upload_phase_seconds_total",
			Help: "Where committed uploads spent their time, summed over segments, by phase: wait (from the seal to the upload's start), " +
				"open (the segment's indexes and producer snapshot), read (the segment file), put (the segment's PUT less its reads), " +
				"companion (building and PUT of the companion object, alongside the segment's), queue (from the end of the upload to the start of the manifest commit naming it: " +
				"waiting for an older upload or for the commit in flight), commit (each segment's share of its manifest commit)."},
			[]string{"phase"}),
		commits: prometheus.NewCounter(prometheus.CounterOpts{Name: "shale_tiering_upload_commits_total",
			Help: "Manifest commits naming uploaded segments (one per batch)."}),
		cacheHits: prometheus.NewCounter(prometheus.CounterOpts{Name: "shale_remote_cache_hits_total",
			Help: "Remote chunk reads served from the cache."}),
		cacheMisses: prometheus.NewCounter(prometheus.CounterOpts{Name: "shale_remote_cache_misses_total",
			Help: "Remote chunk reads that went to the object store."}),
		cacheEvictions: prometheus.NewCounter(prometheus.CounterOpts{Name: "shale_remote_cache_evictions_total",
			Help: "Chunks evicted from the remote read cache."}),
		gets: prometheus.NewCounter(prometheus.CounterOpts{Name: "shale_tiering_get_requests_total",
			Help: "GET requests to the object store by remote reads."}),
		getErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "shale_tiering_get_errors_total",
			Help: "Failed GET requests by remote reads."}),
		deletes: prometheus.NewCounter(prometheus.CounterOpts{Name: "shale_tiering_delete_requests_total",
			Help: "Objects deleted by remote retention, orphan cleanup and topic deletion."}),
		remoteFetch: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "shale_tiering_remote_fetch_seconds",
			Help: "Latency of remote reads serving fetches.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}),
		aheadSkipped: prometheus.NewCounter(prometheus.CounterOpts{Name: "shale_remote_readahead_skipped_total",
			Help: "Chunks not read ahead because the read-ahead memory bound was reached."}),
		aheadEvicted: prometheus.NewCounter(prometheus.CounterOpts{Name: "shale_remote_readahead_evicted_total",
			Help: "Chunks read ahead and dropped unread to make room for other read-ahead."}),
	}
	if reg != nil {
		reg.MustRegister(m.uploadedBytes, m.uploadedSegments, m.uploadErrors, m.uploadSeconds, m.uploadPhases, m.commits, m.cacheHits, m.cacheMisses, m.cacheEvictions, m.gets, m.getErrors,
			m.deletes, m.remoteFetch, m.aheadSkipped, m.aheadEvicted)
	}
	return m
}

// The phases of an upload (shale_tiering_upload_phase_seconds_total).
const (
	phaseWait = iota
	phaseOpen
	phaseRead
	phaseSegmentPut
	phaseCompanion
	phaseQueue
	phaseCommit
	numPhases
)

var phaseNames = [numPhases]string{"wait", "open", "read", "put", "companion", "queue", "commit"}

func (m *Metrics) uploaded(bytes int64, d time.Duration, phases [numPhases]time.Duration) {
	if m == nil {
		return
	}
	m.uploadedBytes.Add(float64(bytes))
	m.uploadedSegments.Inc()
	m.uploadSeconds.Observe(d.Seconds())
	for i, p := range phases {
		m.uploadPhases.WithLabelValues(phaseNames[i]).Add(p.Seconds())
	}
}

func (m *Metrics) committed() {
	if m != nil {
		m.commits.Inc()
	}
}

func (m *Metrics) uploadError() {
	if m != nil {
		m.uploadErrors.Inc()
	}
}

func (m *Metrics) cacheHit(hit bool) {
	if m == nil {
		return
	}
	if hit {
		m.cacheHits.Inc()
	} else {
		m.cacheMisses.Inc()
	}
}

func (m *Metrics) evicted() {
	if m != nil {
		m.cacheEvictions.Inc()
	}
}

func (m *Metrics) get(err error) {
	if m == nil {
		return
	}
	m.gets.Inc()
	if err != nil {
		m.getErrors.Inc()
	}
}

func (m *Metrics) deleted(n int) {
	if m != nil {
		m.deletes.Add(float64(n))
	}
}

// ObserveRemoteFetch records the latency of one remote read.
func (m *Metrics) ObserveRemoteFetch(d time.Duration) {
	if m != nil {
		m.remoteFetch.Observe(d.Seconds())
	}
}

func (m *Metrics) readAheadSkipped() {
	if m != nil {
		m.aheadSkipped.Inc()
	}
}

func (m *Metrics) readAheadEvicted() {
	if m != nil {
		m.aheadEvicted.Inc()
	}
}
