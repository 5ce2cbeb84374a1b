package broker

import (
	"math"
	"testing"

	"github.com/shale-log/shale/localseg/recordbatch"
)

// TestCheckTimestampsUsesTheRecords: the bounds apply to the records'
// timestamps (the header's are only claims), skip records without one, and
// hold at the extremes of int64.
func TestCheckTimestampsUsesTheRecords(t *testing.T) {
	const now = 1_700_000_000_000
	day := int64(24 * 3600 * 1000)
	cfg := &topicConfig{timestampBeforeMax: day, timestampAfterMax: day}
	unbounded := &topicConfig{timestampBeforeMax: math.MaxInt64, timestampAfterMax: math.MaxInt64}
	for _, c := range []struct {
		name     string
		min, max int64
		cfg      *topicConfig
		ok       bool
	}{
		{"within", now - day, now + day, cfg, true},
		{"one too old", now - day - 1, now, cfg, false},
		{"one too new", now, now + day + 1, cfg, false},
		{"no timestamps", recordbatch.NoTimestamp, recordbatch.NoTimestamp, cfg, true},
		{"negative", -5, now, cfg, false},
		{"most negative", math.MinInt64, now, cfg, false},
		{"largest", now, math.MaxInt64, cfg, false},
		{"unbounded", -1 << 62, math.MaxInt64, unbounded, true},
	} {
		err := checkTimestamps(recordbatch.Summary{Records: 2, MinTimestamp: c.min, MaxTimestamp: c.max}, now, c.cfg)
		if (err == nil) != c.ok {
			t.Errorf("%s: %v, want ok=%v", c.name, err, c.ok)
		}
	}
}
