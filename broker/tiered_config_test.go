package broker_test

import (
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/shale-log/shale/broker"
	"github.com/shale-log/shale/broker/brokertest"
	"github.com/shale-log/shale/objectstore"
)

// TestRemoteStorageEnableTakesEffectLive: a topic created without remote
// storage starts uploading as soon as AlterConfigs turns it on (no
// restart), its log reopened with its tier and not taken for a partition
// this broker no longer serves, and every record still reads from offset
// 0; turning it off again without remote.log.delete.on.disable, or a local
// retention above the total, is INVALID_CONFIG.
func TestRemoteStorageEnableTakesEffectLive(t *testing.T) {
	bucket := objectstore.NewMem()
	logs := &logCapture{}
	b := brokertest.StartWithLog(t, slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}), func(c *broker.Config) {
		c.Tiering = broker.TieringConfig{Bucket: bucket, UploadInterval: 50 * time.Millisecond, ChunkBytes: 64 << 10, CacheBytes: 8 << 20}
		c.LogRetentionCheckInterval = 100 * time.Millisecond
	})
	ctx := testCtx(t)
	adm := b.Admin()
	str := func(s string) *string { return &s }
	invalid := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, kerr.InvalidConfig) {
			t.Fatalf("%s: %v, want INVALID_CONFIG", what, err)
		}
	}
	// Refused at creation: local above the total, and -1 under a bound.
	_, err := adm.CreateTopic(ctx, 1, 1, map[string]*string{"retention.ms": str("60000"), "local.retention.ms": str("120000")}, "bad")
	invalid("local.retention.ms above retention.ms", err)
	_, err = adm.CreateTopic(ctx, 1, 1, map[string]*string{"retention.bytes": str("100000"), "local.retention.bytes": str("-1")}, "bad")
	invalid("local.retention.bytes -1 under a bounded retention.bytes", err)

	if _, err := adm.CreateTopic(ctx, 1, 1, map[string]*string{
		"segment.bytes": str("65536"), "local.retention.bytes": str("1"), "file.delete.delay.ms": str("1"),
		"remote.storage.enable": str("false"),
	}, "later"); err != nil {
		t.Fatal(err)
	}
	cl := tieredProducer(b, "later")
	produce := func(from, to int) {
		produceTieredValues(t, cl, from, to, 50)
	}
	produce(0, 400)
	time.Sleep(300 * time.Millisecond) // several upload intervals
	if n := len(listBucket(t, bucket, ".log")); n != 0 {
		t.Fatalf("%d segments uploaded with remote storage off", n)
	}
	alter := func(name, value string) error {
		rs, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Op: kadm.SetConfig, Name: name, Value: &value}}, "later")
		if err != nil {
			return err
		}
		return rs[0].Err
	}
	if err := alter("remote.storage.enable", "true"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "uploads after remote.storage.enable=true", 30*time.Second, func() bool {
		return len(listBucket(t, bucket, ".log")) > 0 && localSegments(t, b, "later") <= 2
	})
	invalid("turning remote storage off", alter("remote.storage.enable", "false"))
	invalid("local.retention.bytes above retention.bytes", func() error {
		if err := alter("retention.bytes", "1000000"); err != nil {
			t.Fatal(err)
		}
		return alter("local.retention.bytes", "2000000")
	}())
	produce(400, 500)

	requireTieredRecords(ctx, t, b, "later", 0, 500)
	logs.find(t, "reopening a partition log: tiered storage turned on or off", "topic", "later", "tiered", true)
	if r := logs.records("partition offline on this broker, its log kept"); len(r) > 0 {
		t.Fatalf("the reopened log was taken for one this broker no longer serves: %v", r)
	}
}
