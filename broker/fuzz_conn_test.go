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

	"github.com/shale-log/shale/broker/brokertest"
)

// FuzzConnection sends arbitrary request frames to a real broker: every
// frame must get a response or a closed connection, and the broker must
// keep serving (a panic in any handler fails the run).
func FuzzConnection(f *testing.F) {
	b := brokertest.Start(f)
	adm := b.Admin()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := adm.CreateTopic(ctx, 2, 1, nil, "fuzz"); err != nil {
		f.Fatal(err)
	}
	id := "fuzz"
	var formatter = kmsg.NewRequestFormatter(kmsg.FormatterClientID(id))
	for _, key := range []kmsg.Key{kmsg.Produce, kmsg.Fetch, kmsg.ListOffsets, kmsg.Metadata, kmsg.OffsetCommit,
		kmsg.OffsetFetch, kmsg.FindCoordinator, kmsg.JoinGroup, kmsg.SyncGroup, kmsg.Heartbeat, kmsg.LeaveGroup,
		kmsg.DescribeGroups, kmsg.ListGroups, kmsg.ApiVersions, kmsg.CreateTopics, kmsg.DeleteRecords,
		kmsg.InitProducerID, kmsg.OffsetForLeaderEpoch, kmsg.DescribeConfigs, kmsg.IncrementalAlterConfigs,
		kmsg.CreatePartitions, kmsg.DescribeCluster, kmsg.ConsumerGroupHeartbeat} {
		req := key.Request()
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

	f.Fuzz(func(t *testing.T, body []byte) {
		if len(body) > 1<<20 {
			return
		}
		c, err := net.Dial("tcp", b.Addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write(binary.BigEndian.AppendUint32(nil, uint32(len(body))))
		c.Write(body)
		// A response, silence (acks=0) or a close: all fine. Read a
		// little, then check the broker still answers a new client.
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		var rsize [4]byte
		if _, err := io.ReadFull(c, rsize[:]); err == nil {
			io.CopyN(io.Discard, c, int64(binary.BigEndian.Uint32(rsize[:])))
		}
		check, err := net.Dial("tcp", b.Addr)
		if err != nil {
			t.Fatalf("broker gone: %v", err)
		}
		defer check.Close()
		check.SetDeadline(time.Now().Add(5 * time.Second))
		req := kmsg.NewPtrApiVersionsRequest()
		req.Version = 0
		check.Write(formatter.AppendRequest(nil, req, 9))
		var size [4]byte
		if _, err := io.ReadFull(check, size[:]); err != nil {
			t.Fatalf("broker stopped answering after %x: %v", body, err)
		}
	})
}
