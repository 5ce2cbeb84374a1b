package main

import (
	"bytes"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// kcatPath finds kcat: a test that needs it fails when CI=true and it is
// missing (make tools installs it), and skips otherwise.
func kcatPath(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("kcat")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("kcat is not installed (make tools installs it)")
		}
		t.Skip("kcat is not installed; run make tools")
	}
	return path
}

func kcat(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(kcatPath(t), args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("kcat %v: %v\n%s", args, err, stderr.String())
		}
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("kcat %v hung\n%s", args, stderr.String())
	}
	return out.String()
}

func TestKcatMetadataProduceConsume(t *testing.T) {
	kcatPath(t)
	p := startDev(t, "")
	b := p.kafkaAddr

	var in strings.Builder
	var want []string
	for i := 0; i < 100; i++ {
		line := "key" + string(rune('a'+i%5)) + ":value-" + strconv.Itoa(i)
		in.WriteString(line + "\n")
		want = append(want, line)
	}
	kcat(t, in.String(), "-b", b, "-P", "-t", "kcat-keys", "-K:")
	out := kcat(t, "", "-b", b, "-C", "-t", "kcat-keys", "-o", "beginning", "-e", "-K:", "-f", "%k:%s\n")
	got := strings.Split(strings.TrimSpace(out), "\n")
	sort.Strings(got)
	sort.Strings(want)
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("kcat consumed %d records, want %d:\n%s", len(got), len(want), out)
	}

	meta := kcat(t, "", "-b", b, "-L")
	if !strings.Contains(meta, "kcat-keys") || !strings.Contains(meta, "1 brokers") {
		t.Fatalf("kcat -L:\n%s", meta)
	}
}

func TestKcatEveryCompressionCodec(t *testing.T) {
	kcatPath(t)
	p := startDev(t, "")
	for _, codec := range []string{"none", "gzip", "snappy", "lz4", "zstd"} {
		t.Run(codec, func(t *testing.T) {
			topic := "kcat-" + codec
			var in strings.Builder
			for i := 0; i < 200; i++ {
				in.WriteString(codec + "-record-" + strconv.Itoa(i) + strings.Repeat("x", 100) + "\n")
			}
			kcat(t, in.String(), "-b", p.kafkaAddr, "-P", "-t", topic, "-z", codec)
			out := kcat(t, "", "-b", p.kafkaAddr, "-C", "-t", topic, "-o", "beginning", "-e")
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
	kcatPath(t)
	p := startDev(t, "")
	var in strings.Builder
	for i := 0; i < 500; i++ {
		in.WriteString("idem-" + strconv.Itoa(i) + "\n")
	}
	kcat(t, in.String(), "-b", p.kafkaAddr, "-P", "-t", "kcat-idempotent",
		"-X", "enable.idempotence=true", "-X", "linger.ms=5", "-X", "batch.num.messages=50")
	out := kcat(t, "", "-b", p.kafkaAddr, "-C", "-t", "kcat-idempotent", "-o", "beginning", "-e", "-f", "%s\n")
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
