package brokertest

import (
	"bytes"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/shale-log/shale/localseg/recordbatch"
)

// CheckReplicasAgree stops every broker (production has stopped) and
// checks that the log of partition 0 of topic on each broker that holds
// one is a prefix of the others' or the same, byte for byte, from the
// higher of every two replicas' log starts (see ReplicaLogsDisagree):
// followers keep the leader's bytes, so a divergent tail left untruncated
// on any replica (a broker that was leader, or behind one, before a
// failover) is a difference, even one that no consumer reading from the
// current leader would see. replicas are the brokers that must hold the
// log.
func (c *Cluster) CheckReplicasAgree(t testing.TB, topic string, replicas ...int32) {
	t.Helper()
	c.CheckReplicasAgreeBelow(t, topic+"-0", math.MaxInt64, replicas...)
}

// CheckReplicasAgreeBelow is CheckReplicasAgree for partition (as
// "topic-N") over the batches below offset end.
func (c *Cluster) CheckReplicasAgreeBelow(t testing.TB, partition string, end int64, replicas ...int32) {
	t.Helper()
	// What each replica held as the brokers stopped one by one: when the
	// logs disagree, it says at which stop a replica's log changed.
	var trace []string
	record := func(when string) {
		var state []string
		for _, id := range replicas {
			state = append(state, c.replicaState(id, partition))
		}
		trace = append(trace, when+": "+strings.Join(state, "; "))
	}
	record("before the stops")
	for _, nd := range c.Brokers {
		c.Stop(nd.ID)
		record(fmt.Sprintf("broker %d stopped", nd.ID))
	}
	dirs := make([]ReplicaDir, 0, len(replicas))
	for _, id := range replicas {
		dirs = append(dirs, ReplicaDir{Broker: int(id), Dir: c.Brokers[id].Dir})
	}
	if !logsAgree(t, partition, end, dirs...) {
		t.Fatalf("the replicas as the brokers stopped:\n%s", strings.Join(trace, "\n"))
	}
}

// replicaState describes broker id's replica of partition ("topic-N"): the
// log end and high watermark it serves while running, and the sizes of its
// segment files on disk.
func (c *Cluster) replicaState(id int32, partition string) string {
	nd := c.Brokers[id]
	s := fmt.Sprintf("broker %d", id)
	if nd.B != nil {
		i := strings.LastIndexByte(partition, '-')
		index, _ := strconv.Atoi(partition[i+1:])
		leo, hw, ok := nd.B.ReplicaOffsets(partition[:i], int32(index))
		s += fmt.Sprintf(" (running: hosted %v, leo %d, hw %d)", ok, leo, hw)
	}
	files, _ := filepath.Glob(filepath.Join(nd.Dir, partition, "*.log"))
	for _, f := range files {
		if fi, err := os.Stat(f); err == nil {
			s += fmt.Sprintf(" %s:%d", filepath.Base(f), fi.Size())
		}
	}
	return s
}

// ReplicaDir is the data directory of a broker that holds a replica.
type ReplicaDir struct {
	Broker int
	Dir    string
}

// CheckLogsAgree reads partition's log (as "topic-N") from every one of
// dirs, whose brokers are stopped, and fails t unless they agree below
// offset end (math.MaxInt64: everywhere), as ReplicaLogsDisagreeBelow
// says.
func CheckLogsAgree(t testing.TB, partition string, end int64, dirs ...ReplicaDir) {
	t.Helper()
	if !logsAgree(t, partition, end, dirs...) {
		t.FailNow()
	}
}

// logsAgree is CheckLogsAgree reporting a disagreement as an error of t
// and false.
func logsAgree(t testing.TB, partition string, end int64, dirs ...ReplicaDir) bool {
	t.Helper()
	logs := make([]ReplicaLog, 0, len(dirs))
	for _, d := range dirs {
		l, err := ReadReplicaLog(d.Broker, d.Dir, partition)
		if err != nil {
			t.Error(err)
			return false
		}
		logs = append(logs, l)
	}
	if err := ReplicaLogsDisagreeBelow(logs, end); err != nil {
		t.Error(err)
		return false
	}
	sizes := make([]string, len(logs))
	for i, l := range logs {
		sizes[i] = fmt.Sprintf("broker %d: %d bytes from offset %d", l.Broker, len(l.Bytes), l.Start())
	}
	bound := ""
	if end < math.MaxInt64 {
		bound = fmt.Sprintf(" below offset %d", end)
	}
	t.Logf("the replicas' logs of %s agree%s (%s)", partition, bound, strings.Join(sizes, ", "))
	return true
}

// ReplicaLog is one broker's log of a partition: its segments' bytes in
// offset order, one after the other.
type ReplicaLog struct {
	Broker int
	Bytes  []byte
}

// ReadReplicaLog reads broker's log of partition (as "topic-0") from its
// data directory (or a log directory directly under it).
func ReadReplicaLog(broker int, dataDir, partition string) (ReplicaLog, error) {
	files, _ := filepath.Glob(filepath.Join(dataDir, partition, "*.log"))
	more, _ := filepath.Glob(filepath.Join(dataDir, "*", partition, "*.log"))
	files = append(files, more...)
	if len(files) == 0 {
		return ReplicaLog{}, fmt.Errorf("broker %d holds no log of %s under %s", broker, partition, dataDir)
	}
	slices.Sort(files) // zero-padded base offsets
	l := ReplicaLog{Broker: broker}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return ReplicaLog{}, err
		}
		l.Bytes = append(l.Bytes, b...)
	}
	return l, nil
}

// Start is the base offset of the log's first batch: its local log
// start (a DeleteRecords, retention or a tiered topic's local retention
// removed the segments below it), or -1 when it holds no whole batch.
func (l ReplicaLog) Start() int64 {
	b, _, err := recordbatch.Next(l.Bytes)
	if err != nil || b == nil {
		return -1
	}
	return b.BaseOffset()
}

// ReplicaLogsDisagree returns nil when, of every two of logs, one is a
// prefix of the other (a replica may be behind, or end in a torn write)
// from the higher of their starts on, and each holds at least one whole
// batch from there; otherwise an error that names the two brokers, the
// byte where they part and the offsets of the batch it falls in.
// DeleteRecords, retention, a tiered topic's local retention and a
// replica that rejoined from the leader's log start leave replicas whose
// local logs start at different offsets: every two are compared over what
// both hold. Every pair is compared: were only the first compared with
// each other, two longer logs could part past the end of a short first.
func ReplicaLogsDisagree(logs []ReplicaLog) error {
	return ReplicaLogsDisagreeBelow(logs, math.MaxInt64)
}

// ReplicaLogsDisagreeBelow is ReplicaLogsDisagree over the batches below
// offset end only: what every replica must agree on when one may still
// hold a tail that no in-sync replica has (a leader cut off or killed
// that never rejoined, or the loser of an unclean election), which the
// high watermark bounds.
func ReplicaLogsDisagreeBelow(logs []ReplicaLog, end int64) error {
	for _, l := range logs {
		if l.Start() < 0 {
			return fmt.Errorf("the log of broker %d holds no whole batch (%d bytes): nothing to compare", l.Broker, len(l.Bytes))
		}
	}
	for i := range logs {
		for k := i + 1; k < len(logs); k++ {
			if err := pairDisagrees(logs[i], logs[k], end); err != nil {
				return err
			}
		}
	}
	return nil
}

// pairDisagrees compares a and b from the higher of their starts to end.
func pairDisagrees(x, y ReplicaLog, end int64) error {
	from, fromBroker := x.Start(), x.Broker
	if s := y.Start(); s > from {
		from, fromBroker = s, y.Broker
	}
	a, b := span(x.Bytes, from, end), span(y.Bytes, from, end)
	for _, s := range []struct {
		l ReplicaLog
		b []byte
	}{{x, a}, {y, b}} {
		if len(recordbatch.WholePrefix(s.b)) == 0 {
			bound := ""
			if end < math.MaxInt64 {
				bound = fmt.Sprintf(" below offset %d", end)
			}
			return fmt.Errorf("the log of broker %d (from offset %d, %d bytes) holds no whole batch from offset %d (broker %d's log start)%s: nothing to compare",
				s.l.Broker, s.l.Start(), len(s.l.Bytes), from, fromBroker, bound)
		}
	}
	n := min(len(a), len(b))
	j := firstDifference(a[:n], b[:n])
	if j < 0 {
		return nil
	}
	return fmt.Errorf("the logs of brokers %d and %d differ at byte %d (of %d and %d from offset %d), %s", x.Broker, y.Broker, j,
		len(a), len(b), from, batchAt(a, j))
}

// span is the part of log from the batch holding offset from (or the
// first after it) to the first batch that ends at or past offset end (or
// to the end of log, torn tail included, when it holds none).
func span(log []byte, from, end int64) []byte {
	at, start := 0, -1
	for rest := log; ; {
		batch, next, err := recordbatch.Next(rest)
		if err != nil || batch == nil {
			break
		}
		if start < 0 && batch.LastOffset() >= from {
			start = at
		}
		if batch.LastOffset() >= end {
			if start < 0 {
				return nil
			}
			return log[start:at]
		}
		at += len(batch)
		rest = next
	}
	if start < 0 {
		return nil
	}
	return log[start:]
}

// batchAt names the batch of log that holds byte pos.
func batchAt(log []byte, pos int) string {
	at := 0
	for rest := log; ; {
		batch, next, err := recordbatch.Next(rest)
		if err != nil || batch == nil {
			return fmt.Sprintf("past the last whole batch, which ends at byte %d", at)
		}
		if pos < at+len(batch) {
			return fmt.Sprintf("in the batch of offsets %d to %d (bytes %d to %d)", batch.BaseOffset(), batch.LastOffset(), at, at+len(batch))
		}
		at += len(batch)
		rest = next
	}
}

func firstDifference(a, b []byte) int {
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}

// RewriteValue rewrites, in broker's log of partition under dataDir, the
// value old of the batch whose base offset is base to value, as long,
// and recomputes the batch's CRC: a log a broker would serve, which no
// longer holds what the others do. old is found with its length prefix,
// so that it cannot match the batch's header.
func RewriteValue(t testing.TB, dataDir, partition string, base int64, old, value string) {
	t.Helper()
	if len(old) != len(value) || len(old) > 63 {
		t.Fatalf("RewriteValue: %q and %q: want values as long, under 64 bytes", old, value)
	}
	files, _ := filepath.Glob(filepath.Join(dataDir, partition, "*.log"))
	more, _ := filepath.Glob(filepath.Join(dataDir, "*", partition, "*.log"))
	for _, f := range append(files, more...) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for rest := b; ; {
			batch, next, err := recordbatch.Next(rest)
			if err != nil || batch == nil {
				break
			}
			if batch.BaseOffset() == base {
				prefix := []byte{byte(len(old) << 1)} // the value's length, a zigzag varint
				v := bytes.Index(batch[recordbatch.HeaderSize:], append(prefix, old...))
				if v < 0 {
					t.Fatalf("the batch of offset %d in %s holds no value %q", base, f, old)
				}
				copy(batch[recordbatch.HeaderSize+v+1:], value)
				batch.SetMaxTimestamp(batch.MaxTimestamp()) // recomputes the CRC
				if err := recordbatch.Check(batch); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(f, b, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			rest = next
		}
	}
	t.Fatalf("no batch of base offset %d in the log of %s under %s", base, partition, dataDir)
}
