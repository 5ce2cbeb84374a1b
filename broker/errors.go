package broker

import (
	"context"
	"errors"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/shale-log/shale/localseg"
	"github.com/shale-log/shale/localseg/recordbatch"
)

// kafkaError maps an error from the broker's parts to a Kafka error code.
// This is the only place below the handlers where Kafka codes appear.
func kafkaError(err error) int16 {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errNotLeader), errors.Is(err, errPartitionClosed):
		return kerr.NotLeaderForPartition.Code
	case errors.Is(err, errLeaderNotAvailable):
		return kerr.LeaderNotAvailable.Code
	case errors.Is(err, errNotEnoughReplicas):
		return kerr.NotEnoughReplicas.Code
	case errors.Is(err, errInvalidTimestamp):
		return kerr.InvalidTimestamp.Code
	case errors.Is(err, errFencedLeaderEpoch):
		return kerr.FencedLeaderEpoch.Code
	case errors.Is(err, errUnknownLeaderEpoch):
		return kerr.UnknownLeaderEpoch.Code
	case errors.Is(err, errUnknownTopic):
		return kerr.UnknownTopicOrPartition.Code
	case errors.Is(err, errUnknownTopicID):
		return kerr.UnknownTopicID.Code
	case errors.Is(err, errInvalidRequiredAcks):
		return kerr.InvalidRequiredAcks.Code
	case errors.Is(err, errTransactionalID):
		return kerr.TransactionalIDAuthorizationFailed.Code
	case errors.Is(err, errMessageTooLarge):
		return kerr.MessageTooLarge.Code
	case errors.Is(err, errInvalidTopic):
		return kerr.InvalidTopicException.Code
	case errors.Is(err, localseg.ErrOffsetOutOfRange):
		return kerr.OffsetOutOfRange.Code
	case errors.Is(err, localseg.ErrOutOfOrderSequence):
		return kerr.OutOfOrderSequenceNumber.Code
	case errors.Is(err, localseg.ErrInvalidProducerEpoch):
		return kerr.InvalidProducerEpoch.Code
	case errors.Is(err, recordbatch.ErrCorrupt):
		return kerr.CorruptMessage.Code
	case errors.Is(err, recordbatch.ErrInvalidRecord):
		return kerr.InvalidRecord.Code
	case errors.Is(err, recordbatch.ErrDecompressTooLarge):
		return kerr.MessageTooLarge.Code
	case errors.Is(err, context.DeadlineExceeded):
		return kerr.RequestTimedOut.Code
	case errors.Is(err, localseg.ErrOffline):
		return kerr.KafkaStorageError.Code
	case errors.Is(err, localseg.ErrClosed):
		return kerr.NotLeaderForPartition.Code
	}
	return kerr.KafkaStorageError.Code
}

// errorMessage is the text a response carries beside a code, where the
// version has a field for it.
func errorMessage(err error) *string {
	if err == nil {
		return nil
	}
	s := err.Error()
	return &s
}

var (
	errUnknownTopic = errors.New("broker: unknown topic or partition")
	// errLeaderNotAvailable: the partition exists but cannot be served
	// now (its metadata record cannot be decoded, say); retriable.
	errLeaderNotAvailable  = errors.New("broker: partition offline")
	errUnknownTopicID      = errors.New("broker: unknown topic id")
	errInvalidRequiredAcks = errors.New("broker: acks must be -1, 0 or 1")
	errTransactionalID     = errors.New("broker: transactional id not allowed")
	errMessageTooLarge     = errors.New("broker: message too large")
)
