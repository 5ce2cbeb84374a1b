package main

import (
	"context"
	"crypto/x509/pkix"
	"os/exec"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shale-log/shale/broker/brokertest"
)

func TestKcatMetadataProduceConsume(t *testing.T) {
	brokertest.KcatPath(t)
	p := startDev(t, "")
	b := p.kafkaAddr

	var in strings.Builder
	var want []string
	for i := 0; i < 100; i++ {
		line := "key" + string(rune('a'+i%5)) + ":value-" + strconv.Itoa(i)
		in.WriteString(line + "\n")
		want = append(want, line)
	}
	brokertest.Kcat(t, in.String(), "-b", b, "-P", "-t", "kcat-keys", "-K:")
	out := brokertest.Kcat(t, "", "-b", b, "-C", "-t", "kcat-keys", "-o", "beginning", "-e", "-K:", "-f", "%k:%s\n")
	got := strings.Split(strings.TrimSpace(out), "\n")
	sort.Strings(got)
	sort.Strings(want)
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("kcat consumed %d records, want %d:\n%s", len(got), len(want), out)
	}

	meta := brokertest.Kcat(t, "", "-b", b, "-L")
	if !strings.Contains(meta, "kcat-keys") || !strings.Contains(meta, "1 brokers") {
		t.Fatalf("kcat -L:\n%s", meta)
	}
}

func TestKcatEveryCompressionCodec(t *testing.T) {
	brokertest.KcatPath(t)
	p := startDev(t, "")
	for _, codec := range []string{"none", "gzip", "snappy", "lz4", "zstd"} {
		t.Run(codec, func(t *testing.T) {
			topic := "kcat-" + codec
			var in strings.Builder
			for i := 0; i < 200; i++ {
				in.WriteString(codec + "-record-" + strconv.Itoa(i) + strings.Repeat("x", 100) + "\n")
			}
			brokertest.Kcat(t, in.String(), "-b", p.kafkaAddr, "-P", "-t", topic, "-z", codec)
			out := brokertest.Kcat(t, "", "-b", p.kafkaAddr, "-C", "-t", topic, "-o", "beginning", "-e")
			if got := strings.Count(out, codec+"-record-"); got != 200 {
				t.Fatalf("%d of 200 records back", got)
			}
		})
	}
}

// TestKcatIdempotentProducer: librdkafka's idempotent producer
// (enable.idempotence=true, acks=all) gets a producer id, its sequences are
// accepted, and every record is stored once.
func TestKcatIdempotentProducer(t *testing.T) {
	brokertest.KcatPath(t)
	p := startDev(t, "")
	var in strings.Builder
	for i := 0; i < 500; i++ {
		in.WriteString("idem-" + strconv.Itoa(i) + "\n")
	}
	brokertest.Kcat(t, in.String(), "-b", p.kafkaAddr, "-P", "-t", "kcat-idempotent",
		"-X", "enable.idempotence=true", "-X", "linger.ms=5", "-X", "batch.num.messages=50")
	out := brokertest.Kcat(t, "", "-b", p.kafkaAddr, "-C", "-t", "kcat-idempotent", "-o", "beginning", "-e", "-f", "%s\n")
	seen := map[string]int{}
	for _, line := range strings.Fields(out) {
		seen[line]++
	}
	if len(seen) != 500 {
		t.Fatalf("%d distinct records back, want 500", len(seen))
	}
	for v, n := range seen {
		if n != 1 {
			t.Fatalf("%s stored %d times", v, n)
		}
	}
}

// TestKcatSASL: kcat (librdkafka) produces and consumes on shale dev
// requiring SASL, as a user shale user set created, by SCRAM-SHA-256,
// SCRAM-SHA-512 and PLAIN (SASL_PLAINTEXT); a wrong password and no
// authentication at all make it fail.
func TestKcatSASL(t *testing.T) {
	kcat := brokertest.KcatPath(t)
	p := startDev(t, "", "SHALE_SASL_MECHANISMS=SCRAM-SHA-256,SCRAM-SHA-512,PLAIN", "SHALE_SASL_BOOTSTRAP_USER=admin", saslBootstrapPasswordEnv+"=admin-pw")
	t.Setenv(userPasswordEnv, "kc-pw")
	mustAdmin(t, saslCLI(t, p.kafkaAddr, "SCRAM-SHA-512", "admin", "admin-pw"), "user", "set", "kc")
	auth := func(mech, pass string) []string {
		return []string{"-b", p.kafkaAddr, "-X", "security.protocol=SASL_PLAINTEXT", "-X", "sasl.mechanisms=" + mech,
			"-X", "sasl.username=kc", "-X", "sasl.password=" + pass}
	}
	for _, mech := range []string{"SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"} {
		t.Run(mech, func(t *testing.T) {
			topic := "kcat-sasl-" + strings.ToLower(mech)
			var in strings.Builder
			for i := range 100 {
				in.WriteString(mech + "-" + strconv.Itoa(i) + "\n")
			}
			brokertest.Kcat(t, in.String(), append(auth(mech, "kc-pw"), "-P", "-t", topic)...)
			out := brokertest.Kcat(t, "", append(auth(mech, "kc-pw"), "-C", "-t", topic, "-o", "beginning", "-e")...)
			if out != in.String() {
				t.Fatalf("kcat consumed:\n%s\nwant:\n%s", out, in.String())
			}
		})
	}

	for _, mech := range []string{"SCRAM-SHA-256", "PLAIN"} {
		if e := kcatFails(t, kcat, "", append(auth(mech, "wrong"), "-L", "-m", "3")...); !strings.Contains(e, "Authentication failed") {
			t.Errorf("kcat -L by %s with a wrong password failed without saying so:\n%s", mech, e)
		}
		kcatFails(t, kcat, "x\n", append(auth(mech, "wrong"), "-P", "-t", "kcat-sasl-refused")...)
	}
	kcatFails(t, kcat, "", "-b", p.kafkaAddr, "-L", "-m", "3")
}

// kcatFails runs kcat (path), which must fail within a minute; it
// returns its stderr.
func kcatFails(t *testing.T, kcat, stdin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, kcat, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	err := cmd.Run()
	if err == nil || ctx.Err() != nil {
		t.Fatalf("kcat %v: %v (context %v), want it to fail\n%s", args, err, ctx.Err(), stderr.String())
	}
	return stderr.String()
}

// kcatRoundTrip produces 100 records to topic with kcat and consumes
// them back, every call with args (the broker and security settings).
func kcatRoundTrip(t *testing.T, topic string, args ...string) {
	t.Helper()
	var in strings.Builder
	for i := range 100 {
		in.WriteString(topic + "-" + strconv.Itoa(i) + "\n")
	}
	brokertest.Kcat(t, in.String(), append(slices.Clone(args), "-P", "-t", topic)...)
	out := brokertest.Kcat(t, "", append(slices.Clone(args), "-C", "-t", topic, "-o", "beginning", "-e")...)
	if out != in.String() {
		t.Fatalf("kcat consumed:\n%s\nwant:\n%s", out, in.String())
	}
}

// TestKcatTLS: kcat (librdkafka, with OpenSSL and its default hostname
// verification) produces and consumes on shale dev's TLS listener
// (--tls-cert, --tls-key): SSL trusting the CA, SASL_SSL by SCRAM-SHA-256,
// and SSL with a client certificate where the listener requires one
// (--tls-client-auth required). Without TLS, without the CA or without
// its certificate kcat fails.
func TestKcatTLS(t *testing.T) {
	kcat := brokertest.KcatPath(t)
	ca := brokertest.NewCA(t)
	server := writeTLSFiles(t, ca, pkix.Name{CommonName: "shale dev"}, "127.0.0.1")
	client := writeTLSFiles(t, ca, pkix.Name{CommonName: "kcat", Organization: []string{"example"}})
	tlsEnv := []string{"SHALE_TLS_CERT=" + server.cert, "SHALE_TLS_KEY=" + server.key}

	t.Run("SSL", func(t *testing.T) {
		p := startDev(t, "", tlsEnv...)
		kcatRoundTrip(t, "kcat-ssl", "-b", p.kafkaAddr, "-X", "security.protocol=SSL", "-X", "ssl.ca.location="+server.ca)
		kcatFails(t, kcat, "", "-b", p.kafkaAddr, "-L", "-m", "3")
		// librdkafka verifies with the system's CAs, which do not
		// know this one.
		if e := kcatFails(t, kcat, "", "-b", p.kafkaAddr, "-X", "security.protocol=SSL", "-L", "-m", "3"); !strings.Contains(e, "certificate verify failed") {
			t.Errorf("kcat without the CA failed without saying why:\n%s", e)
		}
		// Hostname verification is on: the certificate names
		// 127.0.0.1, not localhost.
		_, port, _ := strings.Cut(p.kafkaAddr, ":")
		if e := kcatFails(t, kcat, "", "-b", "localhost:"+port, "-X", "security.protocol=SSL", "-X", "ssl.ca.location="+server.ca, "-L", "-m", "3"); !strings.Contains(e, "certificate verify failed") {
			t.Errorf("kcat to localhost failed without saying why:\n%s", e)
		}
	})
	t.Run("SASL_SSL", func(t *testing.T) {
		p := startDev(t, "", append(tlsEnv, "SHALE_SASL_MECHANISMS=SCRAM-SHA-256", "SHALE_SASL_BOOTSTRAP_USER=admin", saslBootstrapPasswordEnv+"=admin-pw")...)
		t.Setenv(userPasswordEnv, "kc-pw")
		mustAdmin(t, saslCLI(t, p.kafkaAddr, "SCRAM-SHA-256", "admin", "admin-pw"), "user", "set", "kc", "--tls-ca", server.ca)
		auth := func(pass string) []string {
			return []string{"-b", p.kafkaAddr, "-X", "security.protocol=SASL_SSL", "-X", "ssl.ca.location=" + server.ca,
				"-X", "sasl.mechanisms=SCRAM-SHA-256", "-X", "sasl.username=kc", "-X", "sasl.password=" + pass}
		}
		kcatRoundTrip(t, "kcat-sasl-ssl", auth("kc-pw")...)
		if e := kcatFails(t, kcat, "", append(auth("wrong"), "-L", "-m", "3")...); !strings.Contains(e, "Authentication failed") {
			t.Errorf("kcat -L with a wrong password failed without saying so:\n%s", e)
		}
	})
	t.Run("client certificate", func(t *testing.T) {
		p := startDev(t, "", append(tlsEnv, "SHALE_TLS_CA="+server.ca, "SHALE_TLS_CLIENT_AUTH=required")...)
		ssl := []string{"-b", p.kafkaAddr, "-X", "security.protocol=SSL", "-X", "ssl.ca.location=" + server.ca}
		kcatRoundTrip(t, "kcat-mtls", append(ssl, "-X", "ssl.certificate.location="+client.cert, "-X", "ssl.key.location="+client.key)...)
		kcatFails(t, kcat, "", append(ssl, "-L", "-m", "3")...)
	})
}
