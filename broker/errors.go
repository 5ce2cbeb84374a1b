package broker

import (
	"context"
	"errors"
	"io/fs"
	"strings"
	"syscall"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/shale-log/shale/broker/controller"
	"github.com/shale-log/shale/localseg"
	"github.com/shale-log/shale/localseg/recordbatch"
	"github.com/shale-log/shale/metadata"
	"github.com/shale-log/shale/tiering"
)

// errorCodes is the one table from the broker's errors (and those of the
// packages below it) to Kafka error codes; errorCode walks it in order and
// the first match wins. Kafka codes appear nowhere else below the
// handlers: a package that adds an error a client must see adds its row
// here. Errors nobody classified are UNKNOWN_SERVER_ERROR.
var errorCodes = []struct {
	match func(error) bool
	code  *kerr.Error
}{
	// Partition leadership and state.
	{is(errNotLeader), kerr.NotLeaderForPartition},
	{is(errPartitionClosed), kerr.NotLeaderForPartition},
	{is(errLeaderNotAvailable), kerr.LeaderNotAvailable},
	{is(errNotEnoughReplicas), kerr.NotEnoughReplicas},
	{is(errNotEnoughReplicasAfterAppend), kerr.NotEnoughReplicasAfterAppend},
	{is(errReplicaNotAuthorized), kerr.TopicAuthorizationFailed},
	{is(errFencedLeaderEpoch), kerr.FencedLeaderEpoch},
	{is(errUnknownLeaderEpoch), kerr.UnknownLeaderEpoch},
	{is(errUnknownTopic), kerr.UnknownTopicOrPartition},
	{is(errUnknownTopicID), kerr.UnknownTopicID},
	// Elections asked for (ElectLeaders).
	{is(controller.ErrElectionNotNeeded), kerr.ElectionNotNeeded},
	{is(controller.ErrPreferredNotAvailable), kerr.PreferredLeaderNotAvailable},
	{is(controller.ErrEligibleNotAvailable), kerr.EligibleLeadersNotAvailable},
	// Produce.
	{is(errInvalidTimestamp), kerr.InvalidTimestamp},
	{is(errInvalidRequiredAcks), kerr.InvalidRequiredAcks},
	{is(errMessageTooLarge), kerr.MessageTooLarge},
	{is(localseg.ErrOutOfOrderSequence), kerr.OutOfOrderSequenceNumber},
	{is(localseg.ErrInvalidProducerEpoch), kerr.InvalidProducerEpoch},
	{is(localseg.ErrInvalidTxnState), kerr.InvalidTxnState},
	{is(localseg.ErrTransactionCoordinatorFenced), kerr.TransactionCoordinatorFenced},
	{is(errUnknownProducerID), kerr.UnknownProducerID},
	{is(recordbatch.ErrCorrupt), kerr.CorruptMessage},
	{is(recordbatch.ErrInvalidRecord), kerr.InvalidRecord},
	{is(recordbatch.ErrDecompressTooLarge), kerr.MessageTooLarge},
	// Reads.
	{is(errOffsetMovedToTiered), kerr.OffsetMovedToTieredStorage},
	{is(localseg.ErrOffsetOutOfRange), kerr.OffsetOutOfRange},
	// Topic administration.
	{is(errTopicExists), kerr.TopicAlreadyExists},
	{is(errInvalidPartitions), kerr.InvalidPartitions},
	{is(errInvalidReplicationFactor), kerr.InvalidReplicationFactor},
	{is(errNotEnoughBrokers), kerr.InvalidReplicationFactor},
	{is(errInvalidReplicaAssignment), kerr.InvalidReplicaAssignment},
	{is(errNoReassignment), kerr.NoReassignmentInProgress},
	{is(errInvalidConfig), kerr.InvalidConfig},
	{is(errInvalidTopic), kerr.InvalidTopicException},
	{is(errInvalidRequest), kerr.InvalidRequest},
	{is(errPolicyViolation), kerr.PolicyViolation},
	{is(errMetaConflict), kerr.ConcurrentTransactions}, // retriable; Kafka has no closer code
	{is(errThrottlingQuotaExceeded), kerr.ThrottlingQuotaExceeded},
	// Users (AlterUserScramCredentials).
	{is(errUnacceptableCredential), kerr.UnacceptableCredential},
	{is(errUnsupportedSASLMechanism), kerr.UnsupportedSaslMechanism},
	{is(errResourceNotFound), kerr.ResourceNotFound},
	{is(errDuplicateResource), kerr.DuplicateResource},
	// Authorization (ACLs).
	{is(errSecurityDisabled), kerr.SecurityDisabled},
	{is(errClusterAuthorization), kerr.ClusterAuthorizationFailed},
	{is(errTopicAuthorization), kerr.TopicAuthorizationFailed},
	{is(errGroupAuthorization), kerr.GroupAuthorizationFailed},
	{is(errTransactionalIDAuthorization), kerr.TransactionalIDAuthorizationFailed},
	// Tiered storage: the object store is down or slow, or an object
	// does not decode; retriable (the client backs off and fetches
	// again).
	{is(tiering.ErrUnavailable), kerr.KafkaStorageError},
	{is(tiering.ErrCorrupt), kerr.KafkaStorageError},
	// Deadlines: the request's time ran out or the broker is stopping.
	// A metadata write whose outcome is unknown, or etcd unable to
	// answer now, is the same to the client: a retry reads what
	// happened and converges.
	{is(errMetaIndeterminate), kerr.RequestTimedOut},
	{metadata.IsUnavailable, kerr.RequestTimedOut},
	{is(context.DeadlineExceeded), kerr.RequestTimedOut},
	{is(context.Canceled), kerr.RequestTimedOut},
	// Storage: a log taken offline, or an I/O error from the disk.
	{is(localseg.ErrOffline), kerr.KafkaStorageError},
	{is(errStorageFull), kerr.KafkaStorageError},
	{is(errPartitionOffline), kerr.KafkaStorageError},
	{isIOError, kerr.KafkaStorageError},
	{is(localseg.ErrClosed), kerr.NotLeaderForPartition},
}

func is(target error) func(error) bool {
	return func(err error) bool { return errors.Is(err, target) }
}

// isIOError reports an operating-system I/O error (a failed open, read,
// write or sync of a file).
func isIOError(err error) bool {
	var pe *fs.PathError
	var errno syscall.Errno
	return errors.As(err, &pe) || errors.As(err, &errno)
}

// kafkaError maps an error to its Kafka error code through errorCodes.
func kafkaError(err error) int16 {
	if err == nil {
		return 0
	}
	for _, e := range errorCodes {
		if e.match(err) {
			return e.code.Code
		}
	}
	return kerr.UnknownServerError.Code
}

// errorMessage is the text a response carries beside a code, where the
// version has a field for it: the error without the package prefix that
// logs carry ("broker: "), since the client prints it after the code.
func errorMessage(err error) *string {
	if err == nil {
		return nil
	}
	s := strings.TrimPrefix(err.Error(), "broker: ")
	return &s
}

var (
	errUnknownTopic = errors.New("broker: unknown topic or partition")
	// errLeaderNotAvailable: the partition exists but cannot be served
	// now (its metadata record cannot be decoded, say); retriable.
	errLeaderNotAvailable  = errors.New("broker: partition offline")
	errUnknownTopicID      = errors.New("broker: unknown topic id")
	errInvalidRequiredAcks = errors.New("broker: acks must be -1, 0 or 1")
	errMessageTooLarge     = errors.New("broker: message too large")
	// errReplicaNotAuthorized: a fetch with a replica id on a connection
	// that did not authenticate as that broker.
	errReplicaNotAuthorized = errors.New("broker: fetch as a follower from a connection not authenticated as that broker")
)
