package main

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/shale-log/shale/broker"
	"github.com/shale-log/shale/broker/group"
	"github.com/shale-log/shale/objectstore"
	"github.com/shale-log/shale/tiering"
)

// restoreReport is what topic restore did.
type restoreReport struct {
	Topics []restoredTopic `json:"topics"`
	Groups []restoredGroup `json:"groups"`
}

type restoredGroup struct {
	Group      string `json:"group"`
	Partitions int    `json:"partitions"`
	// Result: restored, or exists (the group has committed offsets in
	// the cluster already; left as they are).
	Result string `json:"result"`
}

type restoredTopic struct {
	Topic             string `json:"topic"`
	ID                string `json:"id"`
	Partitions        int32  `json:"partitions"`
	ReplicationFactor int16  `json:"replication_factor,omitempty"`
	// Result: restored, valid (--dry-run), or exists (the cluster has the
	// topic under that id already).
	Result string `json:"result"`
}

func newTopicRestoreCmd() *cobra.Command {
	var (
		out      outputFlag
		rf       int16
		storeURL string
		dryRun   bool
		noGroups bool
	)
	cmd := &cobra.Command{
		Use:   "restore [NAME...] --object-store URL",
		Short: "Create a lost cluster's topics again from the object store",
		Long: `Rebuilds topics from the object store alone, after their cluster's metadata
(etcd) and disks are lost: reads the topics the bucket holds (each one's name,
id, partitions and configs, from its topic.json) and creates them in the
cluster under the same ids. Every topic of the bucket that is not deleted, or
the NAMEs. The brokers must tier to the same object store (their
--object-store), which they check. Each partition's leader reads its
manifest before it takes produce, serves the history from the bucket, and
continues the offsets where the bucket ends; what was never uploaded (the
last segments of each partition) is lost with the disks. Then the consumer
groups get back the offsets they had committed on those topics, as the
brokers last wrote them to the bucket (every minute), each at most the
partition's new end (--no-groups leaves them); a group deleted before the
loss stays deleted. Topics the cluster holds under
the same id already, and groups with committed offsets in it, are left as
they are, so the command can run again: after a --timeout (which bounds the
whole command; raise it for many topics) it goes on where it stopped.`,
		Example: `  shale topic restore --object-store 's3://logs/shale?region=eu-west-1' -r 3
  shale topic restore orders --object-store file:///var/lib/shale/objects --dry-run`,
		RunE: func(cmd *cobra.Command, names []string) error {
			if err := out.check(); err != nil {
				return err
			}
			if storeURL == "" {
				return fmt.Errorf("--object-store: the URL the cluster's brokers tier to")
			}
			return runAdmin(cmd, func(ctx context.Context, adm *kadm.Client, _ *cliClient) error {
				bucket, descs, err := openBucketTopics(ctx, storeURL, names, nil)
				if err != nil {
					return err
				}
				defer bucket.Close()
				existing, err := adm.ListTopicsWithInternal(ctx)
				if err != nil {
					return err
				}
				var done []restoredTopic
				var errs []error
				restored := map[string]string{} // topic -> id, in the cluster now
				for _, d := range descs {
					r := restoredTopic{Topic: d.Name, ID: d.ID, Partitions: d.Partitions}
					if td, ok := existing[d.Name]; ok {
						if kafkaUUID(td.ID) != d.ID {
							errs = append(errs, fmt.Errorf("topic %s: the cluster has a topic of that name with the id %s, the object store's is %s", d.Name, kafkaUUID(td.ID), d.ID))
							continue
						}
						r.Result = "exists"
						done = append(done, r)
						restored[d.Name] = d.ID
						continue
					}
					cfg := map[string]*string{broker.RestoreTopicIDConfig: &d.ID}
					for k, v := range d.Configs {
						cfg[k] = &v
					}
					create := adm.CreateTopics
					r.Result = "restored"
					if dryRun {
						create, r.Result = adm.ValidateCreateTopics, "valid"
					}
					resps, err := create(ctx, d.Partitions, rf, cfg, d.Name)
					if err == nil {
						err = resps[d.Name].Err
					}
					if err != nil {
						errs = append(errs, kafkaErr("topic", d.Name, err, resps[d.Name].ErrMessage))
						continue
					}
					r.ReplicationFactor = resps[d.Name].ReplicationFactor
					done = append(done, r)
					if !dryRun {
						restored[d.Name] = d.ID
					}
				}
				report := restoreReport{Topics: done, Groups: []restoredGroup{}}
				if !dryRun && !noGroups && len(restored) > 0 {
					groups, gerrs := restoreGroups(ctx, adm, bucket, restored)
					report.Groups, errs = groups, append(errs, gerrs...)
				}
				if out.json() {
					if err := writeJSON(cmd, report); err != nil {
						return err
					}
				} else {
					if len(done) > 0 {
						t := newTable(cmd, "TOPIC", "ID", "PARTITIONS", "REPLICATION-FACTOR", "RESULT")
						for _, r := range done {
							t.row(r.Topic, r.ID, r.Partitions, r.ReplicationFactor, r.Result)
						}
						t.flush()
					}
					if len(report.Groups) > 0 {
						fmt.Fprintln(cmd.OutOrStdout())
						t := newTable(cmd, "GROUP", "PARTITIONS", "RESULT")
						for _, g := range report.Groups {
							t.row(g.Group, g.Partitions, g.Result)
						}
						t.flush()
					}
				}
				return joinErrs(errs)
			})
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&storeURL, "object-store", "", "the object store the cluster's brokers tier to (their --object-store URL)")
	fs.Int16VarP(&rf, "replication-factor", "r", -1, "replicas of each partition (default: the broker's default.replication.factor)")
	fs.BoolVar(&dryRun, "dry-run", false, "check every topic with the brokers (ValidateOnly) and create none")
	fs.BoolVar(&noGroups, "no-groups", false, "leave the consumer groups' committed offsets out")
	out.register(fs)
	return cmd
}

// openBucketTopics opens the object store of --object-store and lists the
// topics it holds: those names names, or all of them. With damaged, a
// topic descriptor that does not decode is named to it and left out,
// rather than failing the listing.
func openBucketTopics(ctx context.Context, storeURL string, names []string, damaged func(key string, err error)) (objectstore.Bucket, []*tiering.TopicDescriptor, error) {
	bucket, err := objectstore.Open(ctx, storeURL, objectstore.OpenOptions{})
	if err != nil {
		return nil, nil, fmt.Errorf("--object-store: %w", err)
	}
	list := tiering.ListTopics
	if damaged != nil {
		list = func(ctx context.Context, b objectstore.Bucket, l tiering.Layout) ([]*tiering.TopicDescriptor, error) {
			return tiering.ListTopicsSkippingDamage(ctx, b, l, damaged)
		}
	}
	descs, err := list(ctx, bucket, tiering.Layout{})
	if err != nil {
		bucket.Close()
		return nil, nil, fmt.Errorf("listing the object store's topics: %w", err)
	}
	if descs, err = pickTopics(descs, names); err != nil {
		bucket.Close()
		return nil, nil, err
	}
	return bucket, descs, nil
}

// pickTopics keeps the descriptors named (all of them without names), in
// name order; a name the bucket does not hold is an error.
func pickTopics(descs []*tiering.TopicDescriptor, names []string) ([]*tiering.TopicDescriptor, error) {
	slices.SortFunc(descs, func(a, b *tiering.TopicDescriptor) int { return strings.Compare(a.Name, b.Name) })
	if len(names) == 0 {
		return descs, nil
	}
	var out []*tiering.TopicDescriptor
	var missing []string
	for _, n := range names {
		i := slices.IndexFunc(descs, func(d *tiering.TopicDescriptor) bool { return d.Name == n })
		if i < 0 {
			missing = append(missing, n)
			continue
		}
		out = append(out, descs[i])
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("the object store holds no topic %s", strings.Join(missing, ", "))
	}
	return out, nil
}

// groupsToRestore picks each group's committed offsets from the bucket's
// group objects (tiering.GroupShard): those of the newest object that
// speaks for the group, or none when that object does not name it. An
// object speaks for the groups it names and, when it records its cluster's
// partition count, for every group that maps to its partition: a group
// deleted in the newest cluster that held it stays deleted, though an
// older cluster's object still names it.
func groupsToRestore(shards []*tiering.GroupShard) map[string][]tiering.GroupOffset {
	// What each object names, by group, and every group named.
	names := make([]map[string][]tiering.GroupOffset, len(shards))
	groups := map[string]bool{}
	for i, s := range shards {
		names[i] = make(map[string][]tiering.GroupOffset, len(s.Groups))
		for _, g := range s.Groups {
			names[i][g.Group] = g.Offsets
			groups[g.Group] = true
		}
	}
	out := map[string][]tiering.GroupOffset{}
	for g := range groups {
		var newest *tiering.GroupShard
		var offsets []tiering.GroupOffset
		has := false
		for i, s := range shards {
			o, ok := names[i][g]
			speaks := ok || s.Partitions > 0 && group.PartitionFor(g, s.Partitions) == s.Partition
			if speaks && (newest == nil || s.UpdatedAt.After(newest.UpdatedAt)) {
				newest, offsets, has = s, o, ok
			}
		}
		if has {
			out[g] = offsets
		}
	}
	return out
}

// restoreGroups commits, for every group in the bucket's offsets objects
// with no committed offsets in the cluster, its offsets on the topics
// restored (topic -> id; offsets of a topic of another id are left out),
// each at most its partition's end. When a group is in several objects
// (of several clusters), the newest counts.
func restoreGroups(ctx context.Context, adm *kadm.Client, bucket objectstore.Bucket, restored map[string]string) ([]restoredGroup, []error) {
	shards, err := tiering.ListGroupShards(ctx, bucket, tiering.Layout{})
	if err != nil {
		return nil, []error{fmt.Errorf("listing the object store's group offsets: %w", err)}
	}
	offsets := groupsToRestore(shards)
	if len(offsets) == 0 {
		return nil, nil
	}
	ends, err := restoredEnds(ctx, adm, slices.Collect(maps.Keys(restored)))
	if err != nil {
		return nil, []error{err}
	}
	var out []restoredGroup
	var errs []error
	for _, group := range slices.Sorted(maps.Keys(offsets)) {
		commit, n := kadm.Offsets{}, 0
		for _, o := range offsets[group] {
			end, ok := ends.Lookup(o.Topic, o.Partition)
			if restored[o.Topic] != o.TopicID || !ok {
				continue
			}
			commit.Add(kadm.Offset{Topic: o.Topic, Partition: o.Partition, At: min(o.Offset, end.Offset), LeaderEpoch: -1})
			n++
		}
		if n == 0 {
			continue
		}
		var have kadm.OffsetResponses
		err := retryRetriable(ctx, func() (err error) {
			if have, err = adm.FetchOffsets(ctx, group); err == nil {
				err = have.Error()
			}
			return err
		})
		if err != nil {
			errs = append(errs, kafkaErr("group", group, err, ""))
			continue
		}
		if len(have) > 0 {
			out = append(out, restoredGroup{Group: group, Partitions: n, Result: "exists"})
			continue
		}
		err = retryRetriable(ctx, func() error {
			resp, err := adm.CommitOffsets(ctx, group, commit)
			if err == nil {
				err = resp.Error()
			}
			return err
		})
		if err != nil {
			errs = append(errs, kafkaErr("group", group, err, ""))
			continue
		}
		out = append(out, restoredGroup{Group: group, Partitions: n, Result: "restored"})
	}
	return out, errs
}

// restoredEnds is the end offsets of topics, asked again while a partition
// answers with a retriable error (a restored partition's leader reads its
// manifest first) until ctx ends.
func restoredEnds(ctx context.Context, adm *kadm.Client, topics []string) (ends kadm.ListedOffsets, err error) {
	ends, err = listedOffsets(ctx, func() (kadm.ListedOffsets, error) { return adm.ListEndOffsets(ctx, topics...) })
	if err != nil {
		return nil, fmt.Errorf("the restored topics' end offsets: %w", err)
	}
	return ends, nil
}
