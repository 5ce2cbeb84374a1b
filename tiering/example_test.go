package tiering_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/shale-log/shale/localseg"
	"github.com/shale-log/shale/localseg/recordbatch"
	"github.com/shale-log/shale/objectstore"
	"github.com/shale-log/shale/tiering"
)

// Reading a partition's history from the bucket alone: list the topics
// from their descriptors, load a partition's manifest, read its batches.
// No broker and no etcd are involved; the first half of the example only
// fills a bucket as a broker would.
func Example_readBucket() {
	ctx := context.Background()
	bucket := objectstore.NewMem()
	layout := tiering.Layout{Prefix: "archive"}
	fillBucket(ctx, bucket, layout)

	reader, _ := tiering.NewReader(tiering.ReaderConfig{Bucket: bucket, Layout: layout})
	defer reader.Close()
	topics, _ := tiering.ListTopics(ctx, bucket, layout)
	for _, td := range topics {
		id, _ := td.TopicID()
		for i := int32(0); i < td.Partitions; i++ {
			p := tiering.Partition{Topic: td.Name, TopicID: id, Index: i}
			m, _ := tiering.LoadManifest(ctx, bucket, layout, p)
			fmt.Printf("%s: offsets [%d, %d) in %d segments\n", p, m.Start(), m.End(), len(m.Segments))
			tiering.ReadBatches(ctx, reader, p, m, 0, func(b recordbatch.Batch) error {
				return recordbatch.Records(ctx, b, recordbatch.ValidateOptions{}, func(r recordbatch.Record) error {
					if r.Offset%4 == 0 {
						fmt.Printf("%d %s\n", r.Offset, r.Value)
					}
					return nil
				})
			})
		}
	}
	// Output:
	// orders-0: offsets [0, 11) in 3 segments
	// 0 order-0
	// 4 order-4
	// 8 order-8
}

// fillBucket uploads a small partition as a broker's leader would.
func fillBucket(ctx context.Context, bucket objectstore.Bucket, layout tiering.Layout) {
	dir, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(dir)
	log, _ := localseg.Open(dir, localseg.Config{SegmentBytes: 300}, localseg.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	defer log.Close()
	for i := 0; i < 13; i++ {
		b, _ := recordbatch.Build(nil, recordbatch.BuildOptions{ProducerID: -1, ProducerEpoch: -1, BaseSequence: -1, BaseTimestamp: int64(i)},
			[]recordbatch.Record{{Value: []byte(fmt.Sprintf("order-%d", i))}})
		log.AppendAsLeader(b, 0)
	}
	id := [16]byte{7}
	p := tiering.Partition{Topic: "orders", TopicID: id, Index: 0}
	store := tiering.NewManifestStore(bucket, layout.ManifestKey(p), nil)
	store.Load(ctx)
	a := tiering.NewArchiver(tiering.ArchiverConfig{Bucket: bucket, Layout: layout, Partition: p, Manifest: store, Source: log})
	for {
		if n, err := a.UploadNext(ctx, 0, log.LogEndOffset()); n == 0 || err != nil {
			break
		}
	}
	tiering.PutTopic(ctx, bucket, layout, tiering.TopicDescriptor{Name: "orders", ID: tiering.TopicDir("orders", id)[len("orders-"):], Partitions: 1})
}
