package localseg

import (
	"fmt"
	"strconv"
	"strings"
)

const epochCheckpointFile = "leader-epoch-checkpoint"

// epochCache is the leader-epoch checkpoint in memory: for each leader
// epoch that wrote to the log, the first offset it wrote, ascending in both.
// Guarded by the log's mu.
type epochCache struct {
	entries []EpochEntry
}

func (c *epochCache) clone() epochCache {
	return epochCache{entries: append([]EpochEntry(nil), c.entries...)}
}

func (c *epochCache) latest() (EpochEntry, bool) {
	if len(c.entries) == 0 {
		return EpochEntry{}, false
	}
	return c.entries[len(c.entries)-1], true
}

// assign records that epoch started writing at offset. Older or equal
// epochs change nothing; an entry at or past offset from an older epoch is
// replaced (it never wrote anything).
func (c *epochCache) assign(epoch int32, offset int64) bool {
	if epoch < 0 {
		return false
	}
	if last, ok := c.latest(); ok && epoch <= last.Epoch {
		return false
	}
	for len(c.entries) > 0 && c.entries[len(c.entries)-1].StartOffset >= offset {
		c.entries = c.entries[:len(c.entries)-1]
	}
	c.entries = append(c.entries, EpochEntry{Epoch: epoch, StartOffset: offset})
	return true
}

// truncateFromEnd removes epochs that start at or after end.
func (c *epochCache) truncateFromEnd(end int64) bool {
	n := len(c.entries)
	for n > 0 && c.entries[n-1].StartOffset >= end {
		n--
	}
	changed := n != len(c.entries)
	c.entries = c.entries[:n]
	return changed
}

// truncateFromStart drops epochs wholly below start; the epoch containing
// start is kept, moved to start.
func (c *epochCache) truncateFromStart(start int64) bool {
	i := 0
	for i+1 < len(c.entries) && c.entries[i+1].StartOffset <= start {
		i++
	}
	changed := i > 0
	c.entries = c.entries[i:]
	if len(c.entries) > 0 && c.entries[0].StartOffset < start {
		c.entries[0].StartOffset = start
		changed = true
	}
	return changed
}

// endOffsetFor answers OffsetForLeaderEpoch as Kafka's
// LeaderEpochFileCache.endOffsetFor does.
func (c *epochCache) endOffsetFor(epoch int32, logEnd int64) (int32, int64, bool) {
	last, ok := c.latest()
	if epoch < 0 || !ok {
		return -1, -1, false
	}
	if epoch == last.Epoch {
		return last.Epoch, logEnd, true
	}
	higher := -1
	for i, e := range c.entries {
		if e.Epoch > epoch {
			higher = i
			break
		}
	}
	if higher < 0 {
		return -1, -1, false // newer than any epoch we know
	}
	if higher == 0 {
		// Older than every epoch: the start of the first later one.
		return epoch, c.entries[0].StartOffset, true
	}
	return c.entries[higher-1].Epoch, c.entries[higher].StartOffset, true
}

func (c *epochCache) encode() []byte {
	lines := []string{strconv.Itoa(len(c.entries))}
	for _, e := range c.entries {
		lines = append(lines, fmt.Sprintf("%d %d", e.Epoch, e.StartOffset))
	}
	return encodeCheckpoint("leader-epoch", 1, lines)
}

func decodeEpochCache(data []byte) (epochCache, error) {
	lines, err := decodeCheckpoint("leader-epoch", 1, data)
	if err != nil {
		return epochCache{}, err
	}
	if len(lines) == 0 {
		return epochCache{}, fmt.Errorf("%w: leader-epoch: empty", errBadCheckpoint)
	}
	n, err := strconv.Atoi(lines[0])
	if err != nil || n != len(lines)-1 {
		return epochCache{}, fmt.Errorf("%w: leader-epoch: bad count", errBadCheckpoint)
	}
	var c epochCache
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		if len(f) != 2 {
			return epochCache{}, fmt.Errorf("%w: leader-epoch: bad line %q", errBadCheckpoint, l)
		}
		e, err1 := strconv.ParseInt(f[0], 10, 32)
		o, err2 := strconv.ParseInt(f[1], 10, 64)
		if err1 != nil || err2 != nil || e < 0 || o < 0 {
			return epochCache{}, fmt.Errorf("%w: leader-epoch: bad line %q", errBadCheckpoint, l)
		}
		if last, ok := c.latest(); ok && (int32(e) <= last.Epoch || o < last.StartOffset) {
			return epochCache{}, fmt.Errorf("%w: leader-epoch: entries out of order", errBadCheckpoint)
		}
		c.entries = append(c.entries, EpochEntry{Epoch: int32(e), StartOffset: o})
	}
	return c, nil
}
