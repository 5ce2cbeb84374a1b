package broker

import (
	"slices"
	"strings"
	"time"
)

// PartitionTierStatus is where one hosted partition's records are: on the
// local disk, in the object store, or sealed and waiting for upload.
type PartitionTierStatus struct {
	Broker    int32 // this broker's node id
	Topic     string
	Partition int32
	// Leader: this broker leads the partition. Only the leader uploads,
	// so only its upload lag and last upload are current.
	Leader bool
	// Tiered: the topic has remote.storage.enable and the broker a bucket.
	Tiered bool
	// Loading: the leader has not read the remote manifest yet.
	Loading bool
	// UploadsStopped: remote.log.copy.disable is set; Deleting: remote
	// storage was turned off, and the remote log is being deleted.
	UploadsStopped, Deleting bool

	LocalBytes       int64
	LocalStartOffset int64
	LogEndOffset     int64
	HighWatermark    int64

	RemoteBytes    int64
	RemoteSegments int64
	// RemoteStartOffset and RemoteEndOffset bound the remote log
	// (RemoteStartOffset -1: it holds nothing).
	RemoteStartOffset int64
	RemoteEndOffset   int64

	// UploadLagBytes and UploadLagSegments are the sealed local segments
	// the manifest does not hold yet: uploading now, uploaded and waiting
	// for a commit, waiting for an upload slot, or not yet below the high
	// watermark (the lag metrics' count).
	UploadLagBytes    int64
	UploadLagSegments int64
	// LastUpload is when this broker last committed an upload, or, when
	// it has not since it started or became leader, the manifest's last
	// commit (zero: never).
	LastUpload time.Time
	// RemoteCleanedTo and RemoteCleanedAt are, on the leader of a
	// compacted topic, where its last remote compaction pass (this
	// term's, or an earlier leader's) left off and when (-1 and zero:
	// none known).
	RemoteCleanedTo int64
	RemoteCleanedAt time.Time
	// RemoteScrubbedAt and RemoteDamaged are, on the leader, when the
	// last complete scrub of the remote log ended (zero: none known) and
	// the damaged objects the scrub under way, or else that one, found;
	// RemoteScrubbingFrom is where the scrub under way goes on (-1: none
	// is).
	RemoteScrubbedAt    time.Time
	RemoteDamaged       int
	RemoteScrubbingFrom int64
}

// TierStatus reports every partition this broker hosts, of topic only
// when topic is not empty, sorted by topic and partition.
func (b *Broker) TierStatus(topic string) []PartitionTierStatus {
	var out []PartitionTierStatus
	for _, p := range b.replicas.all() {
		if topic != "" && p.topic != topic {
			continue
		}
		st := PartitionTierStatus{
			Broker: b.cfg.NodeID, Topic: p.topic, Partition: p.index, Leader: p.isLeader(),
			LocalBytes: p.log.Size(), LocalStartOffset: p.log.LocalLogStartOffset(),
			LogEndOffset: p.log.LogEndOffset(), HighWatermark: p.highWatermark(),
			RemoteStartOffset: -1, RemoteEndOffset: -1, RemoteCleanedTo: -1, RemoteScrubbingFrom: -1,
		}
		if t := p.tier; t != nil {
			m := t.manifest()
			st.Tiered = true
			st.Loading = st.Leader && !t.ready.Load()
			cfg := p.cfg.Load()
			st.Deleting = !cfg.remoteStorage
			st.UploadsStopped = cfg.remoteCopyDisabled && !st.Deleting
			st.RemoteBytes = m.Bytes()
			for _, sp := range m.Spills {
				st.RemoteSegments += int64(sp.Count)
			}
			st.RemoteSegments += int64(len(m.Segments))
			st.RemoteStartOffset, st.RemoteEndOffset = m.Start(), m.End()
			if st.RemoteStartOffset < 0 {
				st.RemoteEndOffset = -1
			}
			if n := t.cleanerNote.Load(); st.Leader && cfg.compact && n != nil && t.cleanerNoteKnown.Load() {
				st.RemoteCleanedTo, st.RemoteCleanedAt = n.FirstDirty, n.CleanedAt
			}
			if c := t.scrubNote.Load(); st.Leader && c != nil && c.note != nil {
				st.RemoteScrubbedAt, st.RemoteDamaged = c.note.CompletedAt, c.note.Damaged
				if c.note.Next > 0 {
					st.RemoteScrubbingFrom = c.note.Next
				}
			}
			l := t.lag(p)
			st.UploadLagBytes, st.UploadLagSegments = l.bytes, l.segments
			if ms := t.lastUpload.Load(); ms > 0 {
				st.LastUpload = time.UnixMilli(ms)
			} else if m.CommittedAtMs > 0 && st.RemoteSegments > 0 {
				st.LastUpload = time.UnixMilli(m.CommittedAtMs)
			}
		}
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b PartitionTierStatus) int {
		if c := strings.Compare(a.Topic, b.Topic); c != 0 {
			return c
		}
		return int(a.Partition - b.Partition)
	})
	return out
}
