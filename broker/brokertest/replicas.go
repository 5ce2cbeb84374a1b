package brokertest

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/shale-log/shale/localseg/recordbatch"
)

// CheckReplicasAgree stops every broker (production has stopped) and
// checks that the log of partition 0 of topic on each broker that holds
// one is a prefix of the others' or the same, byte for byte: followers
// keep the leader's bytes, so a divergent tail left untruncated on any
// replica (a broker that was leader, or behind one, before a failover)
// is a difference, even one that no consumer reading from the current
// leader would see. replicas are the brokers that must hold the log.
func (c *Cluster) CheckReplicasAgree(t testing.TB, topic string, replicas ...int32) {
	t.Helper()
	for _, nd := range c.Brokers {
		c.Stop(nd.ID)
	}
	logs := make([]ReplicaLog, 0, len(replicas))
	for _, id := range replicas {
		l, err := ReadReplicaLog(int(id), c.Brokers[id].Dir, topic+"-0")
		if err != nil {
			t.Fatal(err)
		}
		logs = append(logs, l)
	}
	if err := ReplicaLogsDisagree(logs); err != nil {
		t.Fatal(err)
	}
	sizes := make([]string, len(logs))
	for i, l := range logs {
		sizes[i] = fmt.Sprintf("broker %d: %d bytes", l.Broker, len(l.Bytes))
	}
	t.Logf("the replicas' logs of %s-0 agree (%s)", topic, strings.Join(sizes, ", "))
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

// ReplicaLogsDisagree returns nil when, of every two of logs, one is a
// prefix of the other (a replica may be behind, or end in a torn write),
// and each holds at least one whole batch; otherwise an error that names
// the two brokers, the byte where they part and the offsets of the batch
// it falls in. Every pair is compared: were only the first compared with
// each other, two longer logs could part past the end of a short first.
func ReplicaLogsDisagree(logs []ReplicaLog) error {
	for _, l := range logs {
		if len(recordbatch.WholePrefix(l.Bytes)) == 0 {
			return fmt.Errorf("the log of broker %d holds no whole batch (%d bytes): nothing to compare", l.Broker, len(l.Bytes))
		}
	}
	for i := range logs {
		for k := i + 1; k < len(logs); k++ {
			a, b := logs[i], logs[k]
			n := min(len(a.Bytes), len(b.Bytes))
			j := firstDifference(a.Bytes[:n], b.Bytes[:n])
			if j < 0 {
				continue
			}
			return fmt.Errorf("the logs of brokers %d and %d differ at byte %d (of %d and %d), %s", a.Broker, b.Broker, j,
				len(a.Bytes), len(b.Bytes), batchAt(a.Bytes, j))
		}
	}
	return nil
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
