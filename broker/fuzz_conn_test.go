package broker_test

import (
	"context"
	"encoding/binary"
	"io"
	"math"
	"net"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker"
	"github.com/shale-log/shale/broker/brokertest"
)

// FuzzConnection sends arbitrary request frames to a real broker: every
// frame must get a response or a closed connection, and the broker must
// keep serving (a panic in any handler fails the run).
func FuzzConnection(f *testing.F) {
	const budget = 8 << 20
	b := brokertest.Start(f, func(c *broker.Config) {
		c.QueuedMaxRequestBytes = budget
		// Fuzzed admin requests may create topics: keep them small.
		c.MaxBrokerPartitions = 200
		// and set client quotas: a throttle lasts at most 11 windows,
		// well within the probe's deadline.
		c.QuotaWindowSize = 10 * time.Millisecond
	})
	adm := b.Admin()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := adm.CreateTopic(ctx, 2, 1, nil, "fuzz"); err != nil {
		f.Fatal(err)
	}
	id := "fuzz"
	var formatter = kmsg.NewRequestFormatter(kmsg.FormatterClientID(id))
	// An empty request of every key kmsg knows, at its newest version:
	// those the broker serves are decoded and answered, the others close
	// the connection.
	for key := int16(0); key <= int16(kmsg.MaxKey); key++ {
		req := kmsg.RequestForKey(key)
		if req == nil {
			continue
		}
		req.SetVersion(req.MaxVersion())
		f.Add(formatter.AppendRequest(nil, req, 1)[4:])
	}
	// A produce and a fetch that name the real topic.
	produce := kmsg.NewPtrProduceRequest()
	produce.Version = 9
	produce.Acks = 1
	produce.TimeoutMillis = 100
	produce.Topics = []kmsg.ProduceRequestTopic{{Topic: "fuzz", Partitions: []kmsg.ProduceRequestTopicPartition{{Partition: 0, Records: idempotentBatch(-1, -1, -1, 2)}}}}
	f.Add(formatter.AppendRequest(nil, produce, 2)[4:])
	fetch := kmsg.NewPtrFetchRequest()
	fetch.Version = 11
	fetch.MaxWaitMillis = 10
	fetch.MaxBytes = 1 << 20
	fetch.SessionEpoch = -1
	fetch.Topics = []kmsg.FetchRequestTopic{{Topic: "fuzz", Partitions: []kmsg.FetchRequestTopicPartition{{Partition: 0, PartitionMaxBytes: 1 << 20}}}}
	f.Add(formatter.AppendRequest(nil, fetch, 3)[4:])
	// A page of the real topic, from a cursor.
	describe := kmsg.NewPtrDescribeTopicPartitionsRequest()
	describe.Topics = []kmsg.DescribeTopicPartitionsRequestTopic{{Topic: "fuzz"}}
	describe.ResponsePartitionLimit = 1
	describe.Cursor = &kmsg.DescribeTopicPartitionsRequestCursor{Topic: "fuzz", Partition: 1}
	f.Add(formatter.AppendRequest(nil, describe, 6)[4:])
	// Hostile admin requests: counts that once sized allocations.
	for _, validateOnly := range []bool{false, true} {
		create := kmsg.NewPtrCreateTopicsRequest()
		create.Version, create.TimeoutMillis, create.ValidateOnly = 7, 1000, validateOnly
		huge := kmsg.NewCreateTopicsRequestTopic()
		huge.Topic, huge.NumPartitions, huge.ReplicationFactor = "huge", math.MaxInt32, 1
		many := kmsg.NewCreateTopicsRequestTopic()
		many.Topic, many.NumPartitions, many.ReplicationFactor = "many", 100000, math.MaxInt16
		create.Topics = append(create.Topics, huge, many)
		f.Add(formatter.AppendRequest(nil, create, 4)[4:])
		grow := kmsg.NewPtrCreatePartitionsRequest()
		grow.Version, grow.TimeoutMillis, grow.ValidateOnly = 3, 1000, validateOnly
		gt := kmsg.NewCreatePartitionsRequestTopic()
		gt.Topic, gt.Count = "fuzz", math.MaxInt32
		grow.Topics = append(grow.Topics, gt)
		f.Add(formatter.AppendRequest(nil, grow, 5)[4:])
	}

	// Client quotas: odd values and names, and a filter.
	quotas := kmsg.NewPtrAlterClientQuotasRequest()
	quotas.Version, quotas.ValidateOnly = 1, true
	for _, v := range []float64{math.NaN(), math.Inf(1), -1, 1e300, 1024} {
		e := kmsg.NewAlterClientQuotasRequestEntry()
		e.Entity = []kmsg.AlterClientQuotasRequestEntryEntity{{Type: "client-id", Name: kmsg.StringPtr("a/b=c&d")}, {Type: "user"}}
		e.Ops = []kmsg.AlterClientQuotasRequestEntryOp{{Key: "producer_byte_rate", Value: v}, {Key: "consumer_byte_rate", Remove: true}}
		quotas.Entries = append(quotas.Entries, e)
	}
	f.Add(formatter.AppendRequest(nil, quotas, 7)[4:])
	describeQuotas := kmsg.NewPtrDescribeClientQuotasRequest()
	describeQuotas.Version = 1
	describeQuotas.Components = []kmsg.DescribeClientQuotasRequestComponent{{EntityType: "client-id", MatchType: 2}, {EntityType: "user", MatchType: 0}}
	f.Add(formatter.AppendRequest(nil, describeQuotas, 8)[4:])

	// Users: a SASL exchange begun out of order, and SCRAM credentials
	// with odd mechanisms, counts and sizes.
	handshake := kmsg.NewPtrSASLHandshakeRequest()
	handshake.Version, handshake.Mechanism = 1, "SCRAM-SHA-256"
	f.Add(formatter.AppendRequest(nil, handshake, 9)[4:])
	authenticate := kmsg.NewPtrSASLAuthenticateRequest()
	authenticate.Version, authenticate.SASLAuthBytes = 2, []byte("n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL")
	f.Add(formatter.AppendRequest(nil, authenticate, 10)[4:])
	users := kmsg.NewPtrAlterUserSCRAMCredentialsRequest()
	for _, mech := range []int8{0, 1, 2, 3, -1} {
		u := kmsg.NewAlterUserSCRAMCredentialsRequestUpsertion()
		u.Name, u.Mechanism, u.Iterations = "fuzz-user", mech, 4096
		u.Salt, u.SaltedPassword = []byte("salt"), make([]byte, 32)
		users.Upsertions = append(users.Upsertions, u)
		d := kmsg.NewAlterUserSCRAMCredentialsRequestDeletion()
		d.Name, d.Mechanism = "", mech
		users.Deletions = append(users.Deletions, d)
	}
	f.Add(formatter.AppendRequest(nil, users, 11)[4:])
	describeUsers := kmsg.NewPtrDescribeUserSCRAMCredentialsRequest()
	describeUsers.Users = []kmsg.DescribeUserSCRAMCredentialsRequestUser{{Name: "fuzz-user"}, {Name: "fuzz-user"}, {Name: ""}}
	f.Add(formatter.AppendRequest(nil, describeUsers, 12)[4:])

	apiVersions := kmsg.NewPtrApiVersionsRequest()
	apiVersions.Version = 0
	probe := formatter.AppendRequest(nil, apiVersions, 0x7ead)
	f.Fuzz(func(t *testing.T, body []byte) {
		if len(body) > 1<<20 {
			return
		}
		// A healthy client is connected before the frame is sent.
		check, err := net.Dial("tcp", b.Addr)
		if err != nil {
			t.Fatal(err)
		}
		defer check.Close()
		c, err := net.Dial("tcp", b.Addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write(binary.BigEndian.AppendUint32(nil, uint32(len(body))))
		c.Write(body)
		// Then a probe on the same connection: requests are answered
		// in order, so the probe's answer (after the frame's, if it has
		// one) or a close shows the frame was dealt with.
		c.Write(probe)

		// Meanwhile the healthy client is served.
		check.SetDeadline(time.Now().Add(3 * time.Second))
		check.Write(probe)
		if _, err := readResponse(check); err != nil {
			t.Fatalf("a healthy client was not served while %x was handled: %v", body, err)
		}
		if used := b.B.RequestMemoryInUse(); used > budget+int64(len(body))+64<<10 {
			t.Fatalf("request memory %d over the budget %d", used, budget)
		}

		// The frame gets a response or a closed connection. Requests
		// that may wait (a long poll, acks=all, a rebalance, an admin
		// timeout) may also still be waiting.
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		for {
			corr, err := readResponse(c)
			if err == nil && corr == 0x7ead {
				break // answered, in order
			}
			if err == nil {
				continue // the frame's own response
			}
			if ne, ok := err.(net.Error); ok && ne.Timeout() && len(body) >= 2 && mayWait[int16(binary.BigEndian.Uint16(body))] {
				break
			}
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatalf("neither a response nor a close for %x", body)
			}
			break // closed
		}
		c.Close()
		// Once the connection is gone, what it held is given back.
		deadline := time.Now().Add(3 * time.Second)
		for b.B.RequestMemoryInUse() != 0 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		if used := b.B.RequestMemoryInUse(); used != 0 {
			t.Fatalf("%d bytes of request memory still held after %x", used, body)
		}
	})
}

// mayWait: API keys whose requests may legitimately wait for seconds
// before they are answered.
var mayWait = map[int16]bool{
	int16(kmsg.Produce): true, int16(kmsg.Fetch): true, int16(kmsg.JoinGroup): true,
	int16(kmsg.SyncGroup): true, int16(kmsg.CreateTopics): true, int16(kmsg.DeleteTopics): true,
	int16(kmsg.DeleteRecords): true, int16(kmsg.CreatePartitions): true,
}

// readResponse reads one response frame and returns its correlation id.
func readResponse(c net.Conn) (int32, error) {
	var size [4]byte
	if _, err := io.ReadFull(c, size[:]); err != nil {
		return 0, err
	}
	n := binary.BigEndian.Uint32(size[:])
	if n < 4 {
		return 0, io.ErrUnexpectedEOF
	}
	var corr [4]byte
	if _, err := io.ReadFull(c, corr[:]); err != nil {
		return 0, err
	}
	if _, err := io.CopyN(io.Discard, c, int64(n-4)); err != nil {
		return 0, err
	}
	return int32(binary.BigEndian.Uint32(corr[:])), nil
}
