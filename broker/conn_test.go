package broker_test

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker/brokertest"
)

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c
}

// readFrame reads one response frame.
func readFrame(t *testing.T, c net.Conn) []byte {
	t.Helper()
	var size [4]byte
	if _, err := io.ReadFull(c, size[:]); err != nil {
		t.Fatalf("reading response size: %v", err)
	}
	body := make([]byte, binary.BigEndian.Uint32(size[:]))
	if _, err := io.ReadFull(c, body); err != nil {
		t.Fatalf("reading response: %v", err)
	}
	return body
}

// expectClosed checks that the broker closes the connection.
func expectClosed(t *testing.T, c net.Conn) {
	t.Helper()
	var b [1]byte
	if _, err := c.Read(b[:]); err == nil {
		t.Fatal("connection still open")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("connection not closed within the deadline")
	}
}

func frame(body []byte) []byte {
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...)
}

// connGoroutines counts the goroutines serving connections (the broker's
// background loops come and go on their own).
func connGoroutines() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "broker.(*Broker).serveConn") || strings.Contains(g, "broker.(*conn).writeLoop") {
			count++
		}
	}
	return count
}

func TestBadFramesCloseTheConnection(t *testing.T) {
	b := brokertest.Start(t)
	cases := map[string][]byte{
		// 2 GiB claimed: refused before any allocation.
		"huge size":           binary.BigEndian.AppendUint32(nil, 0x7fffffff),
		"negative size":       binary.BigEndian.AppendUint32(nil, 0xffffffff),
		"over the limit":      append(binary.BigEndian.AppendUint32(nil, 100<<20+1), 0, 0),
		"unknown api key":     frame([]byte{0x03, 0xe7, 0, 0, 0, 0, 0, 1, 0xff, 0xff}),
		"unsupported version": frame([]byte{0, 3, 0x7f, 0, 0, 0, 0, 1, 0xff, 0xff}),
		"short header":        frame([]byte{0, 3, 0}),
		"garbage body":        frame([]byte{0, 19, 0, 5, 0, 0, 0, 1, 0xff, 0xff, 0xde, 0xad, 0xbe, 0xef}),
	}
	before := connGoroutines()
	for name, bytes := range cases {
		t.Run(name, func(t *testing.T) {
			c := dial(t, b.Addr)
			if _, err := c.Write(bytes); err != nil {
				t.Fatal(err)
			}
			expectClosed(t, c)
		})
	}
	// Every connection's goroutines are gone.
	deadline := time.Now().Add(5 * time.Second)
	for connGoroutines() > before && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := connGoroutines(); n > before {
		t.Fatalf("%d goroutines after closing bad connections, %d before", n, before)
	}
	// The broker still serves.
	if _, err := b.Admin().BrokerMetadata(testCtx(t)); err != nil {
		t.Fatalf("broker unusable after bad frames: %v", err)
	}
}

func TestApiVersionsUnknownVersionAnswersV0WithRanges(t *testing.T) {
	b := brokertest.Start(t)
	c := dial(t, b.Addr)
	// ApiVersions v99 with a client id: answered at v0 (header v0) with
	// UNSUPPORTED_VERSION and the supported ranges.
	body := []byte{0, 18, 0, 99, 0, 0, 0, 42, 0, 3, 'c', 'l', 'i'}
	if _, err := c.Write(frame(body)); err != nil {
		t.Fatal(err)
	}
	resp := readFrame(t, c)
	if corr := int32(binary.BigEndian.Uint32(resp)); corr != 42 {
		t.Fatalf("correlation id %d", corr)
	}
	var av kmsg.ApiVersionsResponse
	av.Version = 0
	if err := av.ReadFrom(resp[4:]); err != nil {
		t.Fatal(err)
	}
	if av.ErrorCode != kerr.UnsupportedVersion.Code || len(av.ApiKeys) == 0 {
		t.Fatalf("response: %+v", av)
	}
	// The connection stays usable: a supported version now works.
	req := kmsg.NewPtrApiVersionsRequest()
	req.Version = 3
	req.ClientSoftwareName, req.ClientSoftwareVersion = "test", "1"
	var f kmsg.RequestFormatter
	if _, err := c.Write(f.AppendRequest(nil, req, 43)); err != nil {
		t.Fatal(err)
	}
	resp = readFrame(t, c)
	av = kmsg.ApiVersionsResponse{Version: 3}
	if err := av.ReadFrom(resp[4:]); err != nil || av.ErrorCode != 0 {
		t.Fatalf("v3: %v %+v", err, av)
	}
}

// TestAdvertisedVersionsAreServed sends every advertised request at its
// lowest and highest version and checks the broker answers each (an empty
// request is valid for almost every API) instead of closing.
func TestAdvertisedVersionsAreServed(t *testing.T) {
	b := brokertest.Start(t)
	cl := b.Client()
	ctx := testCtx(t)
	av, err := kmsg.NewPtrApiVersionsRequest().RequestWith(ctx, cl)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range av.ApiKeys {
		for _, v := range []int16{k.MinVersion, k.MaxVersion} {
			req := kmsg.RequestForKey(k.ApiKey)
			if req == nil {
				t.Fatalf("advertised key %d unknown to kmsg", k.ApiKey)
			}
			req.SetVersion(v)
			if p, ok := req.(*kmsg.ProduceRequest); ok {
				p.Acks = 1 // acks=0 is answered with silence
			}
			rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			_, err := cl.Request(rctx, pinned{req})
			cancel()
			if err != nil {
				t.Errorf("%s v%d: %v", kmsg.NameForKey(k.ApiKey), v, err)
			}
		}
	}
}

// pinned keeps a request at the version it was given (kgo otherwise picks
// the highest common one).
type pinned struct{ kmsg.Request }

func (p pinned) MaxVersion() int16 { return p.GetVersion() }
func (p pinned) SetVersion(int16)  {}

var _ = kgo.NewClient
