package broker_test

import (
	"net"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker"
	"github.com/shale-log/shale/broker/brokertest"
)

// apiVersionsOK checks that c is served.
func apiVersionsOK(t *testing.T, c net.Conn) {
	t.Helper()
	f := kmsg.NewRequestFormatter(kmsg.FormatterClientID("count"))
	req := kmsg.NewPtrApiVersionsRequest()
	req.Version = 0
	if _, err := c.Write(f.AppendRequest(nil, req, 1)); err != nil {
		t.Fatal(err)
	}
	readFrame(t, c)
}

// max.connections and max.connections.per.ip close the connections past
// them as they are accepted, count them, and admit new ones once others
// have closed.
func TestConnectionLimits(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  func(*broker.Config)
	}{
		{"max.connections", func(c *broker.Config) { c.MaxConnections = 3 }},
		{"max.connections.per.ip", func(c *broker.Config) { c.MaxConnectionsPerIP = 3 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := brokertest.Start(t, tc.cfg)
			var open []net.Conn
			for range 3 {
				c := dial(t, b.Addr)
				apiVersionsOK(t, c)
				open = append(open, c)
			}
			for range 2 {
				c := dial(t, b.Addr)
				c.SetDeadline(time.Now().Add(5 * time.Second))
				expectClosed(t, c)
			}
			if v, _ := gather(t, b.Registry).get("shale_connections_refused_total", ""); v != 2 {
				t.Errorf("shale_connections_refused_total = %v, want 2", v)
			}
			for _, c := range open {
				c.Close()
			}
			brokertest.WaitFor(t, 5*time.Second, "a connection admitted again", func() (bool, string) {
				c := dial(t, b.Addr)
				defer c.Close()
				c.SetDeadline(time.Now().Add(time.Second))
				f := kmsg.NewRequestFormatter()
				req := kmsg.NewPtrApiVersionsRequest()
				req.Version = 0
				c.Write(f.AppendRequest(nil, req, 1))
				var size [4]byte
				_, err := c.Read(size[:])
				return err == nil, "new connections are still refused"
			})
		})
	}
}
