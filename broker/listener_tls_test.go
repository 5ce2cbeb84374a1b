package broker_test

import (
	"crypto/tls"
	"crypto/x509/pkix"
	"io"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/shale-log/shale/broker"
	"github.com/shale-log/shale/broker/brokertest"
)

// TestTLSListenerServesSASLClients: on a TLS listener requiring SCRAM
// (Kafka's SASL_SSL), a client that trusts the broker's CA authenticates,
// produces and consumes, fetches included (no sendfile under TLS); a
// plain TCP client is closed after its failed handshake, and one that
// does not trust the CA fails it.
func TestTLSListenerServesSASLClients(t *testing.T) {
	ca := brokertest.NewCA(t)
	listener, peer := ca.ListenerTLS(tls.NoClientCert)
	b := brokertest.Start(t, saslOpts, func(c *broker.Config) { c.TLS, c.PeerTLS = listener, peer })
	const topic = "tls"
	createTopic(t, b.Admin(), topic, 1, nil)
	described, err := b.Admin().DescribeBrokerConfigs(testCtx(t), 0)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"advertised.listeners": "SASL_SSL://" + b.Addr, "sasl.enabled.mechanisms": "SCRAM-SHA-256,SCRAM-SHA-512,PLAIN", "ssl.client.auth": "none"}
	for _, cfg := range described[0].Configs {
		if w, ok := want[cfg.Key]; ok {
			if cfg.MaybeValue() != w {
				t.Errorf("%s = %q, want %q", cfg.Key, cfg.MaybeValue(), w)
			}
			delete(want, cfg.Key)
		}
	}
	if len(want) > 0 {
		t.Fatalf("not described: %v", want)
	}
	prod := b.Client(kgo.DefaultProduceTopic(topic))
	value := make([]byte, 100_000)
	for i := range 20 {
		value[0] = byte(i)
		produceSync(t, prod, &kgo.Record{Value: value})
	}
	recs := consumeN(t, b, topic, 20)
	for i, r := range recs {
		if len(r.Value) != len(value) || r.Value[0] != byte(i) {
			t.Fatalf("record %d: %d bytes, first %d", i, len(r.Value), r.Value[0])
		}
	}

	// Plain TCP: the broker reads it as a handshake, fails it, closes.
	c := dial(t, b.Addr)
	c.Write([]byte{0, 0, 0, 10, 0, 18, 0, 3, 0, 0, 0, 1, 0, 0})
	if _, err := io.ReadAll(c); err != nil {
		t.Fatalf("plain TCP client: %v, want the connection closed", err)
	}
	// TLS without trusting the CA.
	if _, err := tls.Dial("tcp", b.Addr, &tls.Config{ServerName: "127.0.0.1"}); err == nil {
		t.Fatal("a client without the CA completed a handshake")
	}
}

// TestTLSClientCertificates: a listener asking for client certificates
// (ssl.client.auth=required) admits a client with one of its CA, whose
// subject is then its user (a user quota binds it), and refuses one
// without.
func TestTLSClientCertificates(t *testing.T) {
	ca := brokertest.NewCA(t)
	listener, peer := ca.ListenerTLS(tls.RequireAndVerifyClientCert)
	b := brokertest.Start(t, func(c *broker.Config) {
		c.TLS, c.PeerTLS = listener, peer
		c.QuotaWindowSize = 100 * time.Millisecond
	})
	const topic = "mtls"
	createTopic(t, b.Admin(), topic, 1, nil)
	alice := pkix.Name{CommonName: "alice", Organization: []string{"example"}}
	if codes := alterQuotas(t, b.Client(), false, quotaEntry([]string{"user", alice.String()}, map[string]float64{"producer_byte_rate": 100_000})); codes[0] != 0 {
		t.Fatalf("alter: %v", codes)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.Addr), kgo.DialTLSConfig(ca.ClientTLS(alice)), kgo.DefaultProduceTopic(topic), kgo.ProducerLinger(0), kgo.ProducerBatchCompression(kgo.NoCompression()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	value := make([]byte, 10_000)
	for range 20 {
		produceSync(t, cl, &kgo.Record{Value: value})
	}
	if n := gather(t, b.Registry).sum("shale_client_quota_throttled_total", "kind=produce"); n == 0 {
		t.Fatalf("user %q, past its quota, was not throttled", alice.String())
	}
	anon, err := kgo.NewClient(kgo.SeedBrokers(b.Addr), kgo.DialTLSConfig(ca.ClientTLS(pkix.Name{})), kgo.RetryTimeout(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer anon.Close()
	if _, err := kadm.NewClient(anon).ListTopics(testCtx(t)); err == nil {
		t.Fatal("a client without a certificate was served")
	}
}

// TestTLSClusterReplicates: brokers whose listener is TLS and requires
// SASL replicate to each other over TLS, and a topic's records outlive
// its leader.
func TestTLSClusterReplicates(t *testing.T) {
	ca := brokertest.NewCA(t)
	listener, peer := ca.ListenerTLS(tls.RequireAndVerifyClientCert)
	c := brokertest.StartCluster(t, 3, saslOpts, func(cfg *broker.Config) { cfg.TLS, cfg.PeerTLS = listener, peer })
	checkReplicatesPastLeader(t, c)
	// A client with SCRAM but no certificate is refused.
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.Addrs()...), kgo.DialTLSConfig(ca.ClientTLS(pkix.Name{})),
		kgo.SASL(scram.Auth{User: "admin", Pass: "admin-secret"}.AsSha256Mechanism()), kgo.RetryTimeout(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := kadm.NewClient(cl).ListTopics(testCtx(t)); err == nil {
		t.Fatalf("a client without a certificate: %v", err)
	}
}
