package broker

import (
	"context"
	"errors"
	"fmt"

	"github.com/shale-log/shale/objectstore"
	"github.com/shale-log/shale/tiering"
)

// RestoreTopicIDConfig, among a CreateTopics request's configs, asks for a
// topic the object store holds to be created again under its id there
// (base64url, unpadded, as the bucket's layout writes it): `shale topic
// restore` sends it to rebuild a lost cluster's topics from their bucket.
// The partitions start archived, so that each leader reads its manifest
// before it takes produce and continues the offsets where the bucket ends
// (a replica with an empty log waits for it: appendsBeforeManifest), and
// at a leader epoch above the manifest's (restoreEpochs). It is not kept
// among the topic's configs.
const RestoreTopicIDConfig = "shale.restore.topic.id"

// checkRestore checks that topic may be restored under id, with partitions
// partitions: this broker's object store holds the topic's descriptor
// under that id, with as many partitions, and no deletion marker, and no
// topic of the cluster has the id. It returns the decoded id.
func (b *Broker) checkRestore(ctx context.Context, topic, id string, partitions int) ([16]byte, error) {
	raw, err := tiering.ParseTopicID(id)
	if err != nil {
		return raw, fmt.Errorf("%w: %s: %w", errInvalidConfig, RestoreTopicIDConfig, err)
	}
	if b.tier == nil {
		return raw, fmt.Errorf("%w: %s: this broker has no object store to restore the topic from", errInvalidConfig, RestoreTopicIDConfig)
	}
	if tv := b.meta.snapshot().topicsByID[raw]; tv != nil {
		return raw, fmt.Errorf("%w: topic %q has the id %s already", errTopicExists, tv.name, id)
	}
	s := b.tier
	got, err := tiering.ReadTopic(ctx, s.bucket, s.layout, topic, raw)
	switch {
	case errors.Is(err, objectstore.ErrNotFound):
		return raw, fmt.Errorf("%w: %s: the object store holds no topic %q with the id %s", errInvalidConfig, RestoreTopicIDConfig, topic, id)
	case err != nil:
		return raw, fmt.Errorf("%w: reading the topic's descriptor: %w", tiering.ErrUnavailable, err)
	}
	switch _, err := s.bucket.Head(ctx, s.layout.DeletedKey(topic, raw)); {
	case err == nil:
		return raw, fmt.Errorf("%w: %s: topic %q with the id %s was deleted; its objects are going", errInvalidConfig, RestoreTopicIDConfig, topic, id)
	case !errors.Is(err, objectstore.ErrNotFound):
		return raw, fmt.Errorf("%w: looking for the topic's deletion marker: %w", tiering.ErrUnavailable, err)
	}
	if int(got.Partitions) != partitions {
		return raw, fmt.Errorf("%w: the object store's topic %q has %d partitions, not %d", errInvalidPartitions, topic, got.Partitions, partitions)
	}
	return raw, nil
}

// restoreEpochs starts each partition of tv, being restored, at a leader
// epoch above its manifest's: the manifest in the bucket is fenced by the
// lost cluster's last leader epoch, and a leader at a lower one could
// neither adopt the bucket's end nor upload (tiering.ErrFenced). A
// partition without a manifest (none of its records reached the bucket)
// is restored unarchived; the others archived, so that their leaders take
// a manifest the store answers missing for an error, not for an empty one
// (tiering.ManifestStore.RequireExisting).
func (b *Broker) restoreEpochs(ctx context.Context, tv *topicView) error {
	s := b.tier
	for i := range tv.partitions {
		p := &tv.partitions[i]
		key := s.layout.ManifestKey(tiering.Partition{Topic: tv.name, TopicID: tv.id, Index: p.index})
		st := tiering.NewManifestStore(s.bucket, key, nil)
		st.RequireExisting()
		m, err := st.Load(ctx)
		switch {
		case errors.Is(err, tiering.ErrManifestMissing):
			p.unarchived = true
		case err != nil:
			return fmt.Errorf("%w: reading partition %d's manifest: %w", tiering.ErrUnavailable, p.index, err)
		default:
			p.leaderEpoch = max(p.leaderEpoch, m.LeaderEpoch+1)
		}
	}
	return nil
}
