package main

import (
	"log/slog"
	"os"
	"runtime/debug"

	"github.com/shale-log/shale/broker"
)

// memoryHeadroom is what a broker may hold beyond its remote read cache
// (requests in flight, indexes, metadata, the runtime) before its heap is
// collected harder.
const memoryHeadroom = 200 << 20

// memoryLimit is the soft memory limit of a process running brokers
// brokers with cfg: each one's remote read cache plus memoryHeadroom; 0
// when cfg has no tiered storage (no cache: the Go default is kept).
func memoryLimit(cfg broker.Config, brokers int) int64 {
	if cfg.Tiering.Bucket == nil {
		return 0
	}
	cache := cfg.Tiering.CacheBytes
	if cache <= 0 {
		cache = 1 << 30
	}
	return int64(max(brokers, 1)) * (cache + memoryHeadroom)
}

// setMemoryLimit gives the Go runtime memoryLimit as its soft limit
// unless GOMEMLIMIT says otherwise. Without one, the heap of a full
// remote read cache grew to twice the cache between collections
// (GOGC=100): the chunks a cold replay evicts kept the RSS far above the
// cache bound. The limit only makes collections come sooner near it.
func setMemoryLimit(cfg broker.Config, brokers int, log *slog.Logger) {
	if _, set := os.LookupEnv("GOMEMLIMIT"); set {
		return
	}
	if limit := memoryLimit(cfg, brokers); limit > 0 {
		debug.SetMemoryLimit(limit)
		log.Debug("memory limit", "bytes", limit)
	}
}
