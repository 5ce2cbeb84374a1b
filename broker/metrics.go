package broker

import (
	"github.com/prometheus/client_golang/prometheus"
)

// brokerMetrics are the broker's Prometheus collectors, registered on the
// registry the broker is given (never on a global one).
type brokerMetrics struct {
	connections       prometheus.Gauge
	requests          *prometheus.CounterVec
	producedBytes     prometheus.Counter
	producedRecords   prometheus.Counter
	fetchedBytes      prometheus.Counter
	partitions        prometheus.Gauge
	strayLogs         prometheus.Gauge
	refusedBatches    *prometheus.CounterVec
	offlinePartitions prometheus.Gauge
	lostRanges        prometheus.Counter
}

func newBrokerMetrics(reg prometheus.Registerer) *brokerMetrics {
	m := &brokerMetrics{
		connections: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "shale", Name: "connections", Help: "Open client connections.",
		}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "shale", Name: "requests_total", Help: "Kafka requests received, by API.",
		}, []string{"api"}),
		producedBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "shale", Name: "produced_bytes_total", Help: "Record batch bytes appended by producers.",
		}),
		producedRecords: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "shale", Name: "produced_records_total", Help: "Records appended by producers.",
		}),
		fetchedBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "shale", Name: "fetched_bytes_total", Help: "Record bytes sent to fetchers.",
		}),
		partitions: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "shale", Name: "partitions", Help: "Partition replicas hosted by this broker.",
		}),
		strayLogs: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "shale", Name: "stray_partition_logs",
			Help: "Partition directories kept but not served: the metadata does not assign them to this broker (or cannot be read) and no deletion of their topic is recorded.",
		}),
		refusedBatches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "shale", Name: "produce_batches_refused_total",
			Help: "Producer batches refused by validation, by reason: corrupt (bad CRC, framing or compressed stream), invalid_record (records that do not match the header), too_large (expands past the decompression bound).",
		}, []string{"reason"}),
		offlinePartitions: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "shale", Name: "offline_partitions",
			Help: "Partitions assigned to this broker whose logs cannot be opened or went offline (a failed write or fsync, a full disk); retried with backoff.",
		}),
		lostRanges: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "shale", Name: "lost_ranges_total",
			Help: "Damaged stretches of sealed segments (bad length, CRC or offsets) found by the scrubber.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.lostRanges, m.connections, m.requests, m.producedBytes, m.producedRecords, m.fetchedBytes, m.partitions, m.strayLogs, m.refusedBatches, m.offlinePartitions)
	}
	return m
}
