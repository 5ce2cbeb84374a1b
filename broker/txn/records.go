package txn

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// The records of __transaction_state, in Kafka's format (see doc.go).
const (
	// keyVersionTxn is TransactionLogKey's only version; records with
	// other key versions are skipped on load.
	keyVersionTxn = 0
	// valueVersionWrite is the TransactionLogValue version written (v0,
	// non-flexible, which every Kafka version reads); v1 (flexible,
	// KIP-915) is read too.
	valueVersionWrite = 0
	valueVersionMax   = 1
)

// errBadRecord marks a record of the transaction state topic that cannot
// be decoded.
var errBadRecord = errors.New("txn: malformed __transaction_state record")

func appendKey(dst []byte, id string) []byte {
	k := kmsg.TxnMetadataKey{Version: keyVersionTxn, TransactionalID: id}
	return k.AppendTo(dst)
}

// appendValue writes a TransactionLogValue v0. The partitions are null in
// state Empty and grouped by topic otherwise, as Kafka writes them.
func appendValue(dst []byte, m *txnMeta) []byte {
	v := kmsg.NewTxnMetadataValue()
	v.Version = valueVersionWrite
	v.ProducerID = m.producerID
	v.ProducerEpoch = m.producerEpoch
	v.TimeoutMillis = m.timeoutMs
	v.State = kmsg.TransactionState(m.state)
	v.LastUpdateTimestamp = m.updateMs
	v.StartTimestamp = m.startMs
	if m.state != stateEmpty {
		v.Topics = []kmsg.TxnMetadataValueTopic{}
		for _, tp := range m.partitions {
			if n := len(v.Topics); n == 0 || v.Topics[n-1].Topic != tp.Topic {
				v.Topics = append(v.Topics, kmsg.TxnMetadataValueTopic{Topic: tp.Topic, Partitions: []int32{}})
			}
			t := &v.Topics[len(v.Topics)-1]
			t.Partitions = append(t.Partitions, tp.Partition)
		}
	}
	return v.AppendTo(dst)
}

// decoded is one record of the transaction state topic.
type decoded struct {
	skip      bool // a key version this coordinator does not know
	id        string
	tombstone bool // a null value (or a stored Dead state): the id is gone
	meta      txnMeta
}

// decodeRecord parses a record read back from the transaction state topic.
// Bytes from disk are outside input: every error is returned, nothing
// panics, and no allocation exceeds a small multiple of the input (array
// counts are checked against the bytes left before anything is made).
func decodeRecord(key, value []byte) (decoded, error) {
	var d decoded
	if len(key) < 2 {
		return d, fmt.Errorf("%w: %d-byte key", errBadRecord, len(key))
	}
	if v := int16(binary.BigEndian.Uint16(key)); v != keyVersionTxn {
		d.skip = true
		return d, nil
	}
	var k kmsg.TxnMetadataKey
	if err := k.ReadFrom(key); err != nil {
		return d, fmt.Errorf("%w: key: %w", errBadRecord, err)
	}
	d.id = k.TransactionalID
	if value == nil {
		d.tombstone = true
		return d, nil
	}
	if len(value) < 2 {
		return d, fmt.Errorf("%w: %d-byte value", errBadRecord, len(value))
	}
	if v := int16(binary.BigEndian.Uint16(value)); v < 0 || v > valueVersionMax {
		return d, fmt.Errorf("%w: value version %d", errBadRecord, v)
	}
	var v kmsg.TxnMetadataValue
	if err := v.ReadFrom(value); err != nil {
		return d, fmt.Errorf("%w: value: %w", errBadRecord, err)
	}
	st := txnState(v.State)
	switch {
	case st < stateEmpty || st > statePrepareEpochFence:
		return d, fmt.Errorf("%w: %q: state %d", errBadRecord, d.id, v.State)
	case st == stateDead:
		d.tombstone = true
		return d, nil
	case v.ProducerID < 0 || v.ProducerEpoch < 0:
		return d, fmt.Errorf("%w: %q: producer id %d epoch %d", errBadRecord, d.id, v.ProducerID, v.ProducerEpoch)
	}
	if st == statePrepareEpochFence {
		// Kafka never writes this transient state; read as the
		// transaction it was about to abort.
		st = stateOngoing
	}
	d.meta = txnMeta{
		producerID:    v.ProducerID,
		producerEpoch: v.ProducerEpoch,
		timeoutMs:     v.TimeoutMillis,
		state:         st,
		startMs:       v.StartTimestamp,
		updateMs:      v.LastUpdateTimestamp,
	}
	var n int
	for _, t := range v.Topics {
		n += len(t.Partitions)
	}
	if n > 0 {
		ps := make([]TopicPartition, 0, n)
		for _, t := range v.Topics {
			for _, p := range t.Partitions {
				if p < 0 {
					return d, fmt.Errorf("%w: %q: partition %s-%d", errBadRecord, d.id, t.Topic, p)
				}
				ps = append(ps, TopicPartition{t.Topic, p})
			}
		}
		d.meta.partitions = normalizePartitions(ps)
	}
	return d, nil
}
