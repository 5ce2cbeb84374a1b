package broker

import (
	"cmp"
	"slices"

	"github.com/prometheus/client_golang/prometheus"
)

// Clients make groups and commit offsets, so the consumer group lag
// series (one per group and committed partition) would grow with what
// clients do. Config.MaxGroupLagSeries bounds them: beyond it, groups in
// name order keep their per-partition series while those fit, the others
// are summed per topic (shale_consumer_group_topic_lag) while those fit,
// and what is not exported per partition is counted.

var (
	groupTopicLagDesc = prometheus.NewDesc("shale_consumer_group_topic_lag",
		"Sum of shale_consumer_group_lag over the partitions of a topic, for each group whose per-partition series are left out because they would exceed the broker's --max-group-lag-series (groups in name order keep per-partition series while they fit).",
		[]string{"group", "topic"}, nil)
	groupLagDroppedDesc = prometheus.NewDesc("shale_consumer_group_lag_series_dropped",
		"Per-partition consumer group lag series left out of this scrape by --max-group-lag-series: folded into shale_consumer_group_topic_lag, or left out entirely when those sums would exceed it too.",
		nil, nil)
)

// groupLag is one group's lag on one partition.
type groupLag struct {
	group, topic string
	partition    int32
	lag          int64
}

// groupTopicLag is one group's lag summed over a topic's partitions.
type groupTopicLag struct {
	group, topic string
	lag          int64
}

// capGroupLag chooses the series a scrape exports from lags: all of them
// per partition when they number at most limit (or limit is negative);
// else, taking groups in name order, a group's per-partition series when
// they fit in what is left of limit, otherwise its per-topic sums when
// those fit, otherwise nothing. dropped counts the per-partition series
// not exported as such.
func capGroupLag(lags []groupLag, limit int) (parts []groupLag, topics []groupTopicLag, dropped int) {
	if limit < 0 || len(lags) <= limit {
		return lags, nil, 0
	}
	sorted := slices.Clone(lags)
	slices.SortFunc(sorted, func(a, b groupLag) int {
		return cmp.Or(cmp.Compare(a.group, b.group), cmp.Compare(a.topic, b.topic), cmp.Compare(a.partition, b.partition))
	})
	budget := limit
	for i := 0; i < len(sorted); {
		j := i
		for j < len(sorted) && sorted[j].group == sorted[i].group {
			j++
		}
		group := sorted[i:j]
		if len(group) <= budget {
			parts = append(parts, group...)
			budget -= len(group)
		} else {
			var sums []groupTopicLag
			for _, l := range group {
				if n := len(sums); n > 0 && sums[n-1].topic == l.topic {
					sums[n-1].lag += l.lag
				} else {
					sums = append(sums, groupTopicLag{group: l.group, topic: l.topic, lag: l.lag})
				}
			}
			if len(sums) <= budget {
				topics = append(topics, sums...)
				budget -= len(sums)
			}
			dropped += len(group)
		}
		i = j
	}
	return parts, topics, dropped
}
