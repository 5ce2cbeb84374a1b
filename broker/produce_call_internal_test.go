package broker

import (
	"os"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/localseg"
	"github.com/shale-log/shale/localseg/vfs"
)

// gatedSyncFS holds every fsync while its gate is set.
type gatedSyncFS struct {
	vfs.FS
	mu   sync.Mutex
	gate chan struct{}
}

func (g *gatedSyncFS) OpenFile(name string, flag int, perm os.FileMode) (vfs.File, error) {
	f, err := g.FS.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return &gatedSyncFile{File: f, g: g}, nil
}

func (g *gatedSyncFS) hold() {
	g.mu.Lock()
	g.gate = make(chan struct{})
	g.mu.Unlock()
}

func (g *gatedSyncFS) release() {
	g.mu.Lock()
	if g.gate != nil {
		close(g.gate)
		g.gate = nil
	}
	g.mu.Unlock()
}

type gatedSyncFile struct {
	vfs.File
	g *gatedSyncFS
}

func (f *gatedSyncFile) Sync() error {
	f.g.mu.Lock()
	gate := f.g.gate
	f.g.mu.Unlock()
	if gate != nil {
		<-gate
	}
	return f.File.Sync()
}

// A produce call goes back to its connection for reuse only once nothing
// refers to it: an acks=all request that timed out is answered and its
// answer written, but the log's durability wait still holds its slot, so
// the call is reused only after the sync tells it. Reused, it is as new.
func TestProduceCallIsReusedOnlyWhenNothingRefersToIt(t *testing.T) {
	fs := &gatedSyncFS{FS: vfs.OSFS{}}
	log, err := localseg.Open(t.TempDir(), localseg.Config{}, localseg.Options{FS: fs})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { log.Close() })
	t.Cleanup(fs.release) // before the log closes
	p := newPartition("calls", [16]byte{1}, 0, 1, log, &topicConfig{maxMessageBytes: 1 << 20, timestampBeforeMax: 1 << 62, timestampAfterMax: 1 << 62, minInsyncReplicas: 1})
	p.setLeadership(leadership{leader: 1, leaderEpoch: 1, replicas: []int32{1}, isr: []int32{1}, partitionEpoch: 0})
	client, c, writerDone := startWriter(t, 8)

	fs.hold()
	res := appendOneRecord(t, p)
	pc := c.newCall()
	h := requestHeader{key: int16(kmsg.Produce), version: 7, correlationID: 1}
	pe := &pc.pend
	pe.header, pe.start, pe.observed = h, time.Now(), true
	pe.req = request{conn: c, header: h, p: pe}
	pc.respBuf = kmsg.NewProduceResponse()
	pc.respBuf.Version = 7
	pc.respBuf.Topics = []kmsg.ProduceResponseTopic{{Topic: "calls", Partitions: []kmsg.ProduceResponseTopicPartition{{Partition: 0, BaseOffset: res.FirstOffset}}}}
	w := &pc.wait
	w.r, w.resp, w.pc = &pe.req, &pc.respBuf, pc
	w.slots = append(pc.slotsBuf[:0], waitSlot{p: p, offset: res.LastOffset + 1, durable: true})
	c.inflight.Add(1)
	c.queued.Add(1)
	c.queue <- pe
	w.start(50 * time.Millisecond)
	pc.unref() // the reader is done with it

	if got := produceErrorCode(t, readAnswer(t, client, 1)); got != kerr.RequestTimedOut.Code {
		t.Fatalf("error %d, want REQUEST_TIMED_OUT", got)
	}
	for c.queued.Load() != 0 {
		time.Sleep(time.Millisecond) // the writer is done with it
	}
	time.Sleep(20 * time.Millisecond)
	if n := len(c.calls); n != 0 {
		t.Fatalf("%d calls back for reuse while the log's durability wait refers to one", n)
	}
	fs.release()
	deadline := time.Now().Add(30 * time.Second)
	for len(c.calls) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the call did not come back once its durability wait was told")
		}
		time.Sleep(time.Millisecond)
	}
	again := c.newCall()
	if again != pc {
		t.Fatal("a new call, not the one given back")
	}
	if again.pend.state.Load() != answerOpen || again.refs.Load() != 2 || again.wait.slots != nil || again.resp != nil {
		t.Fatalf("a reused call is not as new: state %d, %d references, %d slots", again.pend.state.Load(), again.refs.Load(), len(again.wait.slots))
	}
	stopWriter(t, c, writerDone)
}
