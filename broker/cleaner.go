package broker

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/shale-log/shale/localseg"
	"github.com/shale-log/shale/localseg/recordbatch"
)

// The log cleaner compacts the hosted partitions of topics whose
// cleanup.policy has compact, leaders and followers alike (each replica
// compacts its own log, as Kafka's do), one pass at a time (Kafka's
// log.cleaner.threads=1): every LogCleanerBackoff it cleans, dirtiest
// first, each partition whose dirty ratio reached
// min.cleanable.dirty.ratio or whose oldest dirty record is older than
// max.compaction.lag.ms. A partition whose pass fails (a corrupt batch, a
// failing disk) is left alone for uncleanableRetry; the count of such
// partitions is a metric, as Kafka's uncleanable-partitions-count. A
// tiered partition's local log is left alone: its leader compacts its
// remote log instead (compactRemote), by the same rules and in the same
// metrics.

// maxCleanerPassesPerRound bounds the passes of one round of the cleaner.
const maxCleanerPassesPerRound = 64

// uncleanableRetry is how long a partition whose pass failed is skipped.
const uncleanableRetry = time.Hour

// cleanerMetrics are the log cleaner's collectors.
type cleanerMetrics struct {
	passes       *prometheus.CounterVec // result
	readBytes    prometheus.Counter
	writtenBytes prometheus.Counter
	removed      prometheus.Counter
	seconds      prometheus.Histogram
	maxDirty     prometheus.Gauge
	uncleanable  prometheus.Gauge
}

func newCleanerMetrics(reg prometheus.Registerer) *cleanerMetrics {
	m := &cleanerMetrics{
		passes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shale_log_cleaner_passes_total",
			Help: "Compaction passes over a partition, by result (cleaned, aborted: the log changed under the pass, failed).",
		}, []string{"result"}),
		readBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shale_log_cleaner_read_bytes_total",
			Help: "Bytes of segments the log cleaner rewrote.",
		}),
		writtenBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shale_log_cleaner_written_bytes_total",
			Help: "Bytes of the segments that replaced them.",
		}),
		removed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shale_log_cleaner_removed_records_total",
			Help: "Records compaction removed (superseded, expired tombstones, aborted, keyless).",
		}),
		seconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "shale_log_cleaner_pass_seconds",
			Help:    "Time of one compaction pass over a partition.",
			Buckets: prometheus.ExponentialBuckets(0.01, 4, 9),
		}),
		maxDirty: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shale_log_cleaner_max_dirty_ratio",
			Help: "The largest dirty ratio of the compacted partitions at the last look (Kafka's max-dirty-percent, as a ratio).",
		}),
		uncleanable: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shale_log_cleaner_uncleanable_partitions",
			Help: "Partitions whose last compaction pass failed, left alone for an hour.",
		}),
	}
	for _, r := range []string{"cleaned", "aborted", "failed"} {
		m.passes.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.passes, m.readBytes, m.writtenBytes, m.removed, m.seconds, m.maxDirty, m.uncleanable)
	}
	return m
}

// logCleaner picks and cleans the partitions of compacted topics.
type logCleaner struct {
	b       *Broker
	metrics *cleanerMetrics
	mu      sync.Mutex
	// failed holds the partitions whose last pass failed, until when
	// they are skipped.
	failed map[*partition]time.Time
}

func newLogCleaner(b *Broker, reg prometheus.Registerer) *logCleaner {
	return &logCleaner{b: b, metrics: newCleanerMetrics(reg), failed: map[*partition]time.Time{}}
}

// run cleans until ctx is done.
func (c *logCleaner) run(ctx context.Context) {
	if c.b.cfg.LogCleanerBackoff < 0 {
		return
	}
	t := time.NewTicker(c.b.cfg.LogCleanerBackoff)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		// The dirtiest first, until none is due; a bounded number a
		// round, so that passes the log keeps aborting do not spin.
		for i := 0; i < maxCleanerPassesPerRound && ctx.Err() == nil && c.cleanDirtiest(ctx, time.Now()); i++ {
		}
	}
}

// compactOptions are the pass options of p's log as its topic's configs
// say. ok is false when the topic is not compacted.
func (c *logCleaner) compactOptions(p *partition, now time.Time) (localseg.CompactOptions, *topicConfig, bool) {
	cfg := p.cfg.Load()
	// A tiered partition's local log is not compacted: its segments go to
	// the bucket as they are, and its leader compacts the remote log
	// (compactRemote); the local log keeps only local.retention of it.
	if cfg == nil || !cfg.compact || p.tier != nil {
		return localseg.CompactOptions{}, nil, false
	}
	return c.passOptions(cfg, now, p.highWatermark()), cfg, true
}

// passOptions are a pass's options under the topic's configs cfg,
// cleaning nothing at or past bound.
func (c *logCleaner) passOptions(cfg *topicConfig, now time.Time, bound int64) localseg.CompactOptions {
	return localseg.CompactOptions{
		Now:                now,
		HighWatermark:      bound,
		DeleteRetentionMs:  cfg.deleteRetentionMs,
		MinCompactionLagMs: cfg.minCompactionLagMs,
		MaxKeys:            int(c.b.cfg.LogCleanerDedupeBufferSize / cleanerBytesPerKey),
		Validate: recordbatch.ValidateOptions{
			MaxDecompressed: recordbatch.MaxDecompressedFor(int(cfg.maxMessageBytes)),
			Budget:          c.b.scanBudget,
		},
	}
}

// cleanerBytesPerKey is what one key of a pass's map costs, about.
const cleanerBytesPerKey = 48

// cleanDirtiest cleans the dirtiest partition due, if any, and reports
// whether it cleaned one.
func (c *logCleaner) cleanDirtiest(ctx context.Context, now time.Time) bool {
	var best *partition
	var bestOpts localseg.CompactOptions
	bestRatio, maxRatio := -1.0, 0.0
	c.mu.Lock()
	for p, until := range c.failed {
		if now.After(until) || p.log.Offline() != nil {
			delete(c.failed, p)
		}
	}
	c.metrics.uncleanable.Set(float64(len(c.failed)))
	c.mu.Unlock()
	for _, p := range c.b.replicas.all() {
		opts, cfg, ok := c.compactOptions(p, now)
		if !ok || c.isFailed(p) || p.log.Offline() != nil {
			continue
		}
		cl := p.log.Cleanable(opts)
		maxRatio = max(maxRatio, cl.DirtyRatio())
		ratio, due := cleanDue(cl, cfg, now)
		if due && ratio > bestRatio {
			best, bestOpts, bestRatio = p, opts, ratio
		}
	}
	c.metrics.maxDirty.Set(maxRatio)
	if best == nil {
		return false
	}
	c.clean(ctx, best, bestOpts)
	return true
}

// cleanDue reports whether a log described by cl is due a pass under its
// topic's configs cfg: its dirty ratio reached min.cleanable.dirty.ratio,
// or its oldest dirty record is older than max.compaction.lag.ms, or a
// tombstone or marker a pass kept reached its delete horizon. ratio ranks
// the logs due: overdue ones first (+Inf), then the dirtiest.
func cleanDue(cl localseg.Cleanable, cfg *topicConfig, now time.Time) (ratio float64, due bool) {
	if cl.DirtyBytes == 0 && !cl.HorizonDue {
		return 0, false
	}
	ratio = cl.DirtyRatio()
	overdue := cl.HorizonDue || cfg.maxCompactionLagMs < math.MaxInt64 && cl.DirtyBytes > 0 && cl.DirtyTimestamp >= 0 && now.UnixMilli()-cl.DirtyTimestamp > cfg.maxCompactionLagMs
	if overdue {
		return math.Inf(1), true
	}
	return ratio, ratio >= cfg.minCleanableRatio
}

func (c *logCleaner) isFailed(p *partition) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.failed[p]
	return ok
}

// clean runs one pass over p.
func (c *logCleaner) clean(ctx context.Context, p *partition, opts localseg.CompactOptions) {
	start := time.Now()
	st, err := p.log.Compact(ctx, opts)
	aborted := errors.Is(err, localseg.ErrCompactionAborted) || errors.Is(err, localseg.ErrClosed) || ctx.Err() != nil
	if c.account(c.b.log.With("topic", p.topic, "partition", p.index), "compaction", st, start, err, aborted) {
		c.markFailed(p)
	}
}

// markFailed leaves p alone for uncleanableRetry, its local log or, on a
// tiered partition, its remote one (compactRemote).
func (c *logCleaner) markFailed(p *partition) {
	c.mu.Lock()
	c.failed[p] = time.Now().Add(uncleanableRetry)
	c.metrics.uncleanable.Set(float64(len(c.failed)))
	c.mu.Unlock()
}

// account counts a pass (what: of which log) begun at start, and logs how
// it ended: cleaned, aborted (the log changed under it, or its work was
// cut short: the next pass does it again) or failed. It reports whether
// it failed: the log is then left alone for uncleanableRetry.
func (c *logCleaner) account(log *slog.Logger, what string, st localseg.CompactStats, start time.Time, err error, aborted bool) bool {
	took := time.Since(start)
	c.metrics.seconds.Observe(took.Seconds())
	c.metrics.readBytes.Add(float64(st.ReadBytes))
	c.metrics.writtenBytes.Add(float64(st.WrittenBytes))
	c.metrics.removed.Add(float64(st.RemovedRecords))
	switch {
	case err == nil:
		c.metrics.passes.WithLabelValues("cleaned").Inc()
		log.Debug(what+" done", "segments", st.Segments, "into", st.Groups, "read_bytes", st.ReadBytes,
			"written_bytes", st.WrittenBytes, "removed_records", st.RemovedRecords, "cleaned_to", st.CleanedTo,
			"took", took.Round(time.Millisecond))
		return false
	case aborted:
		c.metrics.passes.WithLabelValues("aborted").Inc()
		return false
	default:
		c.metrics.passes.WithLabelValues("failed").Inc()
		log.Error(what+" failed; left alone for an hour", "err", err)
		return true
	}
}
