package broker_test

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/shale-log/shale/broker"
	"github.com/shale-log/shale/broker/brokertest"
)

// A byte flipped in a sealed segment under a running broker is found by
// the scrubber (counted once, recorded in the lost-ranges file); consumers
// get no corrupt record and read on past the damage. Regression: the
// scrubber counted the same damage again at every pass and recorded none.
func TestScrubberFindsCorruptionUnderARunningBroker(t *testing.T) {
	b := brokertest.Start(t, func(c *broker.Config) { c.ScrubInterval = 300 * time.Millisecond })
	seg := "2048"
	createTopic(t, b.Admin(), "scrubbed", 1, map[string]*string{"segment.bytes": &seg})
	cl := b.Client(kgo.DefaultProduceTopic("scrubbed"))
	const n = 60
	for i := range n {
		produceSync(t, cl, &kgo.Record{Value: fmt.Appendf(nil, "record-%03d-%0200d", i, i)})
	}
	dir := filepath.Join(brokertest.LogDir(b.Dir), "scrubbed-0")
	logs, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	sort.Strings(logs)
	if len(logs) < 3 {
		t.Fatalf("only %d segments", len(logs))
	}
	// Flip a byte inside the first batch's records of the second segment.
	f, err := os.OpenFile(logs[1], os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	var one [1]byte
	f.ReadAt(one[:], 100)
	one[0] ^= 0xff
	f.WriteAt(one[:], 100)
	f.Close()

	brokertest.WaitFor(t, 10*time.Second, "the scrubber to find the damage", func() (bool, string) {
		v, _ := gather(t, b.Registry).get("shale_lost_ranges_total", "")
		_, err := os.Stat(filepath.Join(dir, "lost-ranges"))
		return v >= 1 && err == nil, fmt.Sprintf("shale_lost_ranges_total = %v, lost-ranges file: %v", v, err)
	})

	// Known damage is not counted again at each pass.
	found, _ := gather(t, b.Registry).get("shale_lost_ranges_total", "")
	time.Sleep(time.Second)
	if v, _ := gather(t, b.Registry).get("shale_lost_ranges_total", ""); v != found {
		t.Fatalf("shale_lost_ranges_total went from %v to %v with no new damage", found, v)
	}

	got := map[int]bool{}
	recs := consumeN(t, b, "scrubbed", n-1)
	for _, r := range recs {
		var i int
		if _, err := fmt.Sscanf(string(r.Value[:10]), "record-%03d", &i); err != nil || string(r.Value) != fmt.Sprintf("record-%03d-%0200d", i, i) {
			t.Fatalf("a corrupt record was served at offset %d: %q", r.Offset, r.Value)
		}
		got[i] = true
	}
	if !got[0] || !got[n-1] {
		t.Fatalf("the records around the damage are not all readable: have first %v, last %v", got[0], got[n-1])
	}
}
