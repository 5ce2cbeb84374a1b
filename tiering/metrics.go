package tiering

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are tiering's Prometheus collectors. A nil *Metrics records
// nothing.
type Metrics struct {
	uploadedBytes    *prometheus.CounterVec
	uploadedSegments *prometheus.CounterVec
	uploadErrors     prometheus.Counter
	uploadSeconds    prometheus.Histogram
	uploadLagBytes   *prometheus.GaugeVec
	uploadLagSegs    *prometheus.GaugeVec
	remoteBytes      *prometheus.GaugeVec
	cacheHits        prometheus.Counter
	cacheMisses      prometheus.Counter
	cacheEvictions   prometheus.Counter
	gets             prometheus.Counter
	getErrors        prometheus.Counter
	deletes          prometheus.Counter
	remoteFetch      prometheus.Histogram
}

// NewMetrics registers tiering's collectors with reg (nil: unregistered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		uploadedBytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "shale_tiering_uploaded_bytes_total",
			Help: "Bytes uploaded to the object store (segments and companions), by topic."}, []string{"topic"}),
		uploadedSegments: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "shale_tiering_uploaded_segments_total",
			Help: "Segments uploaded and committed, by topic."}, []string{"topic"}),
		uploadErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "shale_tiering_upload_errors_total",
			Help: "Failed segment uploads and manifest commits (retried)."}),
		uploadSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "shale_tiering_upload_seconds",
			Help: "Time to upload and commit one segment.", Buckets: prometheus.ExponentialBuckets(0.01, 2, 14)}),
		uploadLagBytes: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "shale_tiering_upload_lag_bytes",
			Help: "Bytes of sealed local segments not yet uploaded, by partition."}, []string{"topic", "partition"}),
		uploadLagSegs: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "shale_tiering_upload_lag_segments",
			Help: "Sealed local segments not yet uploaded, by partition."}, []string{"topic", "partition"}),
		remoteBytes: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "shale_tiering_remote_bytes",
			Help: "Bytes of segments in the object store, by topic and partition."}, []string{"topic", "partition"}),
		cacheHits: prometheus.NewCounter(prometheus.CounterOpts{Name: "shale_tiering_cache_hits_total",
			Help: "Remote chunk reads served from the cache."}),
		cacheMisses: prometheus.NewCounter(prometheus.CounterOpts{Name: "shale_tiering_cache_misses_total",
			Help: "Remote chunk reads that went to the object store."}),
		cacheEvictions: prometheus.NewCounter(prometheus.CounterOpts{Name: "shale_tiering_cache_evictions_total",
			Help: "Chunks evicted from the remote read cache."}),
		gets: prometheus.NewCounter(prometheus.CounterOpts{Name: "shale_tiering_get_requests_total",
			Help: "GET requests to the object store by remote reads."}),
		getErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "shale_tiering_get_errors_total",
			Help: "Failed GET requests by remote reads."}),
		deletes: prometheus.NewCounter(prometheus.CounterOpts{Name: "shale_tiering_delete_requests_total",
			Help: "Objects deleted by remote retention, orphan cleanup and topic deletion."}),
		remoteFetch: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "shale_tiering_remote_fetch_seconds",
			Help: "Latency of remote reads serving fetches.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}),
	}
	if reg != nil {
		reg.MustRegister(m.uploadedBytes, m.uploadedSegments, m.uploadErrors, m.uploadSeconds, m.uploadLagBytes,
			m.uploadLagSegs, m.remoteBytes, m.cacheHits, m.cacheMisses, m.cacheEvictions, m.gets, m.getErrors,
			m.deletes, m.remoteFetch)
	}
	return m
}

func (m *Metrics) uploaded(topic string, bytes int64, d time.Duration) {
	if m == nil {
		return
	}
	m.uploadedBytes.WithLabelValues(topic).Add(float64(bytes))
	m.uploadedSegments.WithLabelValues(topic).Inc()
	m.uploadSeconds.Observe(d.Seconds())
}

func (m *Metrics) uploadError() {
	if m != nil {
		m.uploadErrors.Inc()
	}
}

// SetPartition records a partition's upload lag and remote size.
func (m *Metrics) SetPartition(topic, partition string, lagBytes, lagSegments, remoteBytes int64) {
	if m == nil {
		return
	}
	m.uploadLagBytes.WithLabelValues(topic, partition).Set(float64(lagBytes))
	m.uploadLagSegs.WithLabelValues(topic, partition).Set(float64(lagSegments))
	m.remoteBytes.WithLabelValues(topic, partition).Set(float64(remoteBytes))
}

// ForgetPartition drops a partition's gauges (it moved away or was deleted).
func (m *Metrics) ForgetPartition(topic, partition string) {
	if m == nil {
		return
	}
	m.uploadLagBytes.DeleteLabelValues(topic, partition)
	m.uploadLagSegs.DeleteLabelValues(topic, partition)
	m.remoteBytes.DeleteLabelValues(topic, partition)
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
