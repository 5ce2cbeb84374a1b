package broker_test

import (
	"fmt"
	"math/bits"
	"net"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker"
	"github.com/shale-log/shale/broker/brokertest"
)

// Regression: responses were queued per connection (up to 64 each) with
// nothing counting them, so connections asking for all-topic Metadata
// without reading held unbounded response memory. Now each response is
// encoded when answered and charged to the response budget until sent; a
// connection past its share, or while the budget is spent, is not read.
func TestUnreadResponsesAreBoundedByTheResponseBudget(t *testing.T) {
	const limit = 1 << 20
	b := brokertest.Start(t, func(c *broker.Config) {
		c.QueuedMaxResponseBytes = limit
		c.ResponseWriteTimeout = time.Minute
	})
	// A small DescribeConfigs naming one topic many times, with
	// documentation and synonyms, has a big response (all-topic Metadata
	// on a broker with many partitions is the same case).
	createTopic(t, b.Admin(), "described", 1, nil)
	all := kmsg.NewPtrDescribeConfigsRequest()
	all.Version = 4
	all.IncludeSynonyms, all.IncludeDocumentation = true, true
	for range 2400 {
		res := kmsg.NewDescribeConfigsRequestResource()
		res.ResourceType, res.ResourceName = kmsg.ConfigResourceTypeTopic, "described"
		all.Resources = append(all.Resources, res)
	}
	f := kmsg.NewRequestFormatter(kmsg.FormatterClientID("greedy"))
	// How big one response is.
	one := dial(t, b.Addr)
	one.SetDeadline(time.Now().Add(time.Minute)) // built in seconds under -race on a loaded machine
	one.Write(f.AppendRequest(nil, all, 1))
	respSize := int64(len(readFrame(t, one)))
	one.Close()
	if respSize < 6<<20 {
		t.Fatalf("the DescribeConfigs response is only %d bytes", respSize)
	}

	const conns = 4
	var greedy []net.Conn
	for range conns {
		c := dial(t, b.Addr)
		var req []byte
		for i := int32(0); i < 10; i++ {
			req = f.AppendRequest(req, all, i)
		}
		go c.Write(req) // never reads
		greedy = append(greedy, c)
	}
	// Sample for 2 s after the first charge (building the first response
	// can take seconds under -race on a loaded machine).
	var peak int64
	var charged time.Time
	for start := time.Now(); time.Since(start) < 30*time.Second; {
		time.Sleep(100 * time.Millisecond)
		peak = max(peak, b.B.ResponseMemoryInUse())
		if peak > 0 && charged.IsZero() {
			charged = time.Now()
		}
		if !charged.IsZero() && time.Since(charged) >= 2*time.Second {
			break
		}
	}
	if peak == 0 {
		t.Fatal("no response memory was charged for responses not read")
	}
	// Each connection adds at most one response beyond its share of
	// the budget (Kafka's bound: one response per muted channel), two
	// when it raced another for the last room. A response is charged
	// the capacity of its pooled buffer, a power of two.
	each := int64(1) << bits.Len64(uint64(respSize-1))
	if bound := int64(limit) + 2*conns*each; peak > bound {
		t.Fatalf("unsent responses hold %d bytes (bound %d: budget %d, %d connections of %d-byte responses)", peak, bound, limit, conns, respSize)
	}
	t.Logf("peak unsent response bytes %d (budget %d, one response %d)", peak, limit, respSize)
	healthy(t, b)
	closed := time.Now()
	for _, c := range greedy {
		c.Close()
	}
	// A request read before the close is still answered, and its
	// response charged until its write fails: one per connection, each
	// taking seconds to build under -race on a loaded machine. Once the
	// broker has let every greedy connection go, nothing of theirs may
	// be held.
	brokertest.WaitFor(t, time.Minute, "the broker lets the closed connections go", func() (bool, string) {
		open := 0
		for _, c := range greedy {
			if b.B.ServesConnFrom(c.LocalAddr().String()) {
				open++
			}
		}
		return open == 0, fmt.Sprintf("%d of %d still served, %d bytes of response memory held", open, conns, b.B.ResponseMemoryInUse())
	})
	if used := b.B.ResponseMemoryInUse(); used != 0 {
		t.Fatalf("%d bytes of response memory held after the connections closed", used)
	}
	t.Logf("the broker let the closed connections go after %s", time.Since(closed).Round(time.Millisecond))
	healthy(t, b)
}
