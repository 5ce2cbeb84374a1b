package brokertest

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker"
	"github.com/shale-log/shale/localseg"
	"github.com/shale-log/shale/metadata"
)

// Cluster is several brokers in the test process sharing one embedded
// etcd, each with its own listener and data directory.
type Cluster struct {
	t       testing.TB
	Dir     string
	etcd    *metadata.Embedded
	Brokers []*Node
	cfg     func(*broker.Config)
	fs      func(id int32) localseg.FS // nil: the OS's
	// client is how the clients Client makes reach the brokers.
	client clientSetup
}

// Node is one broker of a Cluster.
type Node struct {
	ID   int32
	Addr string
	Dir  string
	B    *broker.Broker // nil while stopped
	// Registry holds the metrics of the broker's current run.
	Registry *prometheus.Registry
	ln       net.Listener
	served   chan struct{}
}

// StartCluster starts n brokers (ids 0 to n-1) on one embedded etcd, with
// short leases so that failover tests run in seconds, and stops them at
// cleanup.
func StartCluster(t testing.TB, n int, opts ...Option) *Cluster {
	t.Helper()
	return StartClusterOn(t, n, nil, opts...)
}

// StartClusterOn is StartCluster with broker id's logs on fs(id) (a fault
// or gated filesystem), at every start.
func StartClusterOn(t testing.TB, n int, fs func(id int32) localseg.FS, opts ...Option) *Cluster {
	t.Helper()
	c := &Cluster{t: t, Dir: t.TempDir(), fs: fs, client: setupFor(opts...), cfg: func(cfg *broker.Config) {
		for _, o := range opts {
			o(cfg)
		}
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e, err := metadata.StartEmbedded(ctx, metadata.EmbeddedConfig{Dir: filepath.Join(c.Dir, "etcd"), MaxTxnOps: StockEtcdMaxTxnOps, MaxRequestBytes: StockEtcdMaxRequestBytes})
	if err != nil {
		t.Fatal(err)
	}
	c.etcd = e
	t.Cleanup(func() {
		for _, nd := range c.Brokers {
			c.Stop(nd.ID)
		}
		e.Close()
	})
	for i := 0; i < n; i++ {
		nd := &Node{ID: int32(i), Dir: filepath.Join(c.Dir, fmt.Sprintf("broker-%d", i)), Addr: "127.0.0.1:0"}
		c.Brokers = append(c.Brokers, nd)
		c.Start(nd.ID)
	}
	waitListed(t, startWait, c.client, c.Addrs(), c.running()...)
	return c
}

// startWait bounds how long a broker's start, and its registration
// reaching the other brokers, may take on a loaded machine.
const startWait = 30 * time.Second

// Start starts (or restarts) broker id on its data directory and address,
// and returns once every running broker lists it in its metadata (so that
// a topic created next can place a replica on it).
func (c *Cluster) Start(id int32) {
	c.t.Helper()
	nd := c.Brokers[id]
	if nd.B != nil {
		return
	}
	var ln net.Listener
	var err error
	for try := 0; ; try++ {
		if ln, err = net.Listen("tcp", nd.Addr); err == nil || try == 50 {
			break
		}
		time.Sleep(100 * time.Millisecond) // the old socket lingers
	}
	if err != nil {
		c.t.Fatal(err)
	}
	host, port := splitHostPort(c.t, ln.Addr().String())
	cfg := broker.Config{
		NodeID:           id,
		DataDir:          nd.Dir,
		AdvertisedHost:   host,
		AdvertisedPort:   port,
		AutoCreateTopics: true,
	}
	c.cfg(&cfg)
	ctx, cancel := context.WithTimeout(context.Background(), startWait)
	defer cancel()
	reg := prometheus.NewRegistry()
	var fs localseg.FS
	if c.fs != nil {
		fs = c.fs(id)
	}
	br, err := broker.Start(ctx, broker.Options{Config: cfg, Etcd: c.etcd.Client(), Logger: logger().With("node", id), Registry: reg, BrokerSessionTTL: 3 * time.Second, FS: fs})
	if err != nil {
		ln.Close()
		c.t.Fatal(err)
	}
	nd.B, nd.ln, nd.Addr, nd.Registry = br, ln, ln.Addr().String(), reg
	nd.served = make(chan struct{})
	go func() {
		defer close(nd.served)
		br.Serve(ln)
	}()
	waitListed(c.t, startWait, c.client, c.Addrs(), id)
}

// running lists the ids of the running brokers.
func (c *Cluster) running() []int32 {
	var ids []int32
	for _, nd := range c.Brokers {
		if nd.B != nil {
			ids = append(ids, nd.ID)
		}
	}
	return ids
}

// WaitListed waits, up to timeout, until the Metadata answer of the broker
// at each of addrs lists every broker of ids. A broker is registered in
// etcd when its start returns, but the other brokers learn of it through
// their watch of the metadata, a moment later (seconds on a loaded
// machine): until then they leave it out of topic placement, and a topic
// created with a replica per broker fails with INVALID_REPLICATION_FACTOR.
func WaitListed(t testing.TB, timeout time.Duration, addrs []string, ids ...int32) {
	t.Helper()
	waitListed(t, timeout, clientSetup{}, addrs, ids...)
}

// waitListed is WaitListed with clients set up as client.
func waitListed(t testing.TB, timeout time.Duration, client clientSetup, addrs []string, ids ...int32) {
	t.Helper()
	clients := make([]*kgo.Client, len(addrs))
	for i, addr := range addrs {
		cl, err := kgo.NewClient(client.pinned(addr, kgo.SeedBrokers(addr))...)
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		clients[i] = cl
	}
	WaitFor(t, timeout, fmt.Sprintf("every broker lists brokers %v", ids), func() (bool, string) {
		for i, cl := range clients {
			listed, err := ListedBrokers(cl)
			if err != nil {
				return false, fmt.Sprintf("%s: %v", addrs[i], err)
			}
			for _, id := range ids {
				if !slices.Contains(listed, id) {
					return false, fmt.Sprintf("%s lists %v", addrs[i], listed)
				}
			}
		}
		return true, ""
	})
}

// ListedBrokers is the broker ids in the Metadata answer of cl's seed
// broker, asked now. A poll must ask this way: kadm's BrokerMetadata
// answers from the brokers the client learnt by its last metadata
// refresh, and a client that only polls refreshes every five minutes.
func ListedBrokers(cl *kgo.Client) ([]int32, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req := kmsg.NewPtrMetadataRequest()
	req.Topics = []kmsg.MetadataRequestTopic{} // none
	resp, err := cl.SeedBrokers()[0].Request(ctx, req)
	if err != nil {
		return nil, err
	}
	var ids []int32
	for _, b := range resp.(*kmsg.MetadataResponse).Brokers {
		ids = append(ids, b.NodeID)
	}
	return ids, nil
}

// Stop shuts broker id down cleanly.
func (c *Cluster) Stop(id int32) {
	nd := c.Brokers[id]
	if nd.B == nil {
		return
	}
	nd.ln.Close()
	<-nd.served
	closeBounded(fmt.Sprintf("%s: broker %d", c.t.Name(), id), func() { nd.B.Close() })
	nd.B = nil
}

// Addrs lists the running brokers' addresses.
func (c *Cluster) Addrs() []string {
	var out []string
	for _, nd := range c.Brokers {
		if nd.B != nil {
			out = append(out, nd.Addr)
		}
	}
	return out
}

// Client returns a franz-go client seeded with every running broker,
// closed at cleanup.
func (c *Cluster) Client(opts ...kgo.Opt) *kgo.Client {
	c.t.Helper()
	cl, err := kgo.NewClient(c.client.opts(append([]kgo.Opt{kgo.SeedBrokers(c.Addrs()...)}, opts...)...)...)
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(cl.Close)
	return cl
}

// Admin returns a kadm client over a new client.
func (c *Cluster) Admin() *kadm.Client { return kadm.NewClient(c.Client()) }

// Etcd is the cluster's embedded etcd.
func (c *Cluster) Etcd() *metadata.Embedded { return c.etcd }

// WaitFor polls cond every 20ms until it holds or timeout passes.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for {
		ok, state := cond()
		if ok {
			return
		}
		last = state
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s (last: %s)", what, timeout, strings.TrimSpace(last))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// CheckAckedReadOnce reads topic's partition 0 from the start up to its high
// watermark: every acknowledged record is there exactly once, in order.
func CheckAckedReadOnce(t testing.TB, ctx context.Context, cons *kgo.Client, topic string, acked []int) {
	t.Helper()
	var hw kadm.ListedOffset
	// A new leader answers OFFSET_NOT_AVAILABLE until its followers have
	// the start of its epoch (KIP-207).
	WaitFor(t, 30*time.Second, "the high watermark of "+topic+"-0", func() (bool, string) {
		end, err := kadm.NewClient(cons).ListEndOffsets(ctx, topic)
		if err == nil {
			hw, _ = end.Lookup(topic, 0)
			err = hw.Err
		}
		if err != nil && !kerr.IsRetriable(err) {
			t.Fatal(err)
		}
		return err == nil, fmt.Sprint(err)
	})
	seen := map[int]int{}
	last := -1
	for read := int64(0); read < hw.Offset; {
		fs := cons.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %d of %d records", read, hw.Offset)
		}
		fs.EachRecord(func(r *kgo.Record) {
			read++
			v, _ := strconv.Atoi(string(r.Value))
			seen[v]++
			if v <= last {
				t.Errorf("record %d at offset %d after record %d", v, r.Offset, last)
			}
			last = v
		})
	}
	for _, v := range acked {
		if seen[v] != 1 {
			t.Fatalf("acknowledged record %d read %d times (%d acknowledged, %d in the log)", v, seen[v], len(acked), hw.Offset)
		}
	}
}
