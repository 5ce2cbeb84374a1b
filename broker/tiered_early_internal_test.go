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

// A log this process created while the partition was unarchived has lost
// nothing it was given, empty or not: a clean term of it appends before
// the manifest is read, an unclean one does not.
func TestAppendsBeforeManifestOnALogCreatedHere(t *testing.T) {
	const self = 1
	for _, tc := range []struct {
		name    string
		records int
		l       leadership
		want    bool
	}{
		{"three replicas, empty", 0, leadership{leader: self, leaderEpoch: 2, replicas: []int32{1, 2, 3}, isr: []int32{1, 2}}, true},
		{"three replicas, copied records", 1, leadership{leader: self, leaderEpoch: 2, replicas: []int32{1, 2, 3}, isr: []int32{1, 2}}, true},
		{"elected uncleanly", 1, leadership{leader: self, leaderEpoch: 2, replicas: []int32{1, 2}, isr: []int32{1}, uncleanEpoch: 2}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			log, err := localseg.Open(t.TempDir(), localseg.Config{}, localseg.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer log.Close()
			for range tc.records {
				if _, err := log.AppendAsFollower(oneRecordBatch(t, "copied")); err != nil {
					t.Fatal(err)
				}
			}
			p := newPartition("t", [16]byte{1}, 0, self, log, &topicConfig{})
			p.sinceCreation = true
			p.setLeadership(tc.l)
			if got := appendsBeforeManifest(p); got != tc.want {
				t.Fatalf("appendsBeforeManifest = %v, want %v", got, tc.want)
			}
		})
	}
}

// A log this process created for a partition whose records are in the
// bucket (a replica whose disk was lost, restored at the bucket's end and
// caught up, then elected from the ISR during an outage) has lost nothing
// it was given either: once it holds records, a clean term of it appends
// before the manifest is read. Empty, it waits, to continue where the
// bucket ends; elected uncleanly, it waits.
func TestAppendsBeforeManifestOnAnArchivedLogCreatedHere(t *testing.T) {
	const self = 1
	for _, tc := range []struct {
		name    string
		records int
		l       leadership
		want    bool
	}{
		{"three replicas, restored and caught up", 2, leadership{leader: self, leaderEpoch: 3, replicas: []int32{1, 2, 3}, isr: []int32{1, 2}}, true},
		{"three replicas, empty", 0, leadership{leader: self, leaderEpoch: 3, replicas: []int32{1, 2, 3}, isr: []int32{1, 2}}, false},
		{"elected uncleanly", 2, leadership{leader: self, leaderEpoch: 3, replicas: []int32{1, 2}, isr: []int32{1}, uncleanEpoch: 3}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			log, err := localseg.Open(t.TempDir(), localseg.Config{}, localseg.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer log.Close()
			if tc.records > 0 {
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
			p.createdHere = true
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
