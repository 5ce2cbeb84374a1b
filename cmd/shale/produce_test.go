package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/shale-log/shale/broker/brokertest"
)

// runCLIIO runs the shale command line in this process with stdin as its
// standard input and returns what it wrote on standard output and error.
func runCLIIO(t *testing.T, stdin string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	root := newRootCmd()
	var out, errOut bytes.Buffer
	root.SetIn(strings.NewReader(stdin))
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(args)
	err = root.ExecuteContext(ctx)
	return out.String(), errOut.String(), err
}

// mustCLIIO is runCLIIO that fails the test on an error.
func mustCLIIO(t *testing.T, stdin string, args ...string) (stdout, stderr string) {
	t.Helper()
	stdout, stderr, err := runCLIIO(t, stdin, args...)
	if err != nil {
		t.Fatalf("shale %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, stdout, stderr)
	}
	return stdout, stderr
}

// outLines splits output into its lines, without the last newline.
func outLines(s string) []string {
	s = strings.TrimSuffix(s, "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

func createDevTopic(t *testing.T, p *devProc, topic string, partitions int32) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := kadm.NewClient(p.client()).CreateTopic(ctx, partitions, 1, nil, topic); err != nil {
		t.Fatal(err)
	}
}

// TestProduceConsumeRoundTrip produces lines with keys, headers and a
// chosen partition, and reads them back with every placeholder of
// --format and every kind of --offset.
func TestProduceConsumeRoundTrip(t *testing.T) {
	p := startDev(t, "")
	b := "--brokers=" + p.kafkaAddr
	createDevTopic(t, p, "rt", 2)

	var in strings.Builder
	for i := range 50 {
		fmt.Fprintf(&in, "k%d:v%d:x\n", i, i)
	}
	in.WriteString("no-key-here") // a last line without a newline counts
	_, stderr := mustCLIIO(t, in.String(), "produce", "rt", b, "-k", ":", "-p", "1", "-H", "h1=a", "-H", "h2=b=c")
	// 50 keyed records of len("kN")+len("vN:x"), and one of 11 bytes.
	wantBytes := 11
	for i := range 50 {
		wantBytes += 2*len(strconv.Itoa(i)) + 1 + 3
	}
	if want := fmt.Sprintf("produced 51 records (%d bytes) to rt\n", wantBytes); stderr != want {
		t.Fatalf("produce summary %q, want %q", stderr, want)
	}

	out, _ := mustCLIIO(t, "", "consume", "rt", b, "-e", "-f", `%t|%p|%o|%k|%K|%v|%S|%h\n`)
	got := outLines(out)
	if len(got) != 51 {
		t.Fatalf("consumed %d records, want 51:\n%s", len(got), out)
	}
	for i, l := range got[:50] {
		v := fmt.Sprintf("v%d:x", i)
		want := fmt.Sprintf("rt|1|%d|k%d|%d|%s|%d|h1=a,h2=b=c", i, i, len(strconv.Itoa(i))+1, v, len(v))
		if l != want {
			t.Fatalf("record %d: %q, want %q", i, l, want)
		}
	}
	if want := "rt|1|50||0|no-key-here|11|h1=a,h2=b=c"; got[50] != want {
		t.Fatalf("last record %q, want %q", got[50], want)
	}

	// Offsets: exact, relative to the end, clamped, -n, one partition.
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"-p", "1", "-o", "47"}, []string{"47", "48", "49", "50"}},
		{[]string{"-o", "-2"}, []string{"49", "50"}},
		{[]string{"-o", "1000"}, nil},
		{[]string{"-o", "end"}, nil},
		{[]string{"-o", "start", "-n", "3"}, []string{"0", "1", "2"}},
		{[]string{"-p", "0"}, nil},
	} {
		out, _ := mustCLIIO(t, "", append([]string{"consume", "rt", b, "-e", "-f", `%o\n`}, tc.args...)...)
		if got := outLines(out); !slices.Equal(got, tc.want) {
			t.Errorf("consume %v: offsets %q, want %q", tc.args, got, tc.want)
		}
	}

	// Timestamps: records produced after a pause are found by @ms and by
	// @RFC3339, and %T prints their timestamps.
	time.Sleep(20 * time.Millisecond)
	cut := time.Now()
	time.Sleep(20 * time.Millisecond)
	mustCLIIO(t, "late-1\nlate-2\n", "produce", "rt", b, "-p", "0")
	for _, at := range []string{"@" + strconv.FormatInt(cut.UnixMilli(), 10), "@" + cut.UTC().Format(time.RFC3339Nano)} {
		out, _ := mustCLIIO(t, "", "consume", "rt", b, "-e", "-o", at, "-f", `%v %T\n`)
		got := outLines(out)
		if len(got) != 2 || !strings.HasPrefix(got[0], "late-1 ") || !strings.HasPrefix(got[1], "late-2 ") {
			t.Fatalf("consume -o %s:\n%s", at, out)
		}
		ts, err := strconv.ParseInt(strings.Fields(got[0])[1], 10, 64)
		if err != nil || ts < cut.UnixMilli() || ts > time.Now().UnixMilli() {
			t.Fatalf("%%T %q: not a timestamp after %d", got[0], cut.UnixMilli())
		}
	}
}

// TestProduceCompressionCodecsRoundTrip produces with every codec and
// acks setting and reads the records back, with shale and with kcat.
func TestProduceCompressionCodecsRoundTrip(t *testing.T) {
	p := startDev(t, "")
	b := "--brokers=" + p.kafkaAddr
	for i, codec := range []string{"none", "gzip", "snappy", "lz4", "zstd"} {
		acks := []string{"all", "1", "0", "all", "1"}[i]
		topic := "codec-" + codec
		var in strings.Builder
		var want []string
		for j := range 300 {
			l := fmt.Sprintf("%s-%d-%s", codec, j, strings.Repeat("y", j%50))
			in.WriteString(l + "\n")
			want = append(want, l)
		}
		_, stderr := mustCLIIO(t, in.String(), "produce", topic, b, "-z", codec, "--acks", acks)
		if !strings.HasPrefix(stderr, "produced 300 records ") {
			t.Fatalf("%s: %s", codec, stderr)
		}
		// With acks=0 the producer returns once its requests are
		// sent, before the broker has appended them: the records show
		// up a little later.
		deadline := time.Now().Add(10 * time.Second)
		for {
			out, _ := mustCLIIO(t, "", "consume", topic, b, "-e")
			got := outLines(out)
			if slices.Equal(got, want) {
				break
			}
			if acks != "0" || len(got) > len(want) || time.Now().After(deadline) {
				t.Fatalf("%s, acks=%s: read back %d records, want 300:\n%s", codec, acks, len(got), out)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// TestKcatReadsShaleProduce: what shale produce writes (keys, headers,
// compression) is what kcat reads.
func TestKcatReadsShaleProduce(t *testing.T) {
	brokertest.KcatPath(t)
	p := startDev(t, "")
	var in strings.Builder
	var want []string
	for i := range 100 {
		fmt.Fprintf(&in, "key%d=value %d\n", i, i)
		want = append(want, fmt.Sprintf("key%d|value %d|src=cli", i, i))
	}
	// -b is --brokers, as in kcat.
	mustCLIIO(t, in.String(), "produce", "to-kcat", "-b", p.kafkaAddr, "-k", "=", "-z", "zstd", "-H", "src=cli")
	out := brokertest.Kcat(t, "", "-b", p.kafkaAddr, "-C", "-t", "to-kcat", "-o", "beginning", "-e", "-f", `%k|%s|%h\n`)
	if got := outLines(out); !slices.Equal(got, want) {
		t.Fatalf("kcat read:\n%s", out)
	}
	// shale consume -f means what kcat -f means.
	format := `%t|%p|%o|%k|%K|%s|%S|%h|%T\n`
	kcatOut := brokertest.Kcat(t, "", "-b", p.kafkaAddr, "-C", "-t", "to-kcat", "-o", "beginning", "-e", "-f", format)
	shaleOut, _ := mustCLIIO(t, "", "consume", "to-kcat", "--brokers", p.kafkaAddr, "-e", "-f", format)
	if shaleOut != kcatOut {
		t.Fatalf("shale consume -f %q printed\n%s\nkcat printed\n%s", format, shaleOut, kcatOut)
	}
}

// TestDataCommandErrors: each failure is one line naming the cause (with
// the Kafka error's name where there is one), and nothing is counted that
// was not acknowledged.
func TestDataCommandErrors(t *testing.T) {
	// Checked before any connection.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"consume", "t", "-o", "soon"}, `--offset "soon"`},
		{[]string{"consume", "t", "-o", "@yesterday"}, `--offset "@yesterday"`},
		{[]string{"consume", "t", "-f", "%q"}, "unknown placeholder %q"},
		{[]string{"consume", "t", "-f", `\x`}, `unknown escape \x`},
		{[]string{"consume", "t", "-g", "g", "-p", "0"}, "cannot be combined"},
		{[]string{"consume"}, "missing TOPIC"},
		{[]string{"produce", "t", "--acks", "2"}, `--acks "2"`},
		{[]string{"produce", "t", "-z", "brotli"}, `--compression "brotli"`},
		{[]string{"produce", "t", "-H", "novalue"}, `--header "novalue"`},
		{[]string{"bench", "produce", "--records", "0"}, "--duration"},
		{[]string{"bench", "produce", "--throughput", "0"}, "--throughput"},
		{[]string{"bench", "frobnicate"}, "unknown command"},
	} {
		_, _, err := runCLIIO(t, "", tc.args...)
		wantErr(t, err, tc.want)
	}

	// An unreachable cluster fails within --timeout, naming the address.
	for _, args := range [][]string{
		{"produce", "t"},
		{"consume", "t"},
		{"consume", "t", "-g", "g"},
		{"bench", "produce", "--records", "10"},
		{"bench", "consume"},
	} {
		_, _, err := runCLIIO(t, "one line\n", append(args, "--brokers", "127.0.0.1:1", "--timeout", "1s")...)
		wantErr(t, err, "cannot reach the cluster at 127.0.0.1:1")
	}

	// A missing topic on a cluster that does not create topics on first
	// use: UNKNOWN_TOPIC_OR_PARTITION, nothing counted, exit status 1.
	p := startDev(t, "", "SHALE_AUTO_CREATE_TOPICS=false")
	b := "--brokers=" + p.kafkaAddr
	// The client retries UNKNOWN_TOPIC_OR_PARTITION up to --timeout.
	_, stderr, err := runCLIIO(t, "a\nb\n", "produce", "missing", b, "--timeout", "2s")
	wantErr(t, err, `topic "missing"`, "UNKNOWN_TOPIC_OR_PARTITION")
	if !strings.HasPrefix(stderr, "produced 0 records (0 bytes) to missing") {
		t.Fatalf("produce summary %q", stderr)
	}
	_, _, err = runCLIIO(t, "", "consume", "missing", b, "-e")
	wantErr(t, err, `topic "missing"`, "UNKNOWN_TOPIC_OR_PARTITION")
	createDevTopic(t, p, "present", 1)
	_, _, err = runCLIIO(t, "", "consume", "present", b, "-e", "-p", "3")
	wantErr(t, err, "partition 3", "UNKNOWN_TOPIC_OR_PARTITION")
	_, _, err = runCLIIO(t, "a\n", "produce", "present", b, "-p", "3")
	wantErr(t, err, `topic "present" partition 3`, "UNKNOWN_TOPIC_OR_PARTITION", "partitions 0 to 0")

	cmd := exec.Command(shaleBin, "produce", "missing", b, "--timeout", "2s")
	cmd.Stdin = strings.NewReader("x\n")
	var errOut bytes.Buffer
	cmd.Stderr = &errOut
	if err := cmd.Run(); err == nil {
		t.Fatal("shale produce to a missing topic exited 0")
	}
	if got := outLines(errOut.String()); len(got) != 2 || !strings.HasPrefix(got[1], "shale: ") || !strings.Contains(got[1], "UNKNOWN_TOPIC_OR_PARTITION") {
		t.Fatalf("stderr %q, want the summary and one error line", errOut.String())
	}
}

// TestProduceAndBenchStopOnSIGINT: shale produce stops reading on Ctrl-C
// and reports what was acknowledged; bench produce ends its run early and
// still prints the final line; both exit 0.
func TestProduceAndBenchStopOnSIGINT(t *testing.T) {
	p := startDev(t, "")
	cl := p.client()

	// produce: five lines, the input left open, then SIGINT once they
	// are in the topic.
	cmd := exec.Command(shaleBin, "produce", "sigint", "--brokers", p.kafkaAddr)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	io.WriteString(stdin, "1\n2\n3\n4\n5\n")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, "sigint")
		if o, ok := ends.Lookup("sigint", 0); err == nil && ok && o.Offset == 5 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("the five records did not arrive:\n%s", stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGINT)
	waitCleanExit(t, cmd, &stderr)
	if got := stderr.String(); got != "produced 5 records (5 bytes) to sigint\n" {
		t.Fatalf("stderr %q", got)
	}

	// bench produce: endless at 2000 records/s; SIGINT after the first
	// progress line.
	bench := exec.Command(shaleBin, "bench", "produce", "--brokers", p.kafkaAddr, "--records", "0", "--duration", "1h",
		"--throughput", "2000", "--interval", "100ms")
	out, err := bench.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var benchErr lockedBuffer
	bench.Stderr = &benchErr
	if err := bench.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bench.Process.Kill() })
	r := bufio.NewReader(out)
	first, err := r.ReadString('\n')
	if err != nil || !benchProgress.MatchString(strings.TrimSuffix(first, "\n")) {
		t.Fatalf("first line %q, %v\n%s", first, err, benchErr.String())
	}
	bench.Process.Signal(syscall.SIGINT)
	rest, _ := io.ReadAll(r)
	waitCleanExit(t, bench, &benchErr)
	ls := outLines(string(rest))
	if len(ls) == 0 || !benchFinal.MatchString(ls[len(ls)-1]) {
		t.Fatalf("after SIGINT bench printed %q", rest)
	}
}

// waitCleanExit waits for cmd, which must exit 0 within 20 seconds.
func waitCleanExit(t *testing.T, cmd *exec.Cmd, stderr *lockedBuffer) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s after SIGINT: %v\n%s", strings.Join(cmd.Args, " "), err, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("%s did not stop on SIGINT", strings.Join(cmd.Args, " "))
	}
}
