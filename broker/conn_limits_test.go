package broker_test

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker"
	"github.com/shale-log/shale/broker/brokertest"
)

// healthy checks that a new client is served promptly.
func healthy(t *testing.T, b *brokertest.Broker) {
	t.Helper()
	// A blocked client waits until the clients blocking it go away; 15 s
	// only leaves room for creating the topic on a loaded machine.
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	cl := b.Client(kgo.AllowAutoTopicCreation())
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "healthy", Value: []byte("v")}).FirstErr(); err != nil {
		t.Fatalf("a healthy client was not served: %v", err)
	}
}

// Regression: the request budget was taken for a frame's declared size
// before its bytes arrived, and nothing bounded the wait for them: one
// client declaring a 100 MiB frame and sending nothing more (or 50
// declaring 4 MiB each) blocked every other client until it disconnected.
// Now bytes are reserved as they arrive, and a frame that does not arrive
// within the request read timeout closes its connection.
func TestStalledFramesDoNotBlockOtherClients(t *testing.T) {
	b := brokertest.Start(t, func(c *broker.Config) {
		c.QueuedMaxRequestBytes = 4 << 20
		c.RequestReadTimeout = 2 * time.Second
	})
	healthy(t, b)
	var stalled []net.Conn
	big := dial(t, b.Addr)
	big.Write(binary.BigEndian.AppendUint32(nil, 100<<20))
	big.Write(make([]byte, 3<<20)) // 3 MiB of the 100 declared, then nothing
	stalled = append(stalled, big)
	for i := 0; i < 50; i++ {
		c := dial(t, b.Addr)
		c.Write(append(binary.BigEndian.AppendUint32(nil, 4<<20), 0, 1, 2, 3))
		stalled = append(stalled, c)
	}
	time.Sleep(200 * time.Millisecond)
	if used := b.B.RequestMemoryInUse(); used > 8<<20 {
		t.Errorf("stalled frames hold %d bytes of request memory", used)
	}
	healthy(t, b)
	// The stalled connections are closed once their requests' time is up,
	// and give their memory back.
	for _, c := range stalled {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		expectClosed(t, c)
	}
	deadline := time.Now().Add(2 * time.Second)
	for b.B.RequestMemoryInUse() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if used := b.B.RequestMemoryInUse(); used != 0 {
		t.Errorf("%d bytes of request memory held after the stalled connections closed", used)
	}
	healthy(t, b)
}

// connections.max.idle.ms closes a connection with nothing in flight, but
// not one waiting on a long poll.
func TestIdleConnectionsAreClosed(t *testing.T) {
	b := brokertest.Start(t, func(c *broker.Config) { c.ConnectionsMaxIdle = 300 * time.Millisecond })
	createTopic(t, b.Admin(), "idle", 1, nil)
	idle := dial(t, b.Addr)
	start := time.Now()
	expectClosed(t, idle)
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Fatalf("closed after %s, before the idle time", d)
	}

	// A fetch that waits longer than the idle time is answered.
	c := dial(t, b.Addr)
	fetch := kmsg.NewPtrFetchRequest()
	fetch.Version = 11
	fetch.ReplicaID = -1
	fetch.MaxWaitMillis = 1000
	fetch.MinBytes = 1
	fetch.MaxBytes = 1 << 20
	fetch.SessionEpoch = -1
	fp := kmsg.NewFetchRequestTopicPartition()
	fp.PartitionMaxBytes = 1 << 20
	ft := kmsg.NewFetchRequestTopic()
	ft.Topic, ft.Partitions = "idle", []kmsg.FetchRequestTopicPartition{fp}
	fetch.Topics = append(fetch.Topics, ft)
	var f kmsg.RequestFormatter
	if _, err := c.Write(f.AppendRequest(nil, fetch, 7)); err != nil {
		t.Fatal(err)
	}
	resp := readFrame(t, c)
	if corr := binary.BigEndian.Uint32(resp); corr != 7 {
		t.Fatalf("correlation id %d", corr)
	}
}

func sessionFetch(topic string, sessionID, epoch, maxWaitMs int32) *kmsg.FetchRequest {
	fetch := kmsg.NewPtrFetchRequest()
	fetch.Version = 12
	fetch.ReplicaID = -1
	fetch.MaxWaitMillis = maxWaitMs
	fetch.MinBytes = 1
	fetch.MaxBytes = 1 << 20
	fetch.SessionID, fetch.SessionEpoch = sessionID, epoch
	if topic != "" {
		fp := kmsg.NewFetchRequestTopicPartition()
		fp.PartitionMaxBytes = 1 << 20
		ft := kmsg.NewFetchRequestTopic()
		ft.Topic, ft.Partitions = topic, []kmsg.FetchRequestTopicPartition{fp}
		fetch.Topics = append(fetch.Topics, ft)
	}
	return fetch
}

func roundTripFetch(t *testing.T, c net.Conn, req *kmsg.FetchRequest, corr int32) *kmsg.FetchResponse {
	t.Helper()
	f := kmsg.NewRequestFormatter(kmsg.FormatterClientID("sess"))
	if _, err := c.Write(f.AppendRequest(nil, req, corr)); err != nil {
		t.Fatal(err)
	}
	raw := readFrame(t, c)
	resp := kmsg.NewPtrFetchResponse()
	resp.Version = req.Version
	if err := resp.ReadFrom(raw[5:]); err != nil { // correlation id, empty tags
		t.Fatal(err)
	}
	return resp
}

// Regression: the fetch session's lock was held through the whole long
// poll, so a second fetch on the session blocked its connection's reader
// until the first one's wait ended.
func TestFetchSessionLongPollDoesNotBlockTheSession(t *testing.T) {
	b := brokertest.Start(t)
	createTopic(t, b.Admin(), "sess", 1, nil)
	c1 := dial(t, b.Addr)
	first := roundTripFetch(t, c1, sessionFetch("sess", 0, 0, 0), 1)
	if first.ErrorCode != 0 || first.SessionID == 0 {
		t.Fatalf("creating a session: %v id %d", kerr.ErrorForCode(first.ErrorCode), first.SessionID)
	}
	// A long poll on the session parks (the topic is empty)...
	f := kmsg.NewRequestFormatter(kmsg.FormatterClientID("sess"))
	if _, err := c1.Write(f.AppendRequest(nil, sessionFetch("", first.SessionID, 1, 3000), 2)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	// ...and a second fetch on it, from another connection of the same
	// client, is answered at once (its epoch is stale).
	c2 := dial(t, b.Addr)
	start := time.Now()
	second := roundTripFetch(t, c2, sessionFetch("", first.SessionID, 1, 0), 3)
	if d := time.Since(start); d > 2*time.Second { // the long poll holds 3s
		t.Fatalf("the second fetch waited %s behind the long poll", d)
	}
	if second.ErrorCode != kerr.InvalidFetchSessionEpoch.Code {
		t.Fatalf("second fetch: %v", kerr.ErrorForCode(second.ErrorCode))
	}
	readFrame(t, c1) // the long poll ends
}

// Regression: the request budget counted a frame's bytes, but kmsg decodes
// an array of empty names into structs up to 24 times larger: a 100 MiB
// Metadata request would have become gigabytes. A request whose decoded
// form could exceed the budget is refused, and the others reserve for it.
func TestRequestsThatDecodeBeyondTheBudgetAreRefused(t *testing.T) {
	b := brokertest.Start(t, func(c *broker.Config) { c.QueuedMaxRequestBytes = 4 << 20 })
	md := kmsg.NewPtrMetadataRequest()
	md.Version = 0
	for i := 0; i < 200000; i++ {
		s := ""
		md.Topics = append(md.Topics, kmsg.MetadataRequestTopic{Topic: &s})
	}
	var f kmsg.RequestFormatter
	c := dial(t, b.Addr)
	if _, err := c.Write(f.AppendRequest(nil, md, 1)); err != nil {
		t.Fatal(err)
	}
	expectClosed(t, c)
	if used := b.B.RequestMemoryInUse(); used != 0 {
		t.Fatalf("%d bytes held after the refused request", used)
	}
	healthy(t, b)
}

// A client that stops reading its responses cannot hold them (and the
// requests' memory) forever: a response that makes no progress within
// ResponseWriteTimeout closes the connection.
func TestClientThatStopsReadingIsDisconnected(t *testing.T) {
	b := brokertest.Start(t, func(c *broker.Config) { c.ResponseWriteTimeout = 500 * time.Millisecond })
	createTopic(t, b.Admin(), "slow", 1, nil)
	cl := b.Client(kgo.DefaultProduceTopic("slow"))
	for i := 0; i < 16; i++ {
		produceSync(t, cl, &kgo.Record{Value: make([]byte, 512<<10)})
	}
	c := dial(t, b.Addr)
	fetch := sessionFetch("slow", 0, -1, 0)
	fetch.MaxBytes = 16 << 20
	fetch.Topics[0].Partitions[0].PartitionMaxBytes = 16 << 20
	f := kmsg.NewRequestFormatter(kmsg.FormatterClientID("slow"))
	for i := int32(0); i < 32; i++ {
		if _, err := c.Write(f.AppendRequest(nil, fetch, i)); err != nil {
			t.Fatal(err)
		}
	}
	// Not reading: the socket's buffers fill and the writer stalls.
	time.Sleep(3 * time.Second)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := io.Copy(io.Discard, c)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("the connection of a client that stopped reading is still open")
	}
	if used := b.B.RequestMemoryInUse(); used != 0 {
		t.Fatalf("%d bytes of request memory held", used)
	}
	healthy(t, b)
}

// The request read timeout bounds each frame from its size prefix, whether
// the frame is read into the connection's own buffer, in place in a chunk
// or into a buffer of its own, and whether frames answered before it came
// with the same read: the socket's read deadline is set only before a read
// that waits, so these check that such a read always waits for the frame's
// deadline, never for one left from an earlier frame, and that a frame
// whose pieces each come in time but which as a whole does not is refused
// (the deadline is the frame's, not each read's).
func TestFramesCutShortTimeOutAfterTheFramesBeforeThem(t *testing.T) {
	const timeout = time.Second
	b := brokertest.Start(t, func(c *broker.Config) {
		c.RequestReadTimeout = timeout
		c.ConnectionsMaxIdle = time.Hour
	})
	versions := kmsg.NewPtrApiVersionsRequest()
	versions.Version = 3
	versions.ClientSoftwareName, versions.ClientSoftwareVersion = "test", "1"
	f := kmsg.NewRequestFormatter(kmsg.FormatterClientID("cut"))
	whole := f.AppendRequest(nil, versions, 1)
	cut := func(size, sent int) []byte {
		return append(binary.BigEndian.AppendUint32(nil, uint32(size)), make([]byte, sent)...)
	}
	for _, tc := range []struct {
		name  string
		after []byte // sent with the whole request, then nothing
	}{
		{"own buffer", cut(1000, 10)},
		{"in a chunk", cut(100<<10, 50<<10)},
		{"own frame buffer", cut(2<<20, 600<<10)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, b.Addr)
			start := time.Now()
			if _, err := c.Write(append(slices.Clip(whole), tc.after...)); err != nil {
				t.Fatal(err)
			}
			if corr := binary.BigEndian.Uint32(readFrame(t, c)); corr != 1 {
				t.Fatalf("correlation id %d", corr)
			}
			expectClosed(t, c)
			if d := time.Since(start); d < timeout-100*time.Millisecond {
				t.Fatalf("closed after %s, before the request read timeout", d)
			}
		})
	}
	t.Run("trickled", func(t *testing.T) {
		// Each piece comes well within the timeout, the frame does not.
		c := dial(t, b.Addr)
		if _, err := c.Write(whole); err != nil {
			t.Fatal(err)
		}
		readFrame(t, c)
		start := time.Now()
		next := f.AppendRequest(nil, versions, 2)
		for i := 0; i < len(next); i++ {
			if _, err := c.Write(next[i : i+1]); err != nil {
				break // closed
			}
			time.Sleep(timeout / 5)
		}
		expectClosed(t, c)
		if d := time.Since(start); d > 3*timeout+2*time.Second {
			t.Fatalf("closed after %s", d)
		}
	})
	t.Run("in time", func(t *testing.T) {
		// A frame in pieces that all come within the timeout is served.
		c := dial(t, b.Addr)
		next := f.AppendRequest(nil, versions, 3)
		all := append(slices.Clip(whole), next...)
		for _, piece := range [][]byte{all[:len(whole)+2], all[len(whole)+2 : len(whole)+8], all[len(whole)+8:]} {
			if _, err := c.Write(piece); err != nil {
				t.Fatal(err)
			}
			time.Sleep(timeout / 5)
		}
		for _, want := range []uint32{1, 3} {
			if corr := binary.BigEndian.Uint32(readFrame(t, c)); corr != want {
				t.Fatalf("correlation id %d, want %d", corr, want)
			}
		}
	})
}
