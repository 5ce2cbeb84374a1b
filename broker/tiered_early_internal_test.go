package broker

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/shale-log/shale/localseg"
	"github.com/shale-log/shale/localseg/recordbatch"
)

// oneRecordBatch is a batch of one record with value v.
func oneRecordBatch(t *testing.T, v string) recordbatch.Batch {
	t.Helper()
	b, err := recordbatch.Build(nil, recordbatch.BuildOptions{ProducerID: -1, ProducerEpoch: -1, BaseSequence: -1, BaseTimestamp: time.Now().UnixMilli()},
		[]recordbatch.Record{{Value: []byte(v)}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestAppendsBeforeManifestOnlyWhereTheLogHoldsTheRemoteEnd: a tiered
// leader appends before it has read its manifest only when its log is
// sure to reach the bucket's end: it has held records, its term began
// with a clean election, and it either was closed cleanly or is the
// partition's only replica (which uploads only what it fsynced).
func TestAppendsBeforeManifestOnlyWhereTheLogHoldsTheRemoteEnd(t *testing.T) {
	const self = 1
	open := func(t *testing.T, dir string) *localseg.Log {
		t.Helper()
		log, err := localseg.Open(dir, localseg.Config{}, localseg.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return log
	}
	// written is a log dir holding one batch, closed cleanly or not.
	written := func(t *testing.T, clean bool) string {
		t.Helper()
		dir := t.TempDir()
		log := open(t, dir)
		if _, err := log.AppendAsLeader(oneRecordBatch(t, "v"), 1); err != nil {
			t.Fatal(err)
		}
		if err := log.Close(); err != nil {
			t.Fatal(err)
		}
		if !clean {
			// What a crash leaves: the log without its marker.
			if err := os.Remove(filepath.Join(dir, ".clean-shutdown")); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	for _, tc := range []struct {
		name     string
		dir      func(t *testing.T) string // the log's directory
		l        leadership
		want     bool
		wantOpen bool // the log says it was opened clean
	}{
		{"closed cleanly, three replicas", func(t *testing.T) string { return written(t, true) },
			leadership{leader: self, leaderEpoch: 2, replicas: []int32{1, 2, 3}, isr: []int32{1, 2}}, true, true},
		{"crashed, the only replica", func(t *testing.T) string { return written(t, false) },
			leadership{leader: self, leaderEpoch: 2, replicas: []int32{1}, isr: []int32{1}}, true, false},
		{"crashed, three replicas", func(t *testing.T) string { return written(t, false) },
			leadership{leader: self, leaderEpoch: 2, replicas: []int32{1, 2, 3}, isr: []int32{1}}, false, false},
		{"closed cleanly, elected uncleanly", func(t *testing.T) string { return written(t, true) },
			leadership{leader: self, leaderEpoch: 2, replicas: []int32{1, 2}, isr: []int32{1}, uncleanEpoch: 2}, false, true},
		{"closed cleanly, an older term was unclean", func(t *testing.T) string { return written(t, true) },
			leadership{leader: self, leaderEpoch: 3, replicas: []int32{1, 2}, isr: []int32{1}, uncleanEpoch: 2}, true, true},
		{"an empty log (new, or its disk lost)", func(t *testing.T) string { return t.TempDir() },
			leadership{leader: self, leaderEpoch: 2, replicas: []int32{1}, isr: []int32{1}}, false, false},
		{"its segments lost after its start moved, the only replica", func(t *testing.T) string {
			dir := written(t, false)
			log := open(t, dir)
			if err := log.SetLogStartOffset(1); err != nil {
				t.Fatal(err)
			}
			log.Close()
			segs, _ := filepath.Glob(filepath.Join(dir, "*.log"))
			for _, f := range segs {
				if err := os.Remove(f); err != nil {
					t.Fatal(err)
				}
			}
			return dir
		}, leadership{leader: self, leaderEpoch: 2, replicas: []int32{1}, isr: []int32{1}}, false, false},
		{"a follower", func(t *testing.T) string { return written(t, true) },
			leadership{leader: 2, leaderEpoch: 2, replicas: []int32{1, 2}, isr: []int32{1, 2}}, false, true},
		// Nothing in the bucket: any log is consistent with it.
		{"unarchived, an empty log", func(t *testing.T) string { return t.TempDir() },
			leadership{leader: self, leaderEpoch: 0, replicas: []int32{1, 2, 3}, isr: []int32{1, 2, 3}, unarchived: true}, true, false},
		{"unarchived, crashed, elected uncleanly", func(t *testing.T) string { return written(t, false) },
			leadership{leader: self, leaderEpoch: 2, replicas: []int32{1, 2}, isr: []int32{1}, uncleanEpoch: 2, unarchived: true}, true, false},
		{"unarchived, a follower", func(t *testing.T) string { return t.TempDir() },
			leadership{leader: 2, leaderEpoch: 0, replicas: []int32{1, 2}, isr: []int32{1, 2}, unarchived: true}, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			log := open(t, tc.dir(t))
			defer log.Close()
			if log.OpenedClean() != tc.wantOpen {
				t.Fatalf("OpenedClean %v, want %v", log.OpenedClean(), tc.wantOpen)
			}
			p := newPartition("t", [16]byte{1}, 0, self, log, &topicConfig{})
			p.setLeadership(tc.l)
			if got := appendsBeforeManifest(p); got != tc.want {
				t.Fatalf("appendsBeforeManifest = %v, want %v", got, tc.want)
			}
		})
	}
}

// A log this process created has lost nothing it was given. Created while
// the partition was unarchived (sinceCreation), empty or not, a clean term
// of it appends before the manifest is read. Created for a partition whose
// records are in the bucket (createdHere: a replica whose disk was lost,
// restored at the bucket's end and caught up, then elected from the ISR
// during an outage), it does once it holds records; empty, it waits, to
// continue where the bucket ends. Elected uncleanly, neither does.
func TestAppendsBeforeManifestOnALogCreatedHere(t *testing.T) {
	const self = 1
	three := leadership{leader: self, leaderEpoch: 2, replicas: []int32{1, 2, 3}, isr: []int32{1, 2}}
	unclean := leadership{leader: self, leaderEpoch: 2, replicas: []int32{1, 2}, isr: []int32{1}, uncleanEpoch: 2}
	for _, tc := range []struct {
		name     string
		archived bool // createdHere; otherwise sinceCreation
		records  int
		l        leadership
		want     bool
	}{
		{"unarchived, three replicas, empty", false, 0, three, true},
		{"unarchived, three replicas, copied records", false, 1, three, true},
		{"unarchived, elected uncleanly", false, 1, unclean, false},
		{"archived, three replicas, restored and caught up", true, 2, three, true},
		{"archived, three replicas, empty", true, 0, three, false},
		{"archived, elected uncleanly", true, 2, unclean, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			log, err := localseg.Open(t.TempDir(), localseg.Config{}, localseg.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer log.Close()
			if tc.archived && tc.records > 0 {
				// Restored where the bucket ended, then fetched.
				if err := log.TruncateFullyAndStartAt(500); err != nil {
					t.Fatal(err)
				}
			}
			for range tc.records {
				b := oneRecordBatch(t, "copied")
				b.SetBaseOffset(log.LogEndOffset())
				if _, err := log.AppendAsFollower(b); err != nil {
					t.Fatal(err)
				}
			}
			p := newPartition("t", [16]byte{1}, 0, self, log, &topicConfig{})
			p.sinceCreation, p.createdHere = !tc.archived, true
			p.setLeadership(tc.l)
			if got := appendsBeforeManifest(p); got != tc.want {
				t.Fatalf("appendsBeforeManifest = %v, want %v", got, tc.want)
			}
		})
	}
}

// A term that begins syncs what the log holds (syncOnLead): records a
// follower copied, never fsynced, reach stable storage.
func TestANewTermSyncsWhatTheLogHolds(t *testing.T) {
	log, err := localseg.Open(t.TempDir(), localseg.Config{}, localseg.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	if _, err := log.AppendAsFollower(oneRecordBatch(t, "copied")); err != nil {
		t.Fatal(err)
	}
	if rp := log.RecoveryPoint(); rp != 0 {
		t.Fatalf("recovery point %d before the term, want 0 (nothing synced)", rp)
	}
	p := newPartition("t", [16]byte{1}, 0, 1, log, &topicConfig{})
	syncOnLead(p)
	for deadline := time.Now().Add(10 * time.Second); log.RecoveryPoint() != 1; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("recovery point %d after the term began, want 1", log.RecoveryPoint())
		}
	}
}

// A log that crashed (not opened clean) appends before the manifest is
// read once this process has seen the ISR take it in again: the leader
// takes in only a follower that holds everything below the high
// watermark, and so everything uploaded. The tiered cluster soak stalled
// without it: a follower back from a machine crash, caught up and in the
// ISR, was elected while the object store was frozen and could not take
// produce until the store came back. One the ISR named from this
// process's first metadata on (it never left: a process crash) still
// waits.
func TestAppendsBeforeManifestOnceTheISRTookTheLogInAgain(t *testing.T) {
	const self = 1
	for _, tc := range []struct {
		name  string
		terms []leadership
		want  bool
	}{
		{"out of the ISR, taken in, then elected", []leadership{
			{leader: 2, leaderEpoch: 2, replicas: []int32{1, 2, 3}, isr: []int32{2, 3}, partitionEpoch: 5},
			{leader: 2, leaderEpoch: 2, replicas: []int32{1, 2, 3}, isr: []int32{2, 3, 1}, partitionEpoch: 6},
			{leader: self, leaderEpoch: 3, replicas: []int32{1, 2, 3}, isr: []int32{3, 1}, partitionEpoch: 7},
		}, true},
		{"in the ISR from the first metadata, then elected", []leadership{
			{leader: 2, leaderEpoch: 2, replicas: []int32{1, 2, 3}, isr: []int32{2, 3, 1}, partitionEpoch: 5},
			{leader: self, leaderEpoch: 3, replicas: []int32{1, 2, 3}, isr: []int32{3, 1}, partitionEpoch: 6},
		}, false},
		{"out of the ISR, elected uncleanly", []leadership{
			{leader: 2, leaderEpoch: 2, replicas: []int32{1, 2, 3}, isr: []int32{2}, partitionEpoch: 5},
			{leader: self, leaderEpoch: 3, replicas: []int32{1, 2, 3}, isr: []int32{1}, partitionEpoch: 6, uncleanEpoch: 3},
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			log, err := localseg.Open(dir, localseg.Config{}, localseg.Options{})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := log.AppendAsLeader(oneRecordBatch(t, "v"), 1); err != nil {
				t.Fatal(err)
			}
			log.Close()
			// What a crash leaves: the log without its marker.
			if err := os.Remove(filepath.Join(dir, ".clean-shutdown")); err != nil {
				t.Fatal(err)
			}
			if log, err = localseg.Open(dir, localseg.Config{}, localseg.Options{}); err != nil {
				t.Fatal(err)
			}
			defer log.Close()
			p := newPartition("t", [16]byte{1}, 0, self, log, &topicConfig{})
			for _, l := range tc.terms {
				p.setLeadership(l)
			}
			if got := appendsBeforeManifest(p); got != tc.want {
				t.Fatalf("appendsBeforeManifest = %v, want %v", got, tc.want)
			}
		})
	}
}
