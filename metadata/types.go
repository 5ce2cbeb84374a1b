package metadata

import (
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"time"
)

// DefaultPrefix is the key prefix of a cluster's metadata.
const DefaultPrefix = "/shale/"

// Errors, matched with errors.Is.
var (
	ErrTopicExists   = errors.New("metadata: topic already exists")
	ErrUnknownTopic  = errors.New("metadata: unknown topic")
	ErrConflict      = errors.New("metadata: concurrent change")
	ErrBrokerIDInUse = errors.New("metadata: broker id registered by a live broker")
	ErrNotLeader     = errors.New("metadata: leadership lost")
	// ErrTooLarge: a write exceeds etcd's limits (operations per
	// transaction or request size); it was not made.
	ErrTooLarge = errors.New("metadata: write exceeds etcd's request limits")
	// ErrIndeterminate: a write's etcd call failed after it may have
	// been sent (a deadline, a lost connection), and re-reading could
	// not tell whether it applied. It may have. A retry of the same
	// request learns the outcome from what it reads.
	ErrIndeterminate = errors.New("metadata: the write's outcome is unknown")
	// ErrUnreadable: a stored record cannot be decoded.
	ErrUnreadable = errors.New("metadata: record cannot be decoded")
)

// UUID is a topic id. In JSON and logs it is base64url without padding, as
// Kafka prints topic ids.
type UUID [16]byte

func (u UUID) String() string { return base64.RawURLEncoding.EncodeToString(u[:]) }

// MarshalText implements encoding.TextMarshaler.
func (u UUID) MarshalText() ([]byte, error) { return []byte(u.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (u *UUID) UnmarshalText(b []byte) error {
	raw, err := base64.RawURLEncoding.DecodeString(string(b))
	if err != nil || len(raw) != 16 {
		return fmt.Errorf("metadata: bad uuid %q", b)
	}
	copy(u[:], raw)
	return nil
}

// Broker is a live broker's registration.
type Broker struct {
	ID   int32  `json:"id"`
	Host string `json:"host"`
	Port int32  `json:"port"`
	Rack string `json:"rack,omitempty"`
	// HTTPAddr is where the broker's HTTP address (/metrics, /healthz,
	// /readyz, /v1/tier) is reached, host:port; empty when it did not
	// say (a broker from before the field, or one with no HTTP address).
	// Readers ignore fields they do not know, so older brokers read these
	// records, and a record without it reads as empty.
	HTTPAddr string `json:"httpAddr,omitempty"`
	// DirectoryID identifies the broker's data directory. A broker that
	// restarts on the same directory (after kill -9, say) replaces its
	// previous registration at once instead of waiting for that lease to
	// expire; another directory claiming the same id is refused.
	DirectoryID string `json:"directoryId,omitempty"`
	// UncleanShutdown: the broker's previous run on this directory ended
	// without a clean shutdown, so the unflushed tail of its logs may be
	// gone. Leader election prefers replicas without it (KIP-966).
	UncleanShutdown bool `json:"uncleanShutdown,omitempty"`
	// ShuttingDown: the broker asked for a controlled shutdown (not
	// stored in the registration: its own key under the same lease). The
	// controller moves its leaderships to other in-sync replicas and
	// takes it out of ISRs, and leaders do not add it back.
	ShuttingDown bool `json:"-"`
	// Incarnation is the etcd revision of this registration (not
	// stored): it changes whenever the broker registers again, so the
	// controller can tell a restart from a broker that stayed up.
	Incarnation int64 `json:"-"`
}

// Topic is a topic's identity and configuration. Its partitions are stored
// under their own keys.
type Topic struct {
	Name     string            `json:"name"`
	ID       UUID              `json:"id"`
	Configs  map[string]string `json:"configs,omitempty"`
	Internal bool              `json:"internal,omitempty"`
	// PartitionCount is how many partitions the topic has: partition
	// records at higher indexes are leftovers of an addition that did not
	// finish, which readers ignore. Zero in records written before it
	// existed: every partition record counts.
	PartitionCount int32 `json:"partitionCount,omitempty"`
}

// Partition is one partition's replication state.
type Partition struct {
	Topic          string  `json:"topic"`
	TopicID        UUID    `json:"topicId"`
	Index          int32   `json:"index"`
	Replicas       []int32 `json:"replicas"`
	Leader         int32   `json:"leader"`
	LeaderEpoch    int32   `json:"leaderEpoch"`
	ISR            []int32 `json:"isr"`
	PartitionEpoch int32   `json:"partitionEpoch"`
	// UncleanEpoch is the leader epoch of the last unclean election
	// (a leader from outside the ISR), 0 if there was none: a leader of
	// that epoch may hold less than was acknowledged, and in a tiered
	// partition less than the bucket holds.
	UncleanEpoch int32 `json:"uncleanEpoch,omitempty"`
	// Unarchived says that none of the partition's records has reached
	// the object store: its remote manifest names no segment, so any
	// leader's log is consistent with the bucket and may take produce
	// before the manifest is read (a topic created while the store is
	// down). Set when the partition is created (with a new topic id);
	// a tiered leader clears it, as the leader of its epoch, before its
	// first upload can commit; it is set again only once the leader has
	// deleted the partition's remote log, its topic's remote storage
	// turned off (KIP-950). A record without it (older, or cleared) may
	// have archived records.
	Unarchived bool `json:"unarchived,omitempty"`
	// AddingReplicas and RemovingReplicas describe a reassignment in
	// progress (Kafka's KIP-455): Replicas is then the target followed
	// by the original replicas being removed.
	AddingReplicas   []int32 `json:"addingReplicas,omitempty"`
	RemovingReplicas []int32 `json:"removingReplicas,omitempty"`
	// RetiredReplicas are brokers a completed (or cancelled)
	// reassignment removed from Replicas: the recorded decision that lets
	// them delete their copy of the log.
	RetiredReplicas []int32 `json:"retiredReplicas,omitempty"`
	// Recovering are ISR members back from a machine crash (an unclean
	// shutdown, then another boot) when no other member was up: each
	// may lack the unflushed tail the ISR counted on, and none of them
	// leads until the controller has compared them. A member that kept
	// its log leads instead when one is up, and the recovering ones leave
	// the ISR; when every member is recovering and has reported its log
	// end, the longest log leads, alone in the ISR (KIP-966's unclean
	// recovery); a topic that allows unclean election does not wait for
	// all of them.
	Recovering Recovering `json:"recovering,omitempty"`
	// Eligible are KIP-966's eligible leader replicas: members that left
	// the ISR, dead or lagging, while it had fewer than
	// min.insync.replicas members. The leader's high watermark holds
	// still while the ISR is that small, so they hold every record below
	// it (every acknowledged acks=all write, every record a consumer
	// could read or the bucket holds) as much as the ISR does: when the
	// ISR's last member is gone a live one is elected, cleanly, and when
	// that member comes back having lost its log, they, not its empty
	// log, are what the partition is led from (the member leaves the ISR
	// to them). Kept apart from the ISR because they may lack acks=1
	// records appended since, above the high watermark. Cleared once the
	// ISR is back to min.insync.replicas; a member that rejoins the ISR,
	// or loses its log, leaves it (SetISR).
	Eligible []int32 `json:"eligible,omitempty"`
	// Created is the etcd revision that created the record (not
	// stored): a broker registered after it that finds no log of the
	// partition on its disk, though the ISR names it, has lost that log.
	Created int64 `json:"-"`
}

// Counted are the members whose logs hold every acknowledged record: the
// ISR, then the eligible leader replicas outside it.
func (p Partition) Counted() []int32 {
	out := slices.Clone(p.ISR)
	for _, id := range p.Eligible {
		if !slices.Contains(out, id) {
			out = append(out, id)
		}
	}
	return out
}

// SetISR sets the partition's ISR to isr, keeping its eligible leader
// replicas (Eligible) with it: members that leave the ISR join them
// while the ISR is smaller than minISR (min.insync.replicas), except the
// lost (whose logs lack what the ISR counted on); members in the ISR, the
// lost and those no longer replicas leave them; once the ISR has minISR
// members there are none. Eligible ones left over from a larger
// min.insync.replicas (the ISR they left already has minISR members: the
// high watermark may have moved past them since it came down) are not
// kept, even when the ISR now falls below it.
func (p *Partition) SetISR(isr []int32, minISR int32, lost ...int32) {
	p.DropLeftOverEligible(minISR)
	var eligible []int32
	if int32(len(isr)) < minISR {
		for _, id := range append(slices.Clone(p.Eligible), p.ISR...) {
			if !slices.Contains(isr, id) && !slices.Contains(lost, id) && slices.Contains(p.Replicas, id) && !slices.Contains(eligible, id) {
				eligible = append(eligible, id)
			}
		}
	}
	p.ISR, p.Eligible = isr, eligible
}

// DropLeftOverEligible forgets p's eligible leader replicas when its ISR
// has minISR (min.insync.replicas) members or more: they are left over
// from a larger min.insync.replicas, and the high watermark may have moved
// past them since it came down. The controller drops them at its next
// round (SetISR); a write that reads the record before then must not take
// them for replicas that hold every acknowledged record.
func (p *Partition) DropLeftOverEligible(minISR int32) {
	if int32(len(p.ISR)) >= minISR {
		p.Eligible = nil
	}
}

// RecoveringReplica is an ISR member back from a machine crash
// (Partition.Recovering).
type RecoveringReplica struct {
	ID int32 `json:"id"`
	// LogEnd is the end of its log once the log has opened and
	// recovered; -1 until then.
	LogEnd int64 `json:"logEnd"`
}

// Recovering are a partition's ISR members back from a machine crash
// (Partition.Recovering).
type Recovering []RecoveringReplica

// End reports whether broker id is recovering, and the log end it reported
// (-1: not yet).
func (rs Recovering) End(id int32) (int64, bool) {
	for _, r := range rs {
		if r.ID == id {
			return r.LogEnd, true
		}
	}
	return 0, false
}

// DeletedTopic is the tombstone of a deleted topic: the recorded decision
// that lets brokers remove its log directories.
type DeletedTopic struct {
	Name      string    `json:"name"`
	ID        UUID      `json:"id"`
	DeletedAt time.Time `json:"deletedAt"`
}

// UnreadableRecord is a topic or partition record the cache could not
// decode. The topic (or partition) is kept out of the snapshot's Topics,
// and brokers keep its data and refuse to serve it until the record is
// right again.
type UnreadableRecord struct {
	Key       string
	Topic     string
	Partition int32 // -1: the topic record
	Err       string
}

// TopicState is a topic with its partitions, ordered by index.
type TopicState struct {
	Topic
	Partitions []Partition
}
