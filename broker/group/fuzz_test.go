package group

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/localseg/recordbatch"
)

// Bytes read back from __consumer_offsets are outside input (another tool
// may have written the topic, a disk may have rotted): decoding and
// replaying them must never panic. Seeds live in testdata/fuzz.

func FuzzDecodeRecord(f *testing.F) {
	e := &offsetEntry{offset: 5, leaderEpoch: 2, metadata: "m", commitTs: 7, expireTs: -1}
	f.Add(appendOffsetKey(nil, "g", topicPartition{"t", 1}), appendOffsetValue(nil, e))
	e.expireTs = 9
	f.Add(appendOffsetKey(nil, "g", topicPartition{"t", 1}), appendOffsetValue(nil, e))
	f.Add(appendGroupKey(nil, "g"), sampleGroupValue().AppendTo(nil))
	f.Add(appendConsumerGroupKey(nil, "cg"), appendConsumerGroupValue(nil, 4))
	f.Add(appendGroupKey(nil, "g"), []byte(nil))
	f.Fuzz(func(t *testing.T, key, value []byte) {
		d, err := decodeRecord(key, value)
		if err != nil {
			return
		}
		// What decodes re-encodes (for the kinds we write).
		switch {
		case d.kind == keyOffsetCommit && !d.tombstone:
			if _, err := decodeRecord(appendOffsetKey(nil, d.group, d.tp), appendOffsetValue(nil, &d.offset)); err != nil {
				t.Fatalf("re-encoded offset does not decode: %v", err)
			}
		case d.kind == keyGroupMetadata && !d.tombstone:
			if _, err := decodeRecord(key, d.classic.AppendTo(nil)); err != nil {
				t.Fatalf("re-encoded group does not decode: %v", err)
			}
		}
	})
}

func sampleGroupValue() *groupValue {
	v := new(kmsg.GroupMetadataValue)
	v.Default()
	v.Version = 3
	v.ProtocolType = "consumer"
	v.Generation = 3
	v.Protocol, v.Leader = strPtr("range"), strPtr("m1")
	m := kmsg.NewGroupMetadataValueMember()
	m.MemberID, m.InstanceID, m.ClientID, m.ClientHost = "m1", strPtr("i1"), "c", "/h"
	m.SessionTimeoutMillis, m.RebalanceTimeoutMillis = 10000, 30000
	m.Subscription, m.Assignment = subscription("t"), []byte{0, 1}
	v.Members = []kmsg.GroupMetadataValueMember{m}
	return v
}

// FuzzReplayBatch loads an arbitrary batch as if it were the partition's
// log: no panic, and the shard's accounting stays sane.
func FuzzReplayBatch(f *testing.F) {
	recs := []recordbatch.Record{
		{Key: appendOffsetKey(nil, "g", topicPartition{"t", 0}), Value: appendOffsetValue(nil, &offsetEntry{offset: 1, expireTs: -1})},
		{Key: appendGroupKey(nil, "g"), Value: sampleGroupValue().AppendTo(nil)},
		{Key: appendConsumerGroupKey(nil, "cg"), Value: appendConsumerGroupValue(nil, 2)},
		{Key: appendOffsetKey(nil, "g", topicPartition{"t", 0})},
		{Key: appendGroupKey(nil, "g2"), Value: []byte{0, 3, 0, 0}},
	}
	for _, codec := range []recordbatch.Codec{recordbatch.CodecNone, recordbatch.CodecGzip, recordbatch.CodecZstd} {
		b, err := recordbatch.Build(nil, recordbatch.BuildOptions{Codec: codec, ProducerID: -1}, recs)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	// A transaction's offsets, then its marker (and one that is not a
	// transaction marker), as one log.
	txn, err := recordbatch.Build(nil, recordbatch.BuildOptions{BaseOffset: 10, Transactional: true, ProducerID: 7, ProducerEpoch: 1}, recs[:1])
	if err != nil {
		f.Fatal(err)
	}
	for _, typ := range []kmsg.ControlRecordKeyType{controlCommit, controlAbort, 3} {
		key := kmsg.ControlRecordKey{Type: typ}
		value := kmsg.EndTxnMarker{CoordinatorEpoch: 1}
		marker, err := recordbatch.Build(txn[:len(txn):len(txn)], recordbatch.BuildOptions{BaseOffset: 11, Transactional: true, Control: true, ProducerID: 7, ProducerEpoch: 1},
			[]recordbatch.Record{{Key: key.AppendTo(nil), Value: value.AppendTo(nil)}})
		if err != nil {
			f.Fatal(err)
		}
		f.Add(marker)
	}
	c, err := New(testConfig(), Options{Clock: newFakeClock(), Logger: quietLogger()})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s := newShard(c, 0, nil)
		for len(data) > 0 {
			b, rest, err := recordbatch.Next(data)
			if err != nil {
				break
			}
			s.replayBatch(b)
			data = rest
		}
		s.finishLoad()
		if s.liveBytes < 0 {
			t.Fatalf("negative live bytes %d", s.liveBytes)
		}
		for _, e := range s.groups {
			if (e.classic == nil) == (e.consumer == nil) {
				t.Fatalf("group %q is neither or both kinds", e.id)
			}
			for producer := range e.txnOffsets {
				if _, ok := s.openTxns[producer][e.id]; !ok {
					t.Fatalf("group %q holds offsets of producer %d, which does not list it", e.id, producer)
				}
			}
		}
		for producer, groups := range s.openTxns {
			for id := range groups {
				if e := s.groups[id]; e == nil || len(e.txnOffsets[producer]) == 0 {
					t.Fatalf("producer %d lists group %q without offsets there", producer, id)
				}
			}
		}
		for t := range s.timers {
			t.t.Stop()
		}
	})
}

// FuzzDecodeMarker: the key of a control record read back on load.
func FuzzDecodeMarker(f *testing.F) {
	for _, typ := range []kmsg.ControlRecordKeyType{controlAbort, controlCommit, 3} {
		k := kmsg.ControlRecordKey{Type: typ}
		f.Add(k.AppendTo(nil))
	}
	f.Add([]byte{0, 1, 0, 1, 0xff})
	f.Add([]byte{0xff, 0xff, 0, 0})
	f.Add([]byte{0, 0, 1})
	f.Fuzz(func(t *testing.T, key []byte) {
		commit, ok, err := decodeMarker(key)
		if err != nil && (ok || commit) {
			t.Fatal("a marker returned with an error")
		}
		if commit && !ok {
			t.Fatal("a commit that is not a marker")
		}
		if ok {
			var k kmsg.ControlRecordKey
			if err := k.ReadFrom(key[:4]); err != nil || k.Version < 0 || (k.Type == controlCommit) != commit {
				t.Fatalf("kmsg reads %+v (%v), we read commit %t", k, err, commit)
			}
		}
	})
}

// FuzzParseSubscription: the consumer protocol metadata members send in
// JoinGroup, parsed for offset expiry and OffsetDelete.
func FuzzParseSubscription(f *testing.F) {
	f.Add(subscription("a", "b"))
	m := kmsg.NewConsumerMemberMetadata()
	m.Version = 3
	m.Topics = []string{"x"}
	m.OwnedPartitions = []kmsg.ConsumerMemberMetadataOwnedPartition{{Topic: "x", Partitions: []int32{1}}}
	m.Generation = 4
	m.Rack = strPtr("r")
	f.Add(m.AppendTo(nil))
	f.Add([]byte{0, 0, 0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		topics, ok := parseSubscription(b)
		if !ok && topics != nil {
			t.Fatal("topics returned with a failure")
		}
	})
}
