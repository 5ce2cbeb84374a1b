package broker

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"
	"unsafe"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// produceSeeds are Produce requests of every served version: one topic of
// one partition, several of several, null and empty records, a
// transactional id, and tagged fields where the version has them.
func produceSeeds() [][]byte {
	id := "seed"
	txn := "txn"
	var tags kmsg.Tags
	tags.Set(7, []byte("tag"))
	var frames [][]byte
	for v := int16(3); v <= 13; v++ {
		one := kmsg.NewPtrProduceRequest()
		one.Version, one.Acks, one.TimeoutMillis = v, 1, 30000
		one.Topics = []kmsg.ProduceRequestTopic{{Topic: "t", TopicID: [16]byte{1}, Partitions: []kmsg.ProduceRequestTopicPartition{{Partition: 3, Records: []byte("batch bytes")}}}}
		frames = append(frames, encodeRequest(one, 1, &id))

		many := kmsg.NewPtrProduceRequest()
		many.Version, many.Acks, many.TransactionID = v, -1, &txn
		for i := range 3 {
			t := kmsg.ProduceRequestTopic{Topic: fmt.Sprintf("topic-%d", i), TopicID: [16]byte{byte(i)}}
			for j := range i + 1 {
				p := kmsg.ProduceRequestTopicPartition{Partition: int32(j)}
				if j%2 == 1 {
					p.Records = []byte{}
				} else if i > 0 {
					p.Records = bytes.Repeat([]byte{byte(j)}, 200)
				}
				if v >= 9 && j == 0 {
					p.UnknownTags = tags
				}
				t.Partitions = append(t.Partitions, p)
			}
			if v >= 9 {
				t.UnknownTags = tags
			}
			many.Topics = append(many.Topics, t)
		}
		if v >= 9 {
			many.UnknownTags = tags
		}
		frames = append(frames, encodeRequest(many, 2, nil))

		empty := kmsg.NewPtrProduceRequest()
		empty.Version = v
		frames = append(frames, encodeRequest(empty, 3, &id))
	}
	return frames
}

// FuzzDecodeProduce: the produce decoder accepts exactly the frames kmsg
// does and reads the same request from them, with each partition's
// records lying in the frame, whatever a previous decode left in the
// request it reuses. Any frame is made a Produce request of a served
// version (its first four bytes are overwritten).
func FuzzDecodeProduce(f *testing.F) {
	for _, frame := range produceSeeds() {
		f.Add(frame)
	}
	// A request reused from one input to the next, first filled by the
	// largest seed.
	var reused kmsg.ProduceRequest
	seeds := produceSeeds()
	if _, err := decodeProduce(seeds[len(seeds)-2], "", &reused, func(b []byte) string { return string(b) }); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		if len(frame) < 4 {
			return
		}
		binary.BigEndian.PutUint16(frame, uint16(kmsg.Produce))
		v := 3 + int16(binary.BigEndian.Uint16(frame[2:])%11)
		binary.BigEndian.PutUint16(frame[2:], uint16(v))
		wantH, wantReq, wantErr := decodeRequest(frame, "seed")
		gotH, gotErr := decodeProduce(frame, "seed", &reused, func(b []byte) string { return string(b) })
		if (wantErr == nil) != (gotErr == nil) {
			t.Fatalf("v%d: kmsg: %v; decodeProduce: %v", v, wantErr, gotErr)
		}
		if gotH != wantH {
			t.Fatalf("header %+v, kmsg's %+v", gotH, wantH)
		}
		if wantErr != nil {
			return
		}
		want := wantReq.(*kmsg.ProduceRequest)
		if err := sameProduce(&reused, want, frame); err != nil {
			t.Fatalf("v%d: %v", v, err)
		}
	})
}

// sameProduce reports how got differs from want, but for unknown tags,
// and checks that got's records lie in frame.
func sameProduce(got, want *kmsg.ProduceRequest, frame []byte) error {
	if got.Version != want.Version || got.Acks != want.Acks || got.TimeoutMillis != want.TimeoutMillis {
		return fmt.Errorf("got v%d acks %d timeout %d, want v%d acks %d timeout %d",
			got.Version, got.Acks, got.TimeoutMillis, want.Version, want.Acks, want.TimeoutMillis)
	}
	if (got.TransactionID == nil) != (want.TransactionID == nil) || got.TransactionID != nil && *got.TransactionID != *want.TransactionID {
		return fmt.Errorf("transactional id %v, want %v", got.TransactionID, want.TransactionID)
	}
	if len(got.Topics) != len(want.Topics) {
		return fmt.Errorf("%d topics, want %d", len(got.Topics), len(want.Topics))
	}
	for i := range want.Topics {
		gt, wt := &got.Topics[i], &want.Topics[i]
		if gt.Topic != wt.Topic || gt.TopicID != wt.TopicID || len(gt.Partitions) != len(wt.Partitions) {
			return fmt.Errorf("topic %d: %q %x with %d partitions, want %q %x with %d",
				i, gt.Topic, gt.TopicID, len(gt.Partitions), wt.Topic, wt.TopicID, len(wt.Partitions))
		}
		for j := range wt.Partitions {
			gp, wp := &gt.Partitions[j], &wt.Partitions[j]
			if gp.Partition != wp.Partition || (gp.Records == nil) != (wp.Records == nil) || !bytes.Equal(gp.Records, wp.Records) {
				return fmt.Errorf("topic %d partition %d: %d %x, want %d %x", i, j, gp.Partition, gp.Records, wp.Partition, wp.Records)
			}
			if len(gp.Records) > 0 && !within(gp.Records, frame) {
				return fmt.Errorf("topic %d partition %d: records not in the frame", i, j)
			}
		}
	}
	return nil
}

// within reports whether s lies in b's array.
func within(s, b []byte) bool {
	start := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	p := uintptr(unsafe.Pointer(unsafe.SliceData(s)))
	return p >= start && p+uintptr(len(s)) <= start+uintptr(len(b))
}

// A request of one topic of one partition, the common case, decodes into
// the storage a produceCall gives without allocating when the broker knows
// the topic's name.
func TestDecodeProduceOfOnePartitionAllocatesNothing(t *testing.T) {
	for _, v := range []int16{3, 9, 12, 13} {
		req := kmsg.NewPtrProduceRequest()
		req.Version, req.Acks = v, 1
		req.Topics = []kmsg.ProduceRequestTopic{{Topic: "known", Partitions: []kmsg.ProduceRequestTopicPartition{{Records: []byte("records")}}}}
		frame := encodeRequest(req, 1, nil)
		var pc produceCall
		known := "known"
		name := func(b []byte) string {
			if string(b) == known {
				return known
			}
			return string(b)
		}
		if allocs := testing.AllocsPerRun(100, func() {
			pc.prepareRequest()
			if _, err := decodeProduce(frame, "", &pc.reqBuf, name); err != nil {
				t.Fatal(err)
			}
		}); allocs != 0 {
			t.Errorf("v%d: %v allocations", v, allocs)
		}
		_, want, err := decodeRequest(frame, "")
		if err != nil {
			t.Fatal(err)
		}
		if err := sameProduce(&pc.reqBuf, want.(*kmsg.ProduceRequest), frame); err != nil {
			t.Errorf("v%d: %v", v, err)
		}
	}
}
