package tiering

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/shale-log/shale/objectstore"
)

// ArchiveFormat is the archive descriptor's format name.
const ArchiveFormat = "shale-tiered-storage"

// maxDescriptorSize bounds what reading a descriptor allocates.
const maxDescriptorSize = 1 << 20

// ArchiveDescriptor says what a bucket (under a prefix) holds.
type ArchiveDescriptor struct {
	Format    string    `json:"format"`
	Version   int       `json:"version"`
	CreatedAt time.Time `json:"created_at"`
}

// TopicDescriptor describes a topic: enough to read its partitions from
// the bucket alone.
type TopicDescriptor struct {
	Name       string            `json:"name"`
	ID         string            `json:"id"` // base64url, unpadded
	Partitions int32             `json:"partitions"`
	Configs    map[string]string `json:"configs,omitempty"`
	UpdatedAt  time.Time         `json:"updated_at"`
}

// DeletionMarker says a topic was deleted and its objects are going.
type DeletionMarker struct {
	Name      string    `json:"name"`
	ID        string    `json:"id"`
	DeletedAt time.Time `json:"deleted_at"`
}

// SweepNote is what a partition's leader notes of its orphan sweeps for
// the next leader: the objects that failed uploads left, and that the
// sweeps up to SweptAt did not delete, have base offsets of UploadsFrom or
// above. (Every upload starts at the manifest's end, which only grows.)
// A new leader lists from there, not the partition's whole history.
type SweepNote struct {
	LeaderEpoch int32     `json:"leader_epoch"`
	UploadsFrom int64     `json:"uploads_from"`
	SweptAt     time.Time `json:"swept_at"`
}

// DecodeSweepNote decodes and checks a sweep note.
func DecodeSweepNote(data []byte) (*SweepNote, error) {
	var n SweepNote
	if err := decodeJSON(data, &n); err != nil {
		return nil, err
	}
	if n.LeaderEpoch < 0 || n.UploadsFrom < 0 {
		return nil, fmt.Errorf("%w: sweep note: epoch %d, uploads from %d", ErrCorrupt, n.LeaderEpoch, n.UploadsFrom)
	}
	return &n, nil
}

// readSweepNote reads and checks partition p's sweep note.
func readSweepNote(ctx context.Context, b objectstore.Bucket, l Layout, p Partition) (*SweepNote, error) {
	data, err := objectstore.ReadAll(ctx, b, l.SweepNoteKey(p), maxDescriptorSize)
	if err != nil {
		return nil, err
	}
	return DecodeSweepNote(data)
}

// readPartitionNote reads a partition's note at key (a cleaner or scrub note): nil
// when there is none, or it does not decode (the note's reader starts
// afresh then).
func readPartitionNote[T any](ctx context.Context, b objectstore.Bucket, key string, decode func([]byte) (*T, error)) (*T, error) {
	data, err := objectstore.ReadAll(ctx, b, key, maxDescriptorSize)
	if errors.Is(err, objectstore.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrUnavailable, key, err)
	}
	n, err := decode(data)
	if err != nil {
		return nil, nil
	}
	return n, nil
}

// TopicID decodes the descriptor's id.
func (d *TopicDescriptor) TopicID() ([16]byte, error) { return ParseTopicID(d.ID) }

// ParseTopicID decodes a topic id as the archive writes it (unpadded
// base64url of 16 bytes).
func ParseTopicID(s string) ([16]byte, error) {
	var id [16]byte
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(raw) != 16 {
		return id, fmt.Errorf("%w: bad topic id %q", ErrCorrupt, s)
	}
	copy(id[:], raw)
	return id, nil
}

// decodeJSON decodes one descriptor strictly: unknown fields are allowed
// (newer writers may add some), trailing data is not.
func decodeJSON(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: descriptor: %v", ErrCorrupt, err)
	}
	if dec.More() {
		return fmt.Errorf("%w: descriptor: trailing data", ErrCorrupt)
	}
	return nil
}

// DecodeArchiveDescriptor decodes and checks an archive descriptor.
func DecodeArchiveDescriptor(data []byte) (*ArchiveDescriptor, error) {
	var d ArchiveDescriptor
	if err := decodeJSON(data, &d); err != nil {
		return nil, err
	}
	if d.Format != ArchiveFormat || d.Version != formatVersion {
		return nil, fmt.Errorf("%w: archive descriptor: format %q version %d", ErrCorrupt, d.Format, d.Version)
	}
	return &d, nil
}

// DecodeTopicDescriptor decodes and checks a topic descriptor.
func DecodeTopicDescriptor(data []byte) (*TopicDescriptor, error) {
	var d TopicDescriptor
	if err := decodeJSON(data, &d); err != nil {
		return nil, err
	}
	if d.Name == "" || d.Partitions < 0 {
		return nil, fmt.Errorf("%w: topic descriptor: name %q, %d partitions", ErrCorrupt, d.Name, d.Partitions)
	}
	if _, err := d.TopicID(); err != nil {
		return nil, err
	}
	return &d, nil
}

// DecodeDeletionMarker decodes a deletion marker.
func DecodeDeletionMarker(data []byte) (*DeletionMarker, error) {
	var d DeletionMarker
	if err := decodeJSON(data, &d); err != nil {
		return nil, err
	}
	if d.Name == "" || d.ID == "" {
		return nil, fmt.Errorf("%w: deletion marker without name or id", ErrCorrupt)
	}
	return &d, nil
}

func putJSON(ctx context.Context, b objectstore.Bucket, key string, v any, opts objectstore.PutOptions) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	data = append(data, '\n')
	_, err = b.Put(ctx, key, bytes.NewReader(data), int64(len(data)), opts)
	if err != nil && !errors.Is(err, objectstore.ErrPreconditionFailed) && ctx.Err() == nil {
		// The outcome is unknown (a response lost after the write
		// took): it took if the key holds these bytes (each descriptor
		// carries its time, so no older write holds the same).
		if got, rerr := objectstore.ReadAll(ctx, b, key, int64(len(data))); rerr == nil && bytes.Equal(got, data) {
			return nil
		}
	}
	return err
}

// EnsureArchive writes the archive descriptor if the bucket has none, and
// checks it when it has one.
func EnsureArchive(ctx context.Context, b objectstore.Bucket, l Layout, now time.Time) error {
	data, err := objectstore.ReadAll(ctx, b, l.ArchiveKey(), maxDescriptorSize)
	switch {
	case err == nil:
		_, err = DecodeArchiveDescriptor(data)
		return err
	case !errors.Is(err, objectstore.ErrNotFound):
		return fmt.Errorf("tiering: reading the archive descriptor: %w", err)
	}
	err = putJSON(ctx, b, l.ArchiveKey(), ArchiveDescriptor{Format: ArchiveFormat, Version: formatVersion, CreatedAt: now.UTC()}, objectstore.PutOptions{IfNoneMatch: true})
	if errors.Is(err, objectstore.ErrPreconditionFailed) {
		return nil // another broker wrote it first
	}
	return err
}

// PutTopic writes (or replaces) a topic's descriptor.
func PutTopic(ctx context.Context, b objectstore.Bucket, l Layout, d TopicDescriptor) error {
	id, err := d.TopicID()
	if err != nil {
		return err
	}
	return putJSON(ctx, b, l.TopicKey(d.Name, id), d, objectstore.PutOptions{})
}

// ReadTopic reads a topic's descriptor.
func ReadTopic(ctx context.Context, b objectstore.Bucket, l Layout, topic string, id [16]byte) (*TopicDescriptor, error) {
	data, err := objectstore.ReadAll(ctx, b, l.TopicKey(topic, id), maxDescriptorSize)
	if err != nil {
		return nil, err
	}
	return DecodeTopicDescriptor(data)
}

// ListTopics lists the topic descriptors in the bucket, skipping deleted
// topics, in the order of their directories. It lists the bucket's
// directories, not its objects, and reads each topic's descriptor and
// marker: its cost follows the topics, however many segments they hold.
func ListTopics(ctx context.Context, b objectstore.Bucket, l Layout) ([]*TopicDescriptor, error) {
	return listTopics(ctx, b, l, nil)
}

// ListTopicsSkippingDamage is ListTopics that skips a descriptor that
// does not decode (ErrCorrupt), naming its key and error to damaged
// (called from several goroutines at once), instead of failing.
func ListTopicsSkippingDamage(ctx context.Context, b objectstore.Bucket, l Layout, damaged func(key string, err error)) ([]*TopicDescriptor, error) {
	return listTopics(ctx, b, l, damaged)
}

func listTopics(ctx context.Context, b objectstore.Bucket, l Layout, damaged func(key string, err error)) ([]*TopicDescriptor, error) {
	return eachTopicDir(ctx, b, l, func(ctx context.Context, dir string) (*TopicDescriptor, error) {
		if _, err := b.Head(ctx, dir+deletedName); err == nil {
			return nil, nil // deleted
		} else if !errors.Is(err, objectstore.ErrNotFound) {
			return nil, err
		}
		data, err := objectstore.ReadAll(ctx, b, dir+topicName, maxDescriptorSize)
		if errors.Is(err, objectstore.ErrNotFound) {
			return nil, nil // no descriptor (yet): not a topic of the archive
		}
		if err != nil {
			return nil, err
		}
		d, err := DecodeTopicDescriptor(data)
		if err != nil {
			if damaged != nil && errors.Is(err, ErrCorrupt) {
				damaged(dir+topicName, err)
				return nil, nil
			}
			return nil, fmt.Errorf("%s: %w", dir+topicName, err)
		}
		return d, nil
	})
}

// dirConcurrency bounds the requests in flight when every topic
// directory of a bucket is looked at.
const dirConcurrency = 16

// eachTopicDir calls fn for each of the bucket's topic directories ("P/T/":
// every directory under the prefix but the groups' offsets), up to
// dirConcurrency at once, and returns what fn found, in directory order,
// leaving out nils; or the first error.
func eachTopicDir[T any](ctx context.Context, b objectstore.Bucket, l Layout, fn func(ctx context.Context, dir string) (*T, error)) ([]*T, error) {
	prefix := strings.TrimSuffix(l.join("x"), "x")
	var dirs []string
	if err := b.ListDirs(ctx, prefix, func(d string) error {
		if d != prefix+groupsDir+"/" {
			dirs = append(dirs, d)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	found := make([]*T, len(dirs))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(dirConcurrency)
	for i, d := range dirs {
		g.Go(func() (err error) {
			found[i], err = fn(gctx, d)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	var out []*T
	for _, v := range found {
		if v != nil {
			out = append(out, v)
		}
	}
	return out, nil
}
