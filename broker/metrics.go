package broker

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/shale-log/shale/localseg"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// brokerMetrics are the broker's Prometheus collectors, registered on the
// registry the broker is given (never on a global one).
//
// Label cardinality is bounded by what the cluster holds, never by what
// clients send: api and version are Kafka's (an unknown key is "Unknown",
// a version the broker does not serve "unsupported"), error is a Kafka
// error name, topic and partition are hosted partitions, group a group
// with committed offsets. A topic's series go when its last partition
// leaves this broker.
type brokerMetrics struct {
	connections prometheus.Gauge
	// connectionsRefused: connections closed at accept for
	// max.connections or max.connections.per.ip.
	connectionsRefused prometheus.Counter
	requests           *prometheus.CounterVec   // api, version, error
	requestSeconds     *prometheus.HistogramVec // api
	// reqCache holds, per API key and version, the children a request
	// without error updates, so that the request path does no label
	// lookup.
	reqCache [reqCacheKeys][reqCacheVersions]atomic.Pointer[requestChildren]

	producedBytes   *prometheus.CounterVec // topic
	producedRecords *prometheus.CounterVec // topic
	fetchedBytes    *prometheus.CounterVec // topic, source
	// replicationIn, replicationOut: KIP-973's per-topic
	// ReplicationBytesInPerSec and ReplicationBytesOutPerSec.
	replicationIn, replicationOut *prometheus.CounterVec // topic
	topicsMu                      sync.Mutex
	topics                        map[string]*topicCounters

	partitions     prometheus.Gauge
	strayLogs      prometheus.Gauge
	lostLogs       prometheus.Gauge
	refusedBatches *prometheus.CounterVec
	// recompressedBytes: producer batches the leader rewrote with their
	// topic's compression.type, as received and as stored.
	recompressedBytes *prometheus.CounterVec
	offlinePartitions prometheus.Gauge
	lostRanges        prometheus.Counter
	// remoteDamaged and remoteScrubbedBytes: the remote logs' scrub
	// (tiered_scrub.go).
	remoteDamaged       prometheus.Gauge
	remoteScrubbedBytes prometheus.Counter
	repairs             *prometheus.CounterVec
	// flushSeconds and flushWaiters: the group commit's syncs (Kafka's
	// LogFlushRateAndTimeMs), and the waiters each answered.
	flushSeconds prometheus.Histogram
	flushWaiters prometheus.Histogram
	// uncleanElections: leaders this broker elected from outside the
	// ISR, by who asked (controller, operator).
	uncleanElections *prometheus.CounterVec
	// authorizationDenied: requests (or parts of them) the ACLs refused.
	authorizationDenied *prometheus.CounterVec
}

const (
	reqCacheKeys     = 128
	reqCacheVersions = 32
)

// requestChildren are the series one (api, version) updates.
type requestChildren struct {
	api, version string
	ok           prometheus.Counter
	seconds      prometheus.Observer
}

// topicCounters are a topic's children of the per-topic counters; each
// partition holds its topic's, looked up once when it opens.
type topicCounters struct {
	producedBytes, producedRecords prometheus.Counter
	fetchedLocal, fetchedRemote    prometheus.Counter
	replicationIn, replicationOut  prometheus.Counter
}

// unregisteredCounters count for partitions made without a broker (tests).
var unregisteredCounters = newBrokerMetrics(nil).forTopic("")

func newBrokerMetrics(reg prometheus.Registerer) *brokerMetrics {
	m := &brokerMetrics{
		connectionsRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "shale", Name: "connections_refused_total", Help: "Connections closed as they were accepted, past max.connections or max.connections.per.ip.",
		}),
		connections: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "shale", Name: "connections", Help: "Open client connections.",
		}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "shale", Name: "kafka_requests_total",
			Help: "Kafka requests answered, by API, version and error (the first error code of the response, top level first; NONE when there is none; version \"unsupported\" for versions the broker does not serve).",
		}, []string{"api", "version", "error"}),
		requestSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "shale", Name: "kafka_request_duration_seconds",
			Help:    "Time from a request's last byte read to its response written (long-poll fetches and acks=all produces include their wait), by API.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2.5, 15), // 100µs .. ~37s
		}, []string{"api"}),
		producedBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "shale", Name: "produced_bytes_total", Help: "Record batch bytes appended by producers, by topic.",
		}, []string{"topic"}),
		producedRecords: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "shale", Name: "produced_records_total", Help: "Records appended by producers, by topic.",
		}, []string{"topic"}),
		fetchedBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "shale", Name: "fetched_bytes_total",
			Help: "Record bytes sent to consumers (not to follower replicas), by topic and source: local (the partition's log) or remote (the object store).",
		}, []string{"topic", "source"}),
		replicationIn: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "shale", Name: "replication_bytes_in_total",
			Help: "Record bytes this broker appended as follower, fetched from the leaders, by topic (Kafka's ReplicationBytesInPerSec, KIP-973).",
		}, []string{"topic"}),
		replicationOut: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "shale", Name: "replication_bytes_out_total",
			Help: "Record bytes this broker sent as leader to follower replicas, by topic (Kafka's ReplicationBytesOutPerSec, KIP-973).",
		}, []string{"topic"}),
		topics: map[string]*topicCounters{},
		partitions: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "shale", Name: "partitions", Help: "Partition replicas hosted by this broker.",
		}),
		lostLogs: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "shale", Name: "lost_partition_logs",
			Help: "Partition logs on this broker that may hold less than their ISR counted on (a lost disk, or a machine crash) and are not settled yet: it leads none of them, and is leaving their ISRs or, recovering, waits for the controller to compare the logs of in-sync replicas that all crashed.",
		}),
		strayLogs: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "shale", Name: "stray_partition_logs",
			Help: "Partition directories kept but not served: the metadata does not assign them to this broker (or cannot be read) and no deletion of their topic is recorded.",
		}),
		refusedBatches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "shale", Name: "produce_batches_refused_total",
			Help: "Producer batches refused by validation, by reason: corrupt (bad CRC, framing or compressed stream), invalid_record (records that do not match the header), too_large (expands past the decompression bound).",
		}, []string{"reason"}),
		recompressedBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "shale", Name: "produce_recompressed_bytes_total",
			Help: "Bytes of producer batches the leader rewrote with their topic's compression.type codec, as received from producers (side=received) and as stored (side=stored).",
		}, []string{"side"}),
		offlinePartitions: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "shale", Name: "offline_partitions",
			Help: "Partitions assigned to this broker whose logs cannot be opened or went offline (a failed write or fsync, a full disk); retried with backoff.",
		}),
		lostRanges: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "shale", Name: "lost_ranges_total",
			Help: "Damaged stretches of sealed segments (bad length, CRC or offsets) found by the scrubber.",
		}),
		remoteDamaged: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "shale", Name: "remote_damaged_objects",
			Help: "Objects of the remote logs this broker leads (segments, companions, manifest parts) that the scrub under way or the last complete one of each found missing, of the wrong size or with bytes that do not check out.",
		}),
		remoteScrubbedBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "shale", Name: "remote_scrubbed_bytes_total",
			Help: "Bytes of remote segments read back and checked by the scrub of the remote logs this broker leads.",
		}),
		repairs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "shale", Name: "lost_range_repairs_total",
			Help: "Attempts to put a lost range back from the bucket or an in-sync replica, by result (repaired, failed).",
		}, []string{"result"}),
		flushSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "shale", Name: "log_flush_duration_seconds",
			Help:    "Syncs of a partition's log by its group commit (acks=all produces on a leader alone, flush.messages, flush.ms): the time of each one's fdatasyncs (Kafka's LogFlushRateAndTimeMs).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16), // 100µs .. ~3.3s
		}),
		flushWaiters: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "shale", Name: "log_flush_waiters",
			Help:    "Waiters (acks=all produces, flush.messages) each group-commit sync answered: how many requests one fdatasync served.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 10), // 1 .. 512
		}),
		uncleanElections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "shale", Name: "unclean_leader_elections_total",
			Help: "Leaders this broker elected from outside the ISR (Kafka's UncleanLeaderElectionsPerSec), by who asked: controller (a topic with unclean.leader.election.enable) or operator (ElectLeaders, unclean). Each may lose records the ISR held; the controller's log names what each replica's log held.",
		}, []string{"by"}),
		authorizationDenied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "shale", Name: "authorization_denied_total",
			Help: "Operations the ACLs refused a client (a request refused for several topics counts each), by resource type and operation.",
		}, []string{"resource_type", "operation"}),
	}
	// Every reason from the start, so that rates read 0, not nothing.
	for _, r := range []string{"corrupt", "invalid_record", "too_large", "other"} {
		m.refusedBatches.WithLabelValues(r)
	}
	for _, side := range []string{"received", "stored"} {
		m.recompressedBytes.WithLabelValues(side)
	}
	for _, r := range []string{"repaired", "failed"} {
		m.repairs.WithLabelValues(r)
	}
	for _, by := range []string{"controller", "operator"} {
		m.uncleanElections.WithLabelValues(by)
	}
	if reg != nil {
		reg.MustRegister(m.lostRanges, m.remoteDamaged, m.remoteScrubbedBytes, m.repairs, m.connections, m.connectionsRefused, m.requests, m.requestSeconds, m.producedBytes, m.producedRecords,
			m.fetchedBytes, m.replicationIn, m.replicationOut, m.partitions, m.strayLogs, m.lostLogs, m.refusedBatches, m.recompressedBytes, m.offlinePartitions,
			m.flushSeconds, m.flushWaiters, m.uncleanElections, m.authorizationDenied)
	}
	return m
}

// requestChildren returns the series of requests with key and version.
func (m *brokerMetrics) requestChildren(key, version int16) *requestChildren {
	cacheable := key >= 0 && key < reqCacheKeys && version >= 0 && version < reqCacheVersions
	if cacheable {
		if c := m.reqCache[key][version].Load(); c != nil {
			return c
		}
	}
	c := &requestChildren{api: kmsg.NameForKey(key), version: "unsupported"}
	if a, ok := apis[key]; ok && version >= a.min && version <= a.max {
		c.version = strconv.Itoa(int(version))
	}
	c.seconds = m.requestSeconds.WithLabelValues(c.api)
	if c.version != "unsupported" {
		c.ok = m.requests.WithLabelValues(c.api, c.version, "NONE")
		if cacheable {
			m.reqCache[key][version].Store(c)
		}
	}
	return c
}

// observeRequest counts one answered request; code is its first error
// code (0: none).
func (m *brokerMetrics) observeRequest(key, version int16, code int16, took time.Duration) {
	c := m.requestChildren(key, version)
	c.seconds.Observe(took.Seconds())
	if code == 0 && c.ok != nil {
		c.ok.Inc()
		return
	}
	m.requests.WithLabelValues(c.api, c.version, errorName(code)).Inc()
}

// errorName is Kafka's name for an error code (UNKNOWN_SERVER_ERROR for a
// code it does not know, so the label stays bounded).
func errorName(code int16) string {
	if e, ok := kerr.ErrorForCode(code).(*kerr.Error); ok {
		return e.Message
	}
	return kerr.UnknownServerError.Message
}

// forTopic returns topic's counters, creating them on first use.
func (m *brokerMetrics) forTopic(topic string) *topicCounters {
	m.topicsMu.Lock()
	defer m.topicsMu.Unlock()
	if c, ok := m.topics[topic]; ok {
		return c
	}
	c := &topicCounters{
		producedBytes:   m.producedBytes.WithLabelValues(topic),
		producedRecords: m.producedRecords.WithLabelValues(topic),
		fetchedLocal:    m.fetchedBytes.WithLabelValues(topic, "local"),
		fetchedRemote:   m.fetchedBytes.WithLabelValues(topic, "remote"),
		replicationIn:   m.replicationIn.WithLabelValues(topic),
		replicationOut:  m.replicationOut.WithLabelValues(topic),
	}
	m.topics[topic] = c
	return c
}

// forgetTopicsExcept removes the series of every topic not in keep (their
// last partition left this broker: deleted or moved away), and returns
// those topics.
func (m *brokerMetrics) forgetTopicsExcept(keep map[string]*localTopic) (gone []string) {
	m.topicsMu.Lock()
	defer m.topicsMu.Unlock()
	for topic := range m.topics {
		if _, ok := keep[topic]; ok {
			continue
		}
		gone = append(gone, topic)
		delete(m.topics, topic)
		m.producedBytes.DeleteLabelValues(topic)
		m.producedRecords.DeleteLabelValues(topic)
		m.fetchedBytes.DeleteLabelValues(topic, "local")
		m.fetchedBytes.DeleteLabelValues(topic, "remote")
		m.replicationIn.DeleteLabelValues(topic)
		m.replicationOut.DeleteLabelValues(topic)
	}
	return gone
}

// partitionCollector reports per-partition state when scraped, walking the
// hosted partitions, so that nothing on the produce or fetch path updates
// a gauge and a partition's series go with it.
type partitionCollector struct {
	b *Broker
}

var (
	hwDesc = prometheus.NewDesc("shale_partition_high_watermark",
		"High watermark of each partition this broker leads (followers do not report, so a sum over brokers counts each partition once).",
		[]string{"topic", "partition"}, nil)
	logEndDesc = prometheus.NewDesc("shale_partition_log_end_offset",
		"Log end offset of each partition this broker leads.",
		[]string{"topic", "partition"}, nil)
	logStartDesc = prometheus.NewDesc("shale_partition_log_start_offset",
		"Log start offset of each partition this broker leads (the first offset consumers can read, local or remote).",
		[]string{"topic", "partition"}, nil)
	underReplicatedDesc = prometheus.NewDesc("shale_partition_under_replicated",
		"1 for each partition this broker leads whose in-sync replicas are fewer than its replicas, else 0 (one series per led partition; sum for the total).",
		[]string{"topic", "partition"}, nil)
	underMinISRDesc = prometheus.NewDesc("shale_partition_under_min_isr",
		"1 for each partition this broker leads whose in-sync replicas are fewer than min.insync.replicas (or than its replicas, when there are fewer), else 0 (Kafka's UnderMinIsrPartitionCount, one series per led partition): acks=all produce is refused, and the high watermark holds still, so acks=1 records written meanwhile are not read, until the ISR is back (KIP-966).",
		[]string{"topic", "partition"}, nil)
	tierLagBytesDesc = prometheus.NewDesc("shale_tiering_lag_bytes",
		"Bytes of sealed local segments the remote manifest does not hold yet, for each tiered partition this broker leads: those uploading now, those waiting for an upload slot and those not yet below the high watermark (Kafka's RemoteCopyLagBytes; local retention cannot delete them).",
		[]string{"topic", "partition"}, nil)
	tierLagSegmentsDesc = prometheus.NewDesc("shale_tiering_lag_segments",
		"Sealed local segments the remote manifest does not hold yet, for each tiered partition this broker leads: those uploading now, those uploaded and waiting for the commit of an older one, those waiting for an upload slot and those not yet below the high watermark (Kafka's RemoteCopyLagSegments; local retention cannot delete them).",
		[]string{"topic", "partition"}, nil)
	tierEligibleSegmentsDesc = prometheus.NewDesc("shale_tiering_lag_eligible_segments",
		"Of shale_tiering_lag_segments, those whose last offset is below the last stable offset (eligible for upload), for each tiered partition this broker leads: uploading now, uploaded and waiting for a manifest commit or named by the one in flight, or waiting for an upload slot. The upload lag the uploader answers for; the others wait for the high watermark.",
		[]string{"topic", "partition"}, nil)
	tierRemoteBytesDesc = prometheus.NewDesc("shale_tiering_remote_bytes",
		"Bytes of a tiered partition's segments in the object store, for each tiered partition this broker leads.",
		[]string{"topic", "partition"}, nil)
	logDirTotalDesc = prometheus.NewDesc("shale_log_dir_total_bytes",
		"Size of the filesystem holding the broker's data directory (KIP-827's TotalBytes, as DescribeLogDirs answers).",
		nil, nil)
	logDirUsableDesc = prometheus.NewDesc("shale_log_dir_usable_bytes",
		"Free space of the filesystem holding the broker's data directory that the broker may use (KIP-827's UsableBytes): produce is refused with KAFKA_STORAGE_ERROR once it falls below shale_log_dir_reserve_bytes.",
		nil, nil)
	logDirReserveDesc = prometheus.NewDesc("shale_log_dir_reserve_bytes",
		"Free space the log directory keeps (--log-dir-reserve-bytes): produce is refused below it; 0 when the guard is off.",
		nil, nil)
	localLogBytesDesc = prometheus.NewDesc("shale_local_log_bytes",
		"Bytes of local segments of each topic on this broker's disk, its leaders' and its followers' replicas alike (Kafka's Log Size summed per topic): what local retention and uploads to the object store keep in check.",
		[]string{"topic"}, nil)
	partitionsUnstableDesc = prometheus.NewDesc("shale_partitions_unstable",
		"Partitions this broker leads whose last stable offset is below the high watermark: an open transaction holds back read_committed consumers (and uploads to the object store). One that stays up points at a transaction left open: shale txn list --state Ongoing.",
		nil, nil)
	groupLagDesc = prometheus.NewDesc("shale_consumer_group_lag",
		"High watermark minus committed offset, for each group this broker coordinates and each partition the group has committed offsets for: the high watermark is this broker's where it leads the partition, else its leader's (asked with ListOffsets at most every 5s; a partition whose leader does not answer within 1s is left out of that scrape).",
		[]string{"group", "topic", "partition"}, nil)
)

// groupLagScrapeTimeout bounds how long a scrape waits for the group
// coordinator's shards.
const groupLagScrapeTimeout = 2 * time.Second

func (c partitionCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{hwDesc, logEndDesc, logStartDesc, underReplicatedDesc, underMinISRDesc, logDirTotalDesc, logDirUsableDesc, logDirReserveDesc, localLogBytesDesc,
		tierLagBytesDesc, tierLagSegmentsDesc, tierEligibleSegmentsDesc, tierRemoteBytesDesc, groupLagDesc, groupTopicLagDesc, groupLagDroppedDesc, partitionsUnstableDesc} {
		ch <- d
	}
}

func (c partitionCollector) Collect(ch chan<- prometheus.Metric) {
	b := c.b
	gauge := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), labels...)
	}
	if total, usable, err := logDirSpace(b.cfg.DataDir); err == nil {
		gauge(logDirTotalDesc, total)
		gauge(logDirUsableDesc, usable)
	}
	gauge(logDirReserveDesc, max(b.cfg.LogDirReserveBytes, 0))
	local := map[string]int64{}
	unstable := int64(0)
	for _, p := range b.replicas.all() {
		s := p.state.Load()
		if s.closed {
			continue
		}
		local[p.topic] += p.log.Size()
		if s.leader != p.nodeID {
			continue
		}
		part := strconv.Itoa(int(p.index))
		gauge(hwDesc, p.highWatermark(), p.topic, part)
		gauge(logEndDesc, p.log.LogEndOffset(), p.topic, part)
		gauge(logStartDesc, p.logStartOffset(), p.topic, part)
		if first, ok := p.log.FirstUnstableOffset(); ok && first < p.highWatermark() {
			unstable++ // its last stable offset is below the high watermark
		}
		under := int64(0)
		if len(s.isr) < len(s.replicas) {
			under = 1
		}
		gauge(underReplicatedDesc, under, p.topic, part)
		underMin := int64(0)
		p.repl.Lock()
		if p.underMinISRLocked(s) {
			underMin = 1
		}
		p.repl.Unlock()
		gauge(underMinISRDesc, underMin, p.topic, part)
		if p.tier != nil && p.tier.ready.Load() {
			l := p.tier.lag(p)
			gauge(tierLagBytesDesc, l.bytes, p.topic, part)
			gauge(tierLagSegmentsDesc, l.segments, p.topic, part)
			gauge(tierEligibleSegmentsDesc, l.eligible, p.topic, part)
			gauge(tierRemoteBytesDesc, l.remoteBytes, p.topic, part)
		}
	}
	for topic, n := range local {
		gauge(localLogBytesDesc, n, topic)
	}
	gauge(partitionsUnstableDesc, unstable)
	if b.groups == nil {
		return
	}
	ctx, cancel := context.WithTimeout(b.ctx, groupLagScrapeTimeout)
	defer cancel()
	offsets := b.groups.c.CommittedOffsets(ctx)
	led := map[partitionKey]int64{}
	need := map[partitionKey]bool{}
	for _, o := range offsets {
		k := partitionKey{o.Topic, o.Partition}
		if p, ok := b.replicas.lookupByName(o.Topic, o.Partition); ok && p.isLeader() {
			led[k] = p.highWatermark()
		} else {
			need[k] = true
		}
	}
	var remote map[partitionKey]int64
	if len(need) > 0 {
		remote = b.remoteHWs.get(ctx, need, time.Now())
	}
	lags := make([]groupLag, 0, len(offsets))
	for _, o := range offsets {
		k := partitionKey{o.Topic, o.Partition}
		hw, ok := led[k]
		if !ok {
			hw, ok = remote[k]
		}
		if !ok {
			continue
		}
		lags = append(lags, groupLag{o.Group, o.Topic, o.Partition, max(0, hw-o.Offset)})
	}
	parts, topics, dropped := capGroupLag(lags, b.cfg.MaxGroupLagSeries)
	for _, l := range parts {
		gauge(groupLagDesc, l.lag, l.group, l.topic, strconv.Itoa(int(l.partition)))
	}
	for _, l := range topics {
		gauge(groupTopicLagDesc, l.lag, l.group, l.topic)
	}
	gauge(groupLagDroppedDesc, int64(dropped))
}

// observeSync notes one sync of a log's group commit.
func (m *brokerMetrics) observeSync(s localseg.SyncStats) {
	m.flushSeconds.Observe(s.Took.Seconds())
	m.flushWaiters.Observe(float64(s.Answered))
}
