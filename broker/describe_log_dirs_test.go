package broker_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/shale-log/shale/broker/brokertest"
)

// localLogBytes is the size of the .log files in a partition directory.
func localLogBytes(t *testing.T, dir string) int64 {
	t.Helper()
	matches, err := filepath.Glob(filepath.Join(dir, "*.log"))
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, m := range matches {
		st, err := os.Stat(m)
		if err != nil {
			t.Fatal(err)
		}
		n += st.Size()
	}
	return n
}

// DescribeLogDirs reports each partition's local log size (the bytes of its
// segment files), the log dir's absolute path and its filesystem's total
// and usable bytes; a topic filter narrows the answer and unknown
// partitions are left out.
func TestDescribeLogDirsReportsPartitionSizes(t *testing.T) {
	b := brokertest.Start(t)
	adm := b.Admin()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := adm.CreateTopic(ctx, 3, 1, nil, "sized"); err != nil {
		t.Fatal(err)
	}
	if _, err := adm.CreateTopic(ctx, 1, 1, nil, "other"); err != nil {
		t.Fatal(err)
	}
	cl := b.Client(kgo.DefaultProduceTopic("sized"), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	for p, n := range []int{0, 10, 200} { // partition 0 stays empty
		for i := 0; i < n; i++ {
			r := &kgo.Record{Partition: int32(p), Value: []byte(strings.Repeat("v", 100))}
			if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
	}

	all, err := adm.DescribeAllLogDirs(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	dirs := all[0]
	if len(all) != 1 || len(dirs) != 1 {
		t.Fatalf("log dirs %+v, want one broker with one dir", all)
	}
	var d kadm.DescribedLogDir
	for _, d = range dirs {
	}
	if d.Err != nil {
		t.Fatal(d.Err)
	}
	logDir := brokertest.LogDir(b.Dir)
	if d.Dir != logDir {
		t.Fatalf("dir %q, want %q", d.Dir, logDir)
	}
	if d.TotalBytes <= 0 || d.UsableBytes <= 0 || d.UsableBytes > d.TotalBytes {
		t.Fatalf("total %d usable %d", d.TotalBytes, d.UsableBytes)
	}
	var sizes [3]int64
	for p := range 3 {
		dp, ok := d.Topics["sized"][int32(p)]
		if !ok {
			t.Fatalf("partition sized-%d missing: %+v", p, d.Topics)
		}
		want := localLogBytes(t, filepath.Join(logDir, fmt.Sprintf("sized-%d", p)))
		if dp.Size != want {
			t.Errorf("sized-%d: size %d, the segment files hold %d", p, dp.Size, want)
		}
		sizes[p] = dp.Size
	}
	if sizes[0] != 0 || sizes[1] <= 0 || sizes[2] <= sizes[1] {
		t.Fatalf("sizes %v, want 0 < 10 records < 200 records", sizes)
	}
	if _, ok := d.Topics["other"][0]; !ok {
		t.Fatalf("topic other missing from the unfiltered answer: %+v", d.Topics)
	}

	// A filter: one known partition and one that does not exist.
	some, err := adm.DescribeBrokerLogDirs(ctx, 0, kadm.TopicsSet{"sized": {2: {}, 7: {}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range some {
		if len(d.Topics) != 1 || len(d.Topics["sized"]) != 1 || d.Topics["sized"][2].Size != sizes[2] {
			t.Fatalf("filtered answer %+v, want sized-2 only", d.Topics)
		}
	}
}

// Every replica reports its own copy: followers of a replicated partition
// answer with the size of their log once they have caught up.
func TestDescribeLogDirsOnEveryReplica(t *testing.T) {
	c := brokertest.StartCluster(t, 3)
	adm := c.Admin()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := adm.CreateTopic(ctx, 1, 3, nil, "copies"); err != nil {
		t.Fatal(err)
	}
	cl := c.Client(kgo.DefaultProduceTopic("copies"), kgo.RequiredAcks(kgo.AllISRAcks()))
	for i := 0; i < 50; i++ {
		if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte(strings.Repeat("c", 200))}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	brokertest.WaitFor(t, 30*time.Second, "three replicas of the same size", func() (bool, string) {
		all, err := adm.DescribeAllLogDirs(ctx, kadm.TopicsSet{"copies": {0: {}}})
		if err != nil {
			return false, err.Error()
		}
		sizes := map[int32]int64{}
		all.Each(func(d kadm.DescribedLogDir) {
			if p, ok := d.Topics["copies"][0]; ok {
				sizes[d.Broker] = p.Size
			}
		})
		ok := len(sizes) == 3 && sizes[0] > 0 && sizes[0] == sizes[1] && sizes[1] == sizes[2]
		return ok, fmt.Sprint(sizes)
	})
}
