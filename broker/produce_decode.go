package broker

import (
	"fmt"

	"github.com/twmb/franz-go/pkg/kbin"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// decodeProduce parses a Produce request frame (whose key and version
// groupableProduce accepted) into dst, as decodeRequest does with kmsg,
// but without allocating in the common case: dst's arrays are reused when
// they are large enough (a produceCall gives storage for one topic of one
// partition), a topic name is the broker's own string for it when the
// broker knows the topic (topicName), and each partition's records are a
// sub-slice of the frame, as with kmsg. Unknown tagged fields are skipped,
// not kept. It accepts and refuses exactly the frames kmsg does
// (FuzzDecodeProduce).
func decodeProduce(frame []byte, lastClientID string, dst *kmsg.ProduceRequest, topicName func([]byte) string) (requestHeader, error) {
	h, rest, err := parseRequestHeader(frame, lastClientID)
	if err != nil {
		return h, err
	}
	if h.version >= 9 {
		if rest, err = skipTags(rest); err != nil {
			return h, err
		}
	}
	if err := decodeProduceBody(dst, h.version, rest, topicName); err != nil {
		return h, fmt.Errorf("%w: %s v%d: %w", errBadRequest, kmsg.NameForKey(h.key), h.version, err)
	}
	return h, nil
}

// decodeProduceBody decodes the body of a Produce request of the given
// version (3 to 13) into dst, following kmsg's ProduceRequest.ReadFrom
// field by field with the same kbin reader, so that the same bytes are
// accepted and the same values read.
func decodeProduceBody(dst *kmsg.ProduceRequest, version int16, src []byte, topicName func([]byte) string) error {
	b := kbin.Reader{Src: src}
	flexible := version >= 9
	topics := dst.Topics[:0]
	*dst = kmsg.ProduceRequest{Version: version}
	// The transactional id: one string per transactional producer's
	// request, which its ACL check needs.
	if l := readLen16(&b, flexible); l >= 0 {
		s := string(b.Span(l))
		dst.TransactionID = &s
	}
	dst.Acks = b.Int16()
	dst.TimeoutMillis = b.Int32()
	n := readArrayLen(&b, flexible)
	if !b.Ok() || int64(n)*2 > int64(len(b.Src)) || version >= 13 && int64(n)*18 > int64(len(b.Src)) {
		return kbin.ErrNotEnoughData
	}
	topics = resize(topics, n)
	for i := range topics {
		t := &topics[i]
		parts := t.Partitions[:0]
		*t = kmsg.ProduceRequestTopic{}
		if version <= 12 {
			t.Topic = topicName(b.Span(readLen16(&b, flexible)))
		} else {
			t.TopicID = b.Uuid()
		}
		n := readArrayLen(&b, flexible)
		if !b.Ok() || int64(n)*6 > int64(len(b.Src)) {
			return kbin.ErrNotEnoughData
		}
		parts = resize(parts, n)
		for j := range parts {
			p := &parts[j]
			*p = kmsg.ProduceRequestTopicPartition{Partition: b.Int32()}
			var l int
			if flexible {
				l = int(b.Uvarint()) - 1
			} else {
				l = int(b.Int32())
			}
			if l >= 0 {
				p.Records = b.Span(l)
			}
			if flexible {
				skipReaderTags(&b)
			}
		}
		t.Partitions = parts
		if flexible {
			skipReaderTags(&b)
		}
	}
	dst.Topics = topics
	if flexible {
		skipReaderTags(&b)
	}
	return b.Complete()
}

// resize returns s with length n (none when n <= 0), reusing its array
// when it is large enough.
func resize[T any](s []T, n int32) []T {
	switch {
	case n <= 0:
		return s[:0]
	case int(n) <= cap(s):
		return s[:n]
	}
	return make([]T, n)
}

// readLen16 reads the length of a (nullable) string: a compact length
// (uvarint of length + 1) when flexible, an int16 otherwise; -1 is null.
func readLen16(b *kbin.Reader, flexible bool) int {
	if flexible {
		return int(b.Uvarint()) - 1
	}
	return int(b.Int16())
}

// readArrayLen reads an array's length as kmsg does (a compact length when
// flexible), refusing one longer than the bytes left.
func readArrayLen(b *kbin.Reader, flexible bool) int32 {
	if flexible {
		return b.CompactArrayLen()
	}
	return b.ArrayLen()
}

// skipReaderTags skips a tagged-field section as kmsg reads one: a count,
// then for each field its tag, its size and its bytes.
func skipReaderTags(b *kbin.Reader) {
	if len(b.Src) > 0 && b.Src[0] == 0 {
		b.Src = b.Src[1:]
		return
	}
	for n := b.Uvarint(); n > 0 && b.Ok(); n-- {
		b.Uvarint()
		b.Span(int(b.Uvarint()))
	}
}

// produceTopicName is the topic name a produce request gives as bytes: the
// string the broker holds for a topic it hosts or knows, without a copy,
// or else a new string.
func (b *Broker) produceTopicName(name []byte) string {
	if lt, ok := b.replicas.table.load().byName[string(name)]; ok {
		return lt.name
	}
	if tv := b.meta.snapshot().topics[string(name)]; tv != nil {
		return tv.name
	}
	return string(name)
}
