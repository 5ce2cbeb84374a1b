package broker

import (
	"bufio"
	"context"
	"encoding/binary"
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
// cluster secret, issuing one request at a time at pinned versions. It is
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
}

// dialPeer connects to addr and authenticates as broker self.
func dialPeer(ctx context.Context, dial func(context.Context, string, string) (net.Conn, error), addr string, self int32, secret string) (*peerClient, error) {
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
// next Request reuses: a caller that keeps them copies them first. Any
// error leaves the connection unusable: the caller closes it.
func (c *peerClient) Request(ctx context.Context, req kmsg.Request) (kmsg.Response, error) {
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(30 * time.Second)
	}
	c.nc.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { c.nc.SetDeadline(time.Now()) })
	defer stop()
	c.corr++
	c.buf = c.fmtr.AppendRequest(c.buf[:0], req, c.corr)
	if _, err := c.nc.Write(c.buf); err != nil {
		return nil, err
	}
	var hdr [8]byte
	if _, err := io.ReadFull(c.rd, hdr[:]); err != nil {
		return nil, err
	}
	size := int32(binary.BigEndian.Uint32(hdr[:4]))
	if size < 4 || size > maxPeerResponse {
		return nil, fmt.Errorf("broker: peer response of %d bytes", size)
	}
	if corr := int32(binary.BigEndian.Uint32(hdr[4:])); corr != c.corr {
		return nil, fmt.Errorf("broker: peer answered request %d, expected %d", corr, c.corr)
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
