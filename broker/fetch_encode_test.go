package broker

import (
	"bytes"
	"math"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/localseg"
	"github.com/shale-log/shale/localseg/recordbatch"
)

// materialize turns a raw response into the bytes the connection would
// send after the response header.
func materialize(t *testing.T, raw *rawResponse) []byte {
	t.Helper()
	var out []byte
	prev := 0
	for i := range raw.cuts {
		c := &raw.cuts[i]
		out = append(out, raw.body[prev:c.at]...)
		b, err := c.rng.Bytes()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b...)
		prev = c.at
	}
	return append(out, raw.body[prev:]...)
}

// TestEncodeFetchMatchesKmsg checks the sendfile encoder byte for byte
// against kmsg's encoding of the same response, at every fetch version.
func TestEncodeFetchMatchesKmsg(t *testing.T) {
	log, err := localseg.Open(t.TempDir(), localseg.Config{}, localseg.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	for i := 0; i < 3; i++ {
		b, _ := recordbatch.Build(nil, recordbatch.BuildOptions{ProducerID: -1, ProducerEpoch: -1, BaseSequence: -1},
			[]recordbatch.Record{{Value: []byte("hello")}, {Value: []byte("world")}})
		if _, err := log.AppendAsLeader(b, 0); err != nil {
			t.Fatal(err)
		}
	}
	rack := "r1"
	for v := int16(4); v <= 18; v++ {
		rng, err := log.Read(0, 1<<20, math.MaxInt64, true)
		if err != nil {
			t.Fatal(err)
		}
		records, _ := rng.Bytes()

		want := kmsg.NewPtrFetchResponse()
		want.Version = v
		want.ThrottleMillis, want.ErrorCode, want.SessionID = 5, 0, 77
		if v >= 16 {
			want.Brokers = []kmsg.FetchResponseBroker{{NodeID: 1, Host: "h", Port: 9092, Rack: &rack}}
		}
		mk := func(p int32, recs []byte, errCode int16) kmsg.FetchResponseTopicPartition {
			fp := kmsg.NewFetchResponseTopicPartition()
			fp.Partition, fp.ErrorCode, fp.HighWatermark, fp.LastStableOffset, fp.LogStartOffset = p, errCode, 6, 6, 0
			fp.RecordBatches = recs
			if errCode != 0 && v >= 12 {
				fp.CurrentLeader.LeaderID, fp.CurrentLeader.LeaderEpoch = 1, 3
			}
			if p == 2 {
				fp.AbortedTransactions = []kmsg.FetchResponseTopicPartitionAbortedTransaction{{ProducerID: 9, FirstOffset: 1}}
			}
			return fp
		}
		want.Topics = []kmsg.FetchResponseTopic{
			{Topic: "a", TopicID: [16]byte{1}, Partitions: []kmsg.FetchResponseTopicPartition{mk(0, records, 0), mk(1, []byte{}, 6), mk(2, []byte{}, 0)}},
			{Topic: "b", TopicID: [16]byte{2}, Partitions: []kmsg.FetchResponseTopicPartition{mk(0, []byte{}, 0)}},
		}
		for ti := range want.Topics {
			for pi := range want.Topics[ti].Partitions {
				want.Topics[ti].Partitions[pi].UnknownTags = kmsg.Tags{}
			}
		}

		// The same response for the encoder, with a file range for the
		// records.
		var topics []fetchTopic
		for ti, wt := range want.Topics {
			ft := fetchTopic{name: wt.Topic, id: wt.TopicID}
			for pi, wp := range wt.Partitions {
				fp := fetchPart{FetchResponseTopicPartition: wp}
				if ti == 0 && pi == 0 {
					fp.rng = rng
				}
				ft.parts = append(ft.parts, fp)
			}
			topics = append(topics, ft)
		}
		top := kmsg.NewPtrFetchResponse()
		top.ThrottleMillis, top.SessionID, top.Brokers = want.ThrottleMillis, want.SessionID, want.Brokers
		raw := encodeFetch(v, top, topics)
		got := materialize(t, raw)
		raw.release()
		exp := want.AppendTo(nil)
		if !bytes.Equal(got, exp) {
			t.Fatalf("v%d: encodings differ\n got %x\nwant %x", v, got, exp)
		}
		// And kmsg reads it back.
		back := kmsg.FetchResponse{Version: v}
		if err := back.ReadFrom(got); err != nil {
			t.Fatalf("v%d: %v", v, err)
		}
	}
}
