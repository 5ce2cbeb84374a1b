package brokertest

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// Proxy is a TCP proxy in front of one address that a test can cut and
// heal, to put a network partition between a broker and etcd or between
// two brokers. While cut, open connections are closed and new ones are
// accepted and closed at once (a refused link, not a silent one).
//
// A proxy made by NewKafkaProxy stands in front of a broker's Kafka
// listener and also learns each connection's client id from its first
// request, so that CutClient can cut one client alone: another broker's
// inter-broker connections (its replica fetchers) present client id
// broker-N, so advertising the proxy's address for a broker lets a test
// cut one follower from that leader while clients and the other followers
// pass.
type Proxy struct {
	kafka  bool
	ln     net.Listener
	mu     sync.Mutex
	target string
	cut    bool
	cutIDs map[string]bool
	conns  map[net.Conn]string // the client id ("" unknown)
	wg     sync.WaitGroup
}

// NewProxy listens on a free loopback port and forwards to target until
// the test ends.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	return newProxy(t, target, false)
}

// NewKafkaProxy is NewProxy for a Kafka listener: CutClient works on it.
func NewKafkaProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	return newProxy(t, target, true)
}

func newProxy(t testing.TB, target string, kafka bool) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{target: target, kafka: kafka, ln: ln, cutIDs: map[string]bool{}, conns: map[net.Conn]string{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

// Addr is the proxy's address: dial it instead of the target.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Retarget forwards new connections to target (open ones keep theirs), as
// for a broker that started again on another port.
func (p *Proxy) Retarget(target string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.target = target
}

// Cut closes every connection through the proxy and refuses new ones.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	for c := range p.conns {
		c.Close()
	}
}

// Heal lets connections through again (those of clients cut by
// CutClient stay cut).
func (p *Proxy) Heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = false
}

// CutClient closes the connections whose first request carried client id
// and refuses that client's new ones, on a proxy from NewKafkaProxy.
func (p *Proxy) CutClient(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.kafka {
		panic("brokertest: CutClient on a proxy that does not read Kafka requests")
	}
	p.cutIDs[id] = true
	for c, cid := range p.conns {
		if cid == id {
			c.Close()
		}
	}
}

// HealClient lets client id through again.
func (p *Proxy) HealClient(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.cutIDs, id)
}

func (p *Proxy) close() {
	p.ln.Close()
	p.Cut()
	p.wg.Wait()
}

// track registers c as client id's unless the link or the client is cut.
func (p *Proxy) track(c net.Conn, id string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cut || p.cutIDs[id] {
		return false
	}
	p.conns[c] = id
	return true
}

func (p *Proxy) untrack(c net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.conns, c)
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		if !p.track(in, "") {
			in.Close()
			continue
		}
		p.wg.Add(1)
		go p.serve(in)
	}
}

// serve connects in (tracked) to the target.
func (p *Proxy) serve(in net.Conn) {
	defer p.wg.Done()
	var first []byte
	var id string
	if p.kafka {
		in.SetReadDeadline(time.Now().Add(30 * time.Second))
		var err error
		first, id, err = readClientID(in)
		in.SetReadDeadline(time.Time{})
		if err != nil || !p.track(in, id) {
			in.Close()
			p.untrack(in)
			return
		}
	}
	p.mu.Lock()
	target := p.target
	p.mu.Unlock()
	out, err := net.Dial("tcp", target)
	if err == nil {
		if p.track(out, id) {
			_, err = out.Write(first)
		} else {
			err = net.ErrClosed
		}
	}
	if err != nil {
		if out != nil {
			out.Close()
			p.untrack(out)
		}
		// The target is down (or the link was cut meanwhile): reset the
		// client's connection, as a refused dial would end it, rather
		// than close it after reading its first request. A client takes
		// a clean close there for a TLS or SASL mismatch, and fails its
		// buffered records (franz-go's ErrFirstReadEOF), where a broker
		// that is down only makes it retry.
		resetConn(in)
		p.untrack(in)
		return
	}
	p.wg.Add(2)
	pipe := func(dst, src net.Conn) {
		defer p.wg.Done()
		io.Copy(dst, src)
		// One direction ended: end the other too.
		dst.Close()
		src.Close()
		p.untrack(dst)
		p.untrack(src)
	}
	go pipe(out, in)
	go pipe(in, out)
}

// resetConn closes c with a TCP reset rather than a clean close.
func resetConn(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}

// readClientID reads the start of a Kafka request (size, api key,
// version, correlation id, client id: the same in every header version)
// and returns the bytes read and the client id.
func readClientID(r io.Reader) ([]byte, string, error) {
	buf := make([]byte, 4+2+2+4+2)
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, "", err
	}
	size := int32(binary.BigEndian.Uint32(buf))
	n := int16(binary.BigEndian.Uint16(buf[12:]))
	if n < 0 {
		return buf, "", nil
	}
	if int32(n) > size-10 {
		return nil, "", fmt.Errorf("brokertest: client id of %d bytes in a request of %d", n, size)
	}
	id := make([]byte, n)
	if _, err := io.ReadFull(r, id); err != nil {
		return nil, "", err
	}
	return append(buf, id...), string(id), nil
}
