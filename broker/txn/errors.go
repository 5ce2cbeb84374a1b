package txn

import (
	"context"
	"errors"

	"github.com/twmb/franz-go/pkg/kerr"
)

// Kafka error codes used by the coordinator. This package is the broker's
// edge for the transaction APIs: it answers with kmsg responses.
var (
	codeNotCoordinator               = kerr.NotCoordinator.Code
	codeCoordinatorNotAvailable      = kerr.CoordinatorNotAvailable.Code
	codeCoordinatorLoadInProgress    = kerr.CoordinatorLoadInProgress.Code
	codeInvalidRequest               = kerr.InvalidRequest.Code
	codeInvalidTransactionTimeout    = kerr.InvalidTransactionTimeout.Code
	codeConcurrentTransactions       = kerr.ConcurrentTransactions.Code
	codeInvalidTxnState              = kerr.InvalidTxnState.Code
	codeInvalidProducerIDMapping     = kerr.InvalidProducerIDMapping.Code
	codeInvalidProducerEpoch         = kerr.InvalidProducerEpoch.Code
	codeProducerFenced               = kerr.ProducerFenced.Code
	codeTransactionalIDNotFound      = kerr.TransactionalIDNotFound.Code
	codeUnknownTopicOrPartition      = kerr.UnknownTopicOrPartition.Code
	codeOperationNotAttempted        = kerr.OperationNotAttempted.Code
	codeUnknownServerError           = kerr.UnknownServerError.Code
	codeInvalidRegularExpression     = kerr.InvalidRegularExpression.Code
	codeRequestTimedOut              = kerr.RequestTimedOut.Code
	codeTransactionCoordinatorFenced = kerr.TransactionCoordinatorFenced.Code
	codeUnsupportedForMessageFormat  = kerr.UnsupportedForMessageFormat.Code
)

// appendErrorCode maps a failed write to the code its request gets, as
// Kafka's TransactionStateManager maps its append errors: leadership lost
// is NOT_COORDINATOR, a batch over the topic's limit UNKNOWN_SERVER_ERROR
// (MESSAGE_TOO_LARGE), anything else (a timeout, too few replicas)
// COORDINATOR_NOT_AVAILABLE.
func appendErrorCode(err error) int16 {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, ErrNotLeader), errors.Is(err, context.Canceled):
		return codeNotCoordinator
	case errors.Is(err, ErrRecordTooLarge):
		return codeUnknownServerError
	}
	return codeCoordinatorNotAvailable
}

// fencedCode is PRODUCER_FENCED for clients that know it (KIP-588), and
// INVALID_PRODUCER_EPOCH, which Kafka sends instead, for older request
// versions (below firstFenced).
func fencedCode(code, version, firstFenced int16) int16 {
	if code == codeProducerFenced && version < firstFenced {
		return codeInvalidProducerEpoch
	}
	return code
}
