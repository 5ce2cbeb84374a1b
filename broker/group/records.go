package group

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// The records of __consumer_offsets, in Kafka's format (see doc.go). A key
// starts with an int16 that says what it is; a null value is a tombstone.
const (
	keyOffsetCommitV0        = 0 // OffsetCommitKey, read only
	keyOffsetCommit          = 1 // OffsetCommitKey, written
	keyGroupMetadata         = 2 // GroupMetadataKey (classic groups)
	keyConsumerGroupMetadata = 3 // ConsumerGroupMetadataKey (KIP-848 groups)
)

// errBadRecord marks a record of the offsets topic that cannot be decoded.
var errBadRecord = errors.New("group: malformed __consumer_offsets record")

type topicPartition struct {
	topic     string
	partition int32
}

// offsetEntry is one committed offset.
type offsetEntry struct {
	offset      int64
	leaderEpoch int32
	metadata    string
	commitTs    int64 // milliseconds
	expireTs    int64 // milliseconds; -1 when the commit named no retention (OffsetCommit v2-v4)
	size        int64 // bytes of its record in the log, for the live-state estimate
	// at is where its record is in the log: the order of a committed
	// and a pending transactional offset, and how far back a pending
	// transaction holds the log start (see logAt).
	at logAt
}

// logAt locates a record: the base offset of its batch, and the bytes the
// shard had counted in the log before that batch (shard.counted), for the
// log-size estimate when the log start is held back to it.
type logAt struct {
	offset int64
	bytes  int64
}

func appendOffsetKey(dst []byte, group string, tp topicPartition) []byte {
	k := kmsg.OffsetCommitKey{Version: keyOffsetCommit, Group: group, Topic: tp.topic, Partition: tp.partition}
	return k.AppendTo(dst)
}

// appendOffsetValue writes value version 3 (with the leader epoch), or
// version 1 when the commit carried its own expiry, as Kafka does.
func appendOffsetValue(dst []byte, e *offsetEntry) []byte {
	v := kmsg.OffsetCommitValue{Version: 3, Offset: e.offset, LeaderEpoch: e.leaderEpoch, Metadata: e.metadata, CommitTimestamp: e.commitTs}
	if e.expireTs >= 0 {
		v.Version = 1
		v.ExpireTimestamp = e.expireTs
	}
	return v.AppendTo(dst)
}

func appendGroupKey(dst []byte, group string) []byte {
	k := kmsg.GroupMetadataKey{Version: keyGroupMetadata, Group: group}
	return k.AppendTo(dst)
}

// appendConsumerGroupKey writes a ConsumerGroupMetadataKey: int16 3, then
// the group id as a non-flexible string.
func appendConsumerGroupKey(dst []byte, group string) []byte {
	dst = binary.BigEndian.AppendUint16(dst, keyConsumerGroupMetadata)
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(group)))
	return append(dst, group...)
}

// appendConsumerGroupValue writes a ConsumerGroupMetadataValue v0 (flexible):
// int16 version, int32 group epoch, an empty tagged-field section.
func appendConsumerGroupValue(dst []byte, epoch int32) []byte {
	dst = binary.BigEndian.AppendUint16(dst, 0)
	dst = binary.BigEndian.AppendUint32(dst, uint32(epoch))
	return append(dst, 0)
}

// Control record types (the key of a control batch's record: int16
// version, int16 type), as Kafka's ControlRecordType.
const (
	controlAbort  = 0
	controlCommit = 1
)

// decodeMarker parses the key of a control record. ok is false for
// control records that are not transaction markers (types other than
// ABORT and COMMIT); an error for a key that cannot be one. As Kafka, a
// newer key version is read as version 0, whose fields it starts with.
func decodeMarker(key []byte) (commit, ok bool, err error) {
	if len(key) < 4 {
		return false, false, fmt.Errorf("%w: %d-byte control record key", errBadRecord, len(key))
	}
	if v := int16(binary.BigEndian.Uint16(key)); v < 0 {
		return false, false, fmt.Errorf("%w: control record key version %d", errBadRecord, v)
	}
	switch int16(binary.BigEndian.Uint16(key[2:])) {
	case controlAbort:
		return false, true, nil
	case controlCommit:
		return true, true, nil
	}
	return false, false, nil
}

// decoded is one record of the offsets topic.
type decoded struct {
	kind      int16 // keyOffsetCommit, keyGroupMetadata, keyConsumerGroupMetadata; -1 for records we skip
	group     string
	tp        topicPartition
	tombstone bool
	offset    offsetEntry              // kind keyOffsetCommit
	classic   *kmsg.GroupMetadataValue // kind keyGroupMetadata
	epoch     int32                    // kind keyConsumerGroupMetadata
}

// decodeRecord parses a record read back from the offsets topic. Bytes
// from disk are outside input: every error is returned, nothing panics.
// Records of kinds this coordinator does not keep (KIP-848 member and
// assignment records, share and streams groups) decode as kind -1.
func decodeRecord(key, value []byte) (decoded, error) {
	var d decoded
	if len(key) < 2 {
		return d, fmt.Errorf("%w: %d-byte key", errBadRecord, len(key))
	}
	d.kind = int16(binary.BigEndian.Uint16(key))
	d.tombstone = value == nil
	switch d.kind {
	case keyOffsetCommitV0, keyOffsetCommit:
		var k kmsg.OffsetCommitKey
		if err := k.ReadFrom(key); err != nil {
			return d, fmt.Errorf("%w: offset key: %w", errBadRecord, err)
		}
		d.kind = keyOffsetCommit
		d.group, d.tp = k.Group, topicPartition{k.Topic, k.Partition}
		if d.tombstone {
			return d, nil
		}
		var v kmsg.OffsetCommitValue
		if err := v.ReadFrom(value); err != nil {
			return d, fmt.Errorf("%w: offset value: %w", errBadRecord, err)
		}
		if v.Version < 0 || v.Version > 4 {
			return d, fmt.Errorf("%w: offset value version %d", errBadRecord, v.Version)
		}
		d.offset = offsetEntry{offset: v.Offset, leaderEpoch: -1, metadata: v.Metadata, commitTs: v.CommitTimestamp, expireTs: -1}
		if v.Version >= 3 {
			d.offset.leaderEpoch = v.LeaderEpoch
		}
		if v.Version == 1 {
			d.offset.expireTs = v.ExpireTimestamp
		}
		return d, nil
	case keyGroupMetadata:
		var k kmsg.GroupMetadataKey
		if err := k.ReadFrom(key); err != nil {
			return d, fmt.Errorf("%w: group key: %w", errBadRecord, err)
		}
		d.group = k.Group
		if d.tombstone {
			return d, nil
		}
		v := new(kmsg.GroupMetadataValue)
		if err := v.ReadFrom(value); err != nil {
			return d, fmt.Errorf("%w: group value: %w", errBadRecord, err)
		}
		if v.Version < 0 || v.Version > 4 || v.Generation < 0 {
			return d, fmt.Errorf("%w: group value version %d generation %d", errBadRecord, v.Version, v.Generation)
		}
		seen := make(map[string]bool, len(v.Members))
		for _, m := range v.Members {
			if m.MemberID == "" || seen[m.MemberID] {
				return d, fmt.Errorf("%w: group %q lists member %q twice or empty", errBadRecord, d.group, m.MemberID)
			}
			seen[m.MemberID] = true
		}
		d.classic = v
		return d, nil
	case keyConsumerGroupMetadata:
		rest := key[2:]
		if len(rest) < 2 {
			return d, fmt.Errorf("%w: consumer group key", errBadRecord)
		}
		n := int(int16(binary.BigEndian.Uint16(rest)))
		if n < 0 || n != len(rest)-2 {
			return d, fmt.Errorf("%w: consumer group key length %d", errBadRecord, n)
		}
		d.group = string(rest[2:])
		if d.tombstone {
			return d, nil
		}
		if len(value) < 6 || binary.BigEndian.Uint16(value) != 0 {
			return d, fmt.Errorf("%w: consumer group value", errBadRecord)
		}
		d.epoch = int32(binary.BigEndian.Uint32(value[2:]))
		if d.epoch < 0 {
			return d, fmt.Errorf("%w: consumer group epoch %d", errBadRecord, d.epoch)
		}
		return d, nil
	}
	d.kind = -1
	return d, nil
}
