package main

import (
	"testing"

	"github.com/shale-log/shale/broker"
	"github.com/shale-log/shale/objectstore"
)

func TestMemoryLimitIsEachBrokersCachePlusHeadroom(t *testing.T) {
	tiered := broker.Config{}
	tiered.Tiering.Bucket = objectstore.NewMem()
	small := tiered
	small.Tiering.CacheBytes = 256 << 20
	for _, c := range []struct {
		name    string
		cfg     broker.Config
		brokers int
		want    int64
	}{
		{"no tiering, no limit", broker.Config{}, 1, 0},
		{"default cache", tiered, 1, 1<<30 + memoryHeadroom},
		{"256 MiB cache", small, 1, 256<<20 + memoryHeadroom},
		{"three brokers in one process", small, 3, 3 * (256<<20 + memoryHeadroom)},
	} {
		if got := memoryLimit(c.cfg, c.brokers); got != c.want {
			t.Errorf("%s: %d, want %d", c.name, got, c.want)
		}
	}
}
