package broker_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker/brokertest"
)

// logCapture collects a broker's log records as JSON lines.
type logCapture struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (c *logCapture) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.Write(p)
}

// records returns the records with message msg.
func (c *logCapture) records(msg string) []map[string]any {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(c.buf.String(), "\n") {
		var r map[string]any
		if json.Unmarshal([]byte(line), &r) == nil && r["msg"] == msg {
			out = append(out, r)
		}
	}
	return out
}

// find waits until a record with msg has every attribute given (compared
// as text) and returns it.
func (c *logCapture) find(t *testing.T, msg string, attrs ...any) map[string]any {
	t.Helper()
	var found map[string]any
	brokertest.WaitFor(t, 10*time.Second, fmt.Sprintf("a log line %q %v", msg, attrs), func() (bool, string) {
	next:
		for _, r := range c.records(msg) {
			for i := 0; i+1 < len(attrs); i += 2 {
				if fmt.Sprint(r[attrs[i].(string)]) != fmt.Sprint(attrs[i+1]) {
					continue next
				}
			}
			found = r
			return true, ""
		}
		return false, "not logged"
	})
	return found
}

// TestBrokerLogsOperationalEvents: topic creation, config changes,
// leadership, group joins and generations, refused requests (with the
// client's id and address, rate-limited) and topic deletion each leave a
// structured line at their level.
func TestBrokerLogsOperationalEvents(t *testing.T) {
	logs := &logCapture{}
	b := brokertest.StartWithLog(t, slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	adm := b.Admin()
	ctx := testCtx(t)

	topicID := createTopic(t, adm, "logged", 2, nil).ID
	created := logs.find(t, "topic created", "topic", "logged", "partitions", 2, "replication_factor", 1)
	if created["level"] != "INFO" || created["client_id"] == "" || created["remote"] == nil {
		t.Errorf("topic created: %v", created)
	}
	logs.find(t, "became leader", "topic", "logged", "partition", 1, "level", "INFO")

	ret := "3600000"
	if _, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Name: "retention.ms", Value: &ret}}, "logged"); err != nil {
		t.Fatal(err)
	}
	changed := logs.find(t, "topic configs changed", "topic", "logged")
	if fmt.Sprint(changed["changes"]) != "[retention.ms=3600000]" {
		t.Errorf("config change logged as %v", changed["changes"])
	}

	// A group member joins and a generation starts.
	cl := b.Client(kgo.ConsumerGroup("logged-group"), kgo.ConsumeTopics("logged"), kgo.ClientID("group-client"))
	produceSync(t, b.Client(), &kgo.Record{Topic: "logged", Value: []byte("v")})
	for len(cl.PollFetches(ctx).Records()) == 0 {
	}
	logs.find(t, "group: member joined", "group", "logged-group", "client_id", "group-client", "level", "INFO")
	logs.find(t, "group: new generation", "group", "logged-group", "generation", 1, "members", 1)

	// A flood of corrupt batches leaves one Warn line, naming the client.
	bad := kgo.ClientID("bad-client")
	flood := b.Client(bad)
	for i := 0; i < 20; i++ {
		req := kmsg.NewPtrProduceRequest()
		req.Acks, req.TimeoutMillis = 1, 1000
		rt := kmsg.NewProduceRequestTopic()
		rt.Topic, rt.TopicID = "logged", topicID
		rp := kmsg.NewProduceRequestTopicPartition()
		batch := idempotentBatch(-1, -1, -1, 1)
		batch[len(batch)-1] ^= 0xff // the CRC no longer matches
		rp.Records = batch
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		resp, err := req.RequestWith(ctx, flood)
		if err != nil {
			t.Fatal(err)
		}
		if code := resp.Topics[0].Partitions[0].ErrorCode; code != kerr.CorruptMessage.Code {
			t.Fatalf("corrupt batch answered with %v", kerr.ErrorForCode(code))
		}
	}
	refused := logs.find(t, "refused a produce batch", "client_id", "bad-client", "topic", "logged", "level", "WARN")
	if refused["remote"] == nil || refused["err"] == nil {
		t.Errorf("refusal line lacks the address or the error: %v", refused)
	}
	if n := len(logs.records("refused a produce batch")); n != 1 {
		t.Errorf("%d refusal lines for 20 corrupt batches, want 1 (rate-limited)", n)
	}

	if _, err := adm.DeleteTopics(ctx, "logged"); err != nil {
		t.Fatal(err)
	}
	logs.find(t, "topic deleted", "topic", "logged", "level", "INFO")
}
