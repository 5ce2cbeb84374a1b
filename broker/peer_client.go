package broker

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// maxPeerResponse bounds a response from another broker (fetches ask for
// at most fetcher.FetchMaxBytes).
const maxPeerResponse = 64 << 20

// peerClient is one connection to another broker, authenticated with the
// cluster secret, issuing requests at pinned versions, one at a time or
// pipelined (Send, Receive). It is
// what a replica fetcher talks through (a fetcher.Conn).
type peerClient struct {
	nc   net.Conn
	rd   *bufio.Reader
	corr int32
	fmtr *kmsg.RequestFormatter
	buf  []byte
	// body is the last response's bytes, reused by the next Request: a
	// replica fetcher reads a response of up to fetcher.FetchMaxBytes
	// per round, and allocating (and zeroing, and collecting) that much
	// per fetch costs more CPU than copying it.
	body []byte
	// sent are the requests sent and not yet answered, oldest first.
	sent []sentRequest
}

type sentRequest struct {
	corr int32
	req  kmsg.Request
}

// dialPeer connects to addr, over TLS with tlsCfg unless it is nil, and
// authenticates as broker self.
func dialPeer(ctx context.Context, dial func(context.Context, string, string) (net.Conn, error), tlsCfg *tls.Config, addr string, self int32, secret string) (*peerClient, error) {
	if dial == nil {
		var d net.Dialer
		dial = d.DialContext
	}
	nc, err := dial(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("broker: dialing peer %s: %w", addr, err)
	}
	if tc, ok := nc.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	if tlsCfg != nil {
		if nc, err = clientTLS(ctx, nc, tlsCfg, addr); err != nil {
			return nil, fmt.Errorf("broker: TLS with peer %s: %w", addr, err)
		}
	}
	c := &peerClient{nc: nc, rd: bufio.NewReaderSize(nc, 64<<10), fmtr: kmsg.NewRequestFormatter(kmsg.FormatterClientID(interBrokerUser(self)))}
	hs := kmsg.NewPtrSASLHandshakeRequest()
	hs.Version = 1
	hs.Mechanism = interBrokerMechanism
	resp, err := c.Request(ctx, hs)
	if err == nil {
		err = kerr.ErrorForCode(resp.(*kmsg.SASLHandshakeResponse).ErrorCode)
	}
	if err == nil {
		auth := kmsg.NewPtrSASLAuthenticateRequest()
		auth.Version = 2
		auth.SASLAuthBytes = []byte("\x00" + interBrokerUser(self) + "\x00" + secret)
		if resp, err = c.Request(ctx, auth); err == nil {
			err = kerr.ErrorForCode(resp.(*kmsg.SASLAuthenticateResponse).ErrorCode)
		}
	}
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("broker: authenticating to peer %s: %w", addr, err)
	}
	return c, nil
}

// Close closes the connection.
func (c *peerClient) Close() { c.nc.Close() }

// Request sends req (its version set by the caller) and reads the answer.
// The answer's byte fields (a fetch's record batches) alias a buffer the
// next Request or Receive reuses: a caller that keeps them copies them
// first. Any error leaves the connection unusable: the caller closes it.
func (c *peerClient) Request(ctx context.Context, req kmsg.Request) (kmsg.Response, error) {
	if err := c.Send(ctx, req); err != nil {
		return nil, err
	}
	return c.Receive(ctx)
}

// Send writes req (its version set by the caller) without waiting for its
// answer, which Receive reads: answers come in the order requests were
// sent (the broker serves a connection's requests in order). Any error
// leaves the connection unusable.
func (c *peerClient) Send(ctx context.Context, req kmsg.Request) error {
	stop := c.deadline(ctx)
	defer stop()
	c.corr++
	c.buf = c.fmtr.AppendRequest(c.buf[:0], req, c.corr)
	if _, err := c.nc.Write(c.buf); err != nil {
		return err
	}
	c.sent = append(c.sent, sentRequest{corr: c.corr, req: req})
	return nil
}

// Receive reads the answer to the oldest request sent and not yet
// answered. Its byte fields alias a buffer the next Receive reuses. Any
// error leaves the connection unusable.
func (c *peerClient) Receive(ctx context.Context) (kmsg.Response, error) {
	if len(c.sent) == 0 {
		return nil, errors.New("broker: receiving from a peer with no request sent")
	}
	s := c.sent[0]
	c.sent = c.sent[1:]
	stop := c.deadline(ctx)
	defer stop()
	req := s.req
	var hdr [8]byte
	if _, err := io.ReadFull(c.rd, hdr[:]); err != nil {
		return nil, err
	}
	size := int32(binary.BigEndian.Uint32(hdr[:4]))
	if size < 4 || size > maxPeerResponse {
		return nil, fmt.Errorf("broker: peer response of %d bytes", size)
	}
	if corr := int32(binary.BigEndian.Uint32(hdr[4:])); corr != s.corr {
		return nil, fmt.Errorf("broker: peer answered request %d, expected %d", corr, s.corr)
	}
	if cap(c.body) < int(size-4) {
		c.body = make([]byte, size-4)
	}
	body := c.body[:size-4]
	if _, err := io.ReadFull(c.rd, body); err != nil {
		return nil, err
	}
	resp := req.ResponseKind()
	resp.SetVersion(req.GetVersion())
	if resp.IsFlexible() {
		var err error
		if body, err = skipTags(body); err != nil {
			return nil, err
		}
	}
	if err := resp.ReadFrom(body); err != nil {
		return nil, fmt.Errorf("broker: decoding a peer's %s response: %w", kmsg.NameForKey(req.Key()), err)
	}
	return resp, nil
}

// deadline bounds the connection's I/O by ctx's deadline (30 s without
// one) and cuts it short when ctx ends; the returned func stops the latter.
func (c *peerClient) deadline(ctx context.Context) (stop func() bool) {
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(30 * time.Second)
	}
	c.nc.SetDeadline(deadline)
	return context.AfterFunc(ctx, func() { c.nc.SetDeadline(time.Now()) })
}
