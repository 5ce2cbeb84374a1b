package broker_test

import (
	"testing"
	"time"

	"github.com/shale-log/shale/objectstore"
	"github.com/shale-log/shale/tiering"
)

// A fetch served from the local log is hot traffic, as a produce is: for
// the quiet time after it, a replay's cold work copies in short steps and
// its read-ahead keeps to fewer GETs. A long poll at the log's end, which
// reads nothing, is not: an idle consumer does not slow a replay.
func TestAFetchFromTheLocalLogIsHotTraffic(t *testing.T) {
	bucket, err := objectstore.NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b := startTiered(t, bucket)
	const topic = "hotreads"
	createTopic(t, b.Admin(), topic, 1, nil) // everything stays on local disk
	cl := tieredProducer(b, topic)
	produceTieredValues(t, cl, 0, 10, 10)
	idle := func() bool { return b.B.ColdStep() == tiering.ColdStepIdle }
	waitFor(t, "the produce's quiet time to pass", 10*time.Second, idle)

	if code := fetchCode(t, cl, topic, 10); code != 0 {
		t.Fatalf("fetch at the end: error code %d", code)
	}
	if !idle() {
		t.Fatal("a fetch that read nothing counted as hot traffic")
	}
	// A pause longer than the quiet time between the fetch and the look
	// would hide it: a few tries.
	for try := 0; ; try++ {
		if code := fetchCode(t, cl, topic, 0); code != 0 {
			t.Fatalf("fetch from offset 0: error code %d", code)
		}
		if !idle() {
			break
		}
		if try == 5 {
			t.Fatal("a fetch of local records did not count as hot traffic")
		}
	}
}
