package group

import (
	"crypto/rand"
	"encoding/hex"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Kafka error codes used by the coordinator. This package is the broker's
// edge for the group APIs: it answers with kmsg responses.
var (
	codeNotCoordinator            = kerr.NotCoordinator.Code
	codeCoordinatorNotAvailable   = kerr.CoordinatorNotAvailable.Code
	codeCoordinatorLoadInProgress = kerr.CoordinatorLoadInProgress.Code
	codeInvalidGroupID            = kerr.InvalidGroupID.Code
	codeInvalidSessionTimeout     = kerr.InvalidSessionTimeout.Code
	codeInconsistentGroupProtocol = kerr.InconsistentGroupProtocol.Code
	codeUnknownMemberID           = kerr.UnknownMemberID.Code
	codeMemberIDRequired          = kerr.MemberIDRequired.Code
	codeFencedInstanceID          = kerr.FencedInstanceID.Code
	codeIllegalGeneration         = kerr.IllegalGeneration.Code
	codeRebalanceInProgress       = kerr.RebalanceInProgress.Code
	codeGroupMaxSizeReached       = kerr.GroupMaxSizeReached.Code
	codePolicyViolation           = kerr.PolicyViolation.Code
	codeUnknownServerError        = kerr.UnknownServerError.Code
	codeInvalidCommitOffsetSize   = kerr.InvalidCommitOffsetSize.Code
	codeOffsetMetadataTooLarge    = kerr.OffsetMetadataTooLarge.Code
	codeUnknownTopicOrPartition   = kerr.UnknownTopicOrPartition.Code
	codeUnknownTopicID            = kerr.UnknownTopicID.Code
	codeGroupIDNotFound           = kerr.GroupIDNotFound.Code
	codeNonEmptyGroup             = kerr.NonEmptyGroup.Code
	codeGroupSubscribedToTopic    = kerr.GroupSubscribedToTopic.Code
	codeInvalidRequest            = kerr.InvalidRequest.Code
	codeUnsupportedVersion        = kerr.UnsupportedVersion.Code
	codeFencedMemberEpoch         = kerr.FencedMemberEpoch.Code
	codeStaleMemberEpoch          = kerr.StaleMemberEpoch.Code
	codeUnreleasedInstanceID      = kerr.UnreleasedInstanceID.Code
	codeUnsupportedAssignor       = kerr.UnsupportedAssignor.Code
	codeInvalidRegularExpression  = kerr.InvalidRegularExpression.Code
	codeUnstableOffsetCommit      = kerr.UnstableOffsetCommit.Code
	codeInvalidProducerEpoch      = kerr.InvalidProducerEpoch.Code
	codeInvalidProducerIDMapping  = kerr.InvalidProducerIDMapping.Code
)

// groupValue is a classic group's stored metadata.
type groupValue = kmsg.GroupMetadataValue

// newMemberID returns prefix-<uuid>, as Kafka names members.
func newMemberID(prefix string) string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return prefix + "-" + h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func strPtr(s string) *string { return &s }

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}
