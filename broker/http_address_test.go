package broker_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/shale-log/shale/broker"
	"github.com/shale-log/shale/broker/brokertest"
	"github.com/shale-log/shale/metadata"
)

// The broker registers its advertised HTTP address in etcd and describes
// it as a broker config, where tools connected only to the Kafka listener
// find it.
func TestAdvertisedHTTPAddressIsRegisteredAndDescribed(t *testing.T) {
	b := brokertest.Start(t, func(c *broker.Config) { c.AdvertisedHTTPAddr = "broker-0.example:9644" })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := b.Etcd().Get(ctx, "/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	var regs []metadata.Broker
	for _, kv := range resp.Kvs {
		if strings.Contains(string(kv.Key), "/brokers/") {
			var r metadata.Broker
			if err := json.Unmarshal(kv.Value, &r); err == nil {
				regs = append(regs, r)
			}
		}
	}
	if len(regs) != 1 || regs[0].HTTPAddr != "broker-0.example:9644" {
		t.Fatalf("registrations %+v", regs)
	}
	rcs, err := b.Admin().DescribeBrokerConfigs(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := rcs.On("0", nil)
	if err != nil || rc.Err != nil {
		t.Fatalf("describe broker 0: %v %v", err, rc.Err)
	}
	var got *kadm.Config
	for i := range rc.Configs {
		if rc.Configs[i].Key == broker.HTTPAddressConfig {
			got = &rc.Configs[i]
		}
	}
	if got == nil || got.MaybeValue() != "broker-0.example:9644" {
		t.Fatalf("%s described as %+v", broker.HTTPAddressConfig, got)
	}
}
