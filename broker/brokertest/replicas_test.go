package brokertest_test

import (
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/shale-log/shale/broker/brokertest"
	"github.com/shale-log/shale/localseg/recordbatch"
)

// testBatches returns the one-record batches of offsets from to to-1, the
// record at offset i of value value(i), encoded one after the other.
func testBatches(t *testing.T, from, to int, value func(i int) string) []byte {
	t.Helper()
	var log []byte
	for i := from; i < to; i++ {
		var err error
		log, err = recordbatch.Build(log, recordbatch.BuildOptions{BaseOffset: int64(i), ProducerID: recordbatch.NoProducerID,
			ProducerEpoch: recordbatch.NoProducerEpoch, BaseSequence: recordbatch.NoSequence, BaseTimestamp: 1_700_000_000_000},
			[]recordbatch.Record{{Value: []byte(value(i))}})
		if err != nil {
			t.Fatal(err)
		}
	}
	return log
}

// twoRecords is a batch of the records of offsets base and base+1.
func twoRecords(t *testing.T, base int) []byte {
	t.Helper()
	b, err := recordbatch.Build(nil, recordbatch.BuildOptions{BaseOffset: int64(base), ProducerID: recordbatch.NoProducerID,
		ProducerEpoch: recordbatch.NoProducerEpoch, BaseSequence: recordbatch.NoSequence, BaseTimestamp: 1_700_000_000_000},
		[]recordbatch.Record{{Value: []byte("a")}, {Value: []byte("b")}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestReplicaLogsDisagreeFindsDivergence: the comparison that ends the
// failover tests fails on replica logs that part, and names where; it
// passes logs that are prefixes of each other from the highest of their
// starts (the local log start of a replica after DeleteRecords, retention
// or a tiered topic's local retention), and with a bound only compares
// the batches below it.
func TestReplicaLogsDisagreeFindsDivergence(t *testing.T) {
	same := func(i int) string { return fmt.Sprintf("v%03d", i) }
	other := func(at int) func(int) string { // a different record at offset at, as long
		return func(i int) string {
			if i == at {
				return fmt.Sprintf("x%03d", i)
			}
			return same(i)
		}
	}
	full := testBatches(t, 0, 20, same)
	batchSize := len(full) / 20 // every batch is as long
	for _, tc := range []struct {
		name string
		logs [][]byte
		end  int64  // compare below it; 0: everything
		want string // in the error; "" when they agree
	}{
		{"equal", [][]byte{full, full, full}, 0, ""},
		{"one behind and one torn", [][]byte{full, testBatches(t, 0, 12, same), full[:len(full)-7]}, 0, ""},
		{"a different record at offset 15", [][]byte{full, full, testBatches(t, 0, 20, other(15))}, 0,
			"brokers 0 and 2 differ at byte " + strconv.Itoa(15*batchSize+17) + " (of 1440 and 1440 from offset 0), in the batch of offsets 15 to 15"}, // its CRC
		{"a divergent tail", [][]byte{full, append(testBatches(t, 0, 12, same), testBatches(t, 12, 20, other(12))...), full}, 0,
			"in the batch of offsets 12 to 12"},
		// The first log is the shortest: the two others part past its end.
		{"two long logs parting past a short one", [][]byte{testBatches(t, 0, 5, same), full, testBatches(t, 0, 20, other(17))}, 0,
			"brokers 1 and 2 differ at byte " + strconv.Itoa(17*batchSize+17) + " (of 1440 and 1440 from offset 0), in the batch of offsets 17 to 17"},
		{"an empty replica", [][]byte{full, nil, full}, 0, "the log of broker 1 holds no whole batch"},

		// Logs that start at different offsets are compared from the
		// highest start.
		{"different starts", [][]byte{full, testBatches(t, 7, 20, same), testBatches(t, 3, 16, same)}, 0, ""},
		{"different starts, parting past the highest", [][]byte{testBatches(t, 4, 20, other(9)), full, testBatches(t, 7, 20, same)}, 0,
			"brokers 0 and 1 differ at byte " + strconv.Itoa(5*batchSize+17) + " (of 1152 and 1152 from offset 4), in the batch of offsets 9 to 9"},
		// Below the highest start only two hold the bytes, and they part:
		// still a difference.
		{"different starts, parting below the highest", [][]byte{testBatches(t, 0, 20, other(2)), full, testBatches(t, 7, 20, same)}, 0,
			"brokers 0 and 1 differ at byte " + strconv.Itoa(2*batchSize+17) + " (of 1440 and 1440 from offset 0), in the batch of offsets 2 to 2"},
		{"a record edited on the replica with the highest start", [][]byte{full, full, testBatches(t, 10, 20, other(10))}, 0,
			"brokers 0 and 2 differ at byte 17 (of 720 and 720 from offset 10), in the batch of offsets 10 to 10"},
		{"a log that ends below another's start", [][]byte{testBatches(t, 0, 6, same), testBatches(t, 8, 20, same)}, 0,
			"the log of broker 0 (from offset 0, 432 bytes) holds no whole batch from offset 8 (broker 1's log start)"},
		// A replica whose first batch starts inside another's batch.
		{"a batch boundary where another has none", [][]byte{append(append(testBatches(t, 0, 6, same), twoRecords(t, 6)...), testBatches(t, 8, 20, same)...),
			testBatches(t, 7, 20, same)}, 0,
			"brokers 0 and 1 differ at byte 7 (of 941 and 936 from offset 7), in the batch of offsets 6 to 7"},

		// With a bound, what lies at or above it is not compared.
		{"a divergent tail at the bound", [][]byte{full, append(testBatches(t, 0, 12, same), testBatches(t, 12, 20, other(12))...)}, 12, ""},
		{"a divergent tail below the bound", [][]byte{full, append(testBatches(t, 0, 12, same), testBatches(t, 12, 20, other(12))...)}, 13,
			"(of 936 and 936 from offset 0), in the batch of offsets 12 to 12"},
		{"the bound at the highest start", [][]byte{full, testBatches(t, 8, 20, same)}, 8, "holds no whole batch from offset 8 (broker 1's log start) below offset 8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs []brokertest.ReplicaLog
			for id, b := range tc.logs {
				logs = append(logs, brokertest.ReplicaLog{Broker: id, Bytes: b})
			}
			var err error
			if tc.end > 0 {
				err = brokertest.ReplicaLogsDisagreeBelow(logs, tc.end)
			} else {
				err = brokertest.ReplicaLogsDisagree(logs)
			}
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("logs that agree were refused: %v", err)
			case tc.want != "" && err == nil:
				t.Fatalf("logs that part were accepted (want %q)", tc.want)
			case tc.want != "" && !strings.Contains(err.Error(), tc.want):
				t.Fatalf("error %q does not say %q", err, tc.want)
			}
			if err != nil {
				t.Log(err)
			}
		})
	}
}
