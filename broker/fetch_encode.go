package broker

import (
	"encoding/binary"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/localseg"
	"github.com/shale-log/shale/tiering"
)

// fetchTopic and fetchPart hold a fetch response before encoding. A part's
// record data is a file range, not bytes: the encoder leaves a cut for it
// and the connection writer fills it with sendfile.
type fetchTopic struct {
	name  string
	id    [16]byte
	parts []fetchPart
	n     int // parts counted while grouping them
}

type fetchPart struct {
	// header fields; RecordBatches is unused
	kmsg.FetchResponseTopicPartition
	rng localseg.Range
	// remote holds record data read from the object store (slices of
	// shared chunks, never modified) instead of a file range.
	remote tiering.Data
}

// size is the length of the part's record data.
func (p *fetchPart) size() int64 {
	if p.remote.Bufs != nil {
		return p.remote.Len()
	}
	return p.rng.Len()
}

// release gives back the part's record data unsent.
func (p *fetchPart) release() {
	p.rng.Release()
	p.remote.Release()
}

// countCuts counts the parts with record data, each a cut.
func countCuts(topics []fetchTopic) int {
	n := 0
	for ti := range topics {
		for pi := range topics[ti].parts {
			if topics[ti].parts[pi].size() > 0 {
				n++
			}
		}
	}
	return n
}

// encodeFetch encodes a fetch response body of the given version, byte for
// byte what kmsg.FetchResponse.AppendTo writes, except that each
// partition's records are a cut to be filled from its file range. The
// ranges move into the returned response, which releases them.
func encodeFetch(version int16, top *kmsg.FetchResponse, topics []fetchTopic) *rawResponse {
	flexible := version >= 12
	raw := &rawResponse{}
	raw.cuts = raw.cutBuf[:0]
	if cuts := countCuts(topics); cuts > len(raw.cutBuf) {
		raw.cuts = make([]rawCut, 0, cuts)
	}
	dst := raw.bodyBuf[:0]
	if n := 64 + len(topics)*64; n > len(raw.bodyBuf) {
		dst = make([]byte, 0, n)
	}
	if version >= 1 {
		dst = binary.BigEndian.AppendUint32(dst, uint32(top.ThrottleMillis))
	}
	if version >= 7 {
		dst = binary.BigEndian.AppendUint16(dst, uint16(top.ErrorCode))
		dst = binary.BigEndian.AppendUint32(dst, uint32(top.SessionID))
	}
	dst = appendArrayLen(dst, len(topics), flexible)
	for ti := range topics {
		t := &topics[ti]
		if version <= 12 {
			dst = appendString(dst, t.name, flexible)
		} else {
			dst = append(dst, t.id[:]...)
		}
		dst = appendArrayLen(dst, len(t.parts), flexible)
		for pi := range t.parts {
			p := &t.parts[pi]
			dst = binary.BigEndian.AppendUint32(dst, uint32(p.Partition))
			dst = binary.BigEndian.AppendUint16(dst, uint16(p.ErrorCode))
			dst = binary.BigEndian.AppendUint64(dst, uint64(p.HighWatermark))
			if version >= 4 {
				dst = binary.BigEndian.AppendUint64(dst, uint64(p.LastStableOffset))
			}
			if version >= 5 {
				dst = binary.BigEndian.AppendUint64(dst, uint64(p.LogStartOffset))
			}
			if version >= 4 {
				a := p.AbortedTransactions
				if a == nil {
					dst = appendNullArrayLen(dst, flexible)
				} else {
					dst = appendArrayLen(dst, len(a), flexible)
					for _, at := range a {
						dst = binary.BigEndian.AppendUint64(dst, uint64(at.ProducerID))
						dst = binary.BigEndian.AppendUint64(dst, uint64(at.FirstOffset))
						if flexible {
							dst = append(dst, 0)
						}
					}
				}
			}
			if version >= 11 {
				dst = binary.BigEndian.AppendUint32(dst, uint32(p.PreferredReadReplica))
			}
			n := p.size()
			if flexible {
				dst = binary.AppendUvarint(dst, uint64(n)+1)
			} else {
				dst = binary.BigEndian.AppendUint32(dst, uint32(n))
			}
			if n > 0 {
				raw.cuts = append(raw.cuts, rawCut{at: len(dst), rng: p.rng, data: p.remote})
				p.rng = localseg.Range{}
				p.remote = tiering.Data{}
			}
			if flexible {
				dst = appendPartitionTags(dst, &p.FetchResponseTopicPartition)
			}
		}
		if flexible {
			dst = append(dst, 0)
		}
	}
	if flexible {
		if len(top.Brokers) == 0 {
			dst = append(dst, 0)
		} else {
			var field []byte
			field = appendArrayLen(field, len(top.Brokers), true)
			for _, br := range top.Brokers {
				field = binary.BigEndian.AppendUint32(field, uint32(br.NodeID))
				field = appendString(field, br.Host, true)
				field = binary.BigEndian.AppendUint32(field, uint32(br.Port))
				if br.Rack == nil {
					field = append(field, 0)
				} else {
					field = appendString(field, *br.Rack, true)
				}
				field = append(field, 0)
			}
			dst = append(dst, 1, 0) // one tagged field, tag 0
			dst = binary.AppendUvarint(dst, uint64(len(field)))
			dst = append(dst, field...)
		}
	}
	raw.body = dst
	return raw
}

// appendPartitionTags writes a partition's tagged fields: the diverging
// epoch (tag 0) and the current leader (tag 1) when set.
func appendPartitionTags(dst []byte, p *kmsg.FetchResponseTopicPartition) []byte {
	diverging := p.DivergingEpoch.Epoch != -1 || p.DivergingEpoch.EndOffset != -1
	leader := p.CurrentLeader.LeaderID != -1 || p.CurrentLeader.LeaderEpoch != -1
	n := 0
	if diverging {
		n++
	}
	if leader {
		n++
	}
	dst = binary.AppendUvarint(dst, uint64(n))
	if diverging {
		dst = append(dst, 0, 4+8+1)
		dst = binary.BigEndian.AppendUint32(dst, uint32(p.DivergingEpoch.Epoch))
		dst = binary.BigEndian.AppendUint64(dst, uint64(p.DivergingEpoch.EndOffset))
		dst = append(dst, 0)
	}
	if leader {
		dst = append(dst, 1, 4+4+1)
		dst = binary.BigEndian.AppendUint32(dst, uint32(p.CurrentLeader.LeaderID))
		dst = binary.BigEndian.AppendUint32(dst, uint32(p.CurrentLeader.LeaderEpoch))
		dst = append(dst, 0)
	}
	return dst
}

func appendArrayLen(dst []byte, n int, flexible bool) []byte {
	if flexible {
		return binary.AppendUvarint(dst, uint64(n)+1)
	}
	return binary.BigEndian.AppendUint32(dst, uint32(n))
}

func appendNullArrayLen(dst []byte, flexible bool) []byte {
	if flexible {
		return append(dst, 0)
	}
	return binary.BigEndian.AppendUint32(dst, 0xffffffff)
}

func appendString(dst []byte, s string, flexible bool) []byte {
	if flexible {
		dst = binary.AppendUvarint(dst, uint64(len(s))+1)
	} else {
		dst = binary.BigEndian.AppendUint16(dst, uint16(len(s)))
	}
	return append(dst, s...)
}
