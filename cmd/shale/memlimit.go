package main

import (
	"bytes"
	"log/slog"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shale-log/shale/broker"
)

// memoryHeadroom is what a broker may hold beyond its remote read cache
// (requests in flight, indexes, metadata, the runtime, the pages of the
// binary) before its heap is collected harder.
const memoryHeadroom = 200 << 20

// memorySlack is kept below the bound on top of what the runtime does not
// count: the soft limit is crossed for a moment between collections, and
// what the runtime does not count grows between two measures of it.
const memorySlack = 32 << 20

// memoryLimit is the memory bound of a process running brokers brokers
// with cfg: each one's remote read cache plus memoryHeadroom; 0 when cfg
// has no tiered storage (no cache: the Go default is kept).
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

// softLimit is the Go soft memory limit that keeps a process's resident
// set within bound when outside bytes of it are memory the runtime does
// not count: the binary's text and data pages, files mapped by etcd's
// bolt database, C allocations. The runtime's limit covers only the
// memory it maps itself, so a limit of the bound itself let the resident
// set pass the bound by all of outside (a broker with a 256 MiB cache
// reached 467 MiB against a 456 MiB bound during a cold replay, with
// about 32 MiB outside the runtime). The limit never goes below the
// bound's half: past that the bound is wrong, and collecting without end
// would not help.
func softLimit(bound, outside int64) int64 {
	return max(bound-max(outside, 0)-memorySlack, bound/2)
}

// outsideRuntime returns the bytes of the process's resident set the Go
// runtime does not count as its own (resident set minus what the runtime
// has mapped and not released), and false where the resident set is not
// known (no /proc).
func outsideRuntime() (int64, bool) {
	statm, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0, false
	}
	f := bytes.Fields(statm)
	if len(f) < 2 {
		return 0, false
	}
	pages, err := strconv.ParseInt(string(f[1]), 10, 64)
	if err != nil {
		return 0, false
	}
	s := []metrics.Sample{{Name: "/memory/classes/total:bytes"}, {Name: "/memory/classes/heap/released:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 || s[1].Value.Kind() != metrics.KindUint64 {
		return 0, false
	}
	mapped := int64(s[0].Value.Uint64() - s[1].Value.Uint64())
	return pages*int64(os.Getpagesize()) - mapped, true
}

var (
	// memoryBound is the bound the soft limit is tuned to (0: none).
	memoryBound  atomic.Int64
	tuneLimitOne sync.Once
)

// setMemoryLimit keeps the process's resident set within memoryLimit: it
// gives the Go runtime a soft limit below it by what the runtime does not
// count, measured now and every second after (the binary's pages and
// mapped files become resident as they are touched), unless GOMEMLIMIT
// says otherwise. Without a limit, the heap of a full remote read cache
// grew to twice the cache between collections (GOGC=100): the chunks a
// cold replay evicts kept the RSS far above the cache bound. The limit
// only makes collections come sooner near it.
func setMemoryLimit(cfg broker.Config, brokers int, log *slog.Logger) {
	if _, set := os.LookupEnv("GOMEMLIMIT"); set {
		return
	}
	bound := memoryLimit(cfg, brokers)
	if bound <= 0 {
		return
	}
	memoryBound.Store(bound)
	outside, ok := outsideRuntime()
	if !ok {
		// No resident set to measure: keep a share of the headroom for
		// the binary's pages.
		outside = memoryHeadroom / 4
	}
	limit := softLimit(bound, outside)
	debug.SetMemoryLimit(limit)
	log.Debug("memory limit", "bound", bound, "soft_limit", limit, "outside_runtime", outside)
	if ok {
		tuneLimitOne.Do(func() { go tuneMemoryLimit() })
	}
}

// tuneMemoryLimit follows what the runtime does not count, for the life of
// the process.
func tuneMemoryLimit() {
	for range time.Tick(time.Second) {
		bound := memoryBound.Load()
		outside, ok := outsideRuntime()
		if bound <= 0 || !ok {
			continue
		}
		if _, set := os.LookupEnv("GOMEMLIMIT"); set {
			return
		}
		debug.SetMemoryLimit(softLimit(bound, outside))
	}
}
