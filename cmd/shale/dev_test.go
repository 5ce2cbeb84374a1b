package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// shaleBin is the binary under test, built once by TestMain with version
// testVersion.
var shaleBin string

const testVersion = "v0.0.0-test"

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "shale-bin-")
	if err != nil {
		panic(err)
	}
	shaleBin = filepath.Join(dir, "shale")
	build := exec.Command("go", "build", "-ldflags", "-X main.version="+testVersion, "-o", shaleBin, ".")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building shale:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// devProc is a `shale dev` process.
type devProc struct {
	t         *testing.T
	dataDir   string
	kafkaAddr string
	httpAddr  string
	cmd       *exec.Cmd
	stderr    *lockedBuffer
	exited    chan struct{}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// freeRange returns an address whose port and the n-1 ports after it are
// free (shale dev --brokers n serves broker i at port+i). They stay held
// until release, so that ranges picked in turn do not overlap: the kernel
// may hand out neighbouring ports, and a broker's HTTP port then fell on
// another's Kafka port.
func freeRange(t *testing.T, n int) (addr string, release func()) {
	t.Helper()
	for range 100 {
		first, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		held := []net.Listener{first}
		release = func() {
			for _, l := range held {
				l.Close()
			}
		}
		port := first.Addr().(*net.TCPAddr).Port
		for i := 1; i < n; i++ {
			l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port+i)))
			if err != nil {
				break
			}
			held = append(held, l)
		}
		if len(held) == n {
			return first.Addr().String(), release
		}
		release()
	}
	t.Fatalf("no %d free ports in a row", n)
	return "", nil
}

// startDev starts `shale dev` on dataDir (a new temp dir when empty) and
// waits until /healthz answers. Its ports were free when freeRange picked
// them, but nothing holds them: another process of the test run can take
// one before shale dev binds it ("bind: address already in use"), and it
// then starts again on others.
func startDev(t *testing.T, dataDir string, env ...string) *devProc {
	t.Helper()
	if dataDir == "" {
		dataDir = t.TempDir()
	}
	for attempt := 1; ; attempt++ {
		// Three ports each: SHALE_DEV_BROKERS=3 serves broker i at
		// port+i.
		kafkaAddr, releaseKafka := freeRange(t, 3)
		httpAddr, releaseHTTP := freeRange(t, 3)
		releaseKafka()
		releaseHTTP()
		p := &devProc{t: t, dataDir: dataDir, kafkaAddr: kafkaAddr, httpAddr: httpAddr, stderr: &lockedBuffer{}, exited: make(chan struct{})}
		p.cmd = exec.Command(shaleBin, "dev", "--data-dir", dataDir, "--kafka-addr", p.kafkaAddr, "--http-addr", p.httpAddr,
			"--group-initial-rebalance-delay", "0s")
		p.cmd.Env = append(os.Environ(), env...)
		p.cmd.Stderr = p.stderr
		if err := p.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() {
			p.cmd.Wait()
			close(p.exited)
		}()
		t.Cleanup(func() { p.stop(syscall.SIGKILL) })
		if !p.waitHealthyOrBusy(attempt < 5) {
			return p
		}
		t.Logf("shale dev: an address was taken before it could bind it; starting it on others")
	}
}

func (p *devProc) waitHealthy() {
	p.t.Helper()
	p.waitHealthyOrBusy(false)
}

// waitHealthyOrBusy is waitHealthy, returning true instead when the
// process exited because an address it was given is in use and busyOK.
func (p *devProc) waitHealthyOrBusy(busyOK bool) bool {
	p.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-p.exited:
			if busyOK && strings.Contains(p.stderr.String(), "address already in use") {
				return true
			}
			p.t.Fatalf("shale dev exited:\n%s", p.stderr)
		default:
		}
		resp, err := http.Get("http://" + p.httpAddr + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return false
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	p.t.Fatalf("shale dev not healthy after 30s:\n%s", p.stderr)
	return false
}

// stop signals the process and waits for it to exit.
func (p *devProc) stop(sig syscall.Signal) {
	select {
	case <-p.exited:
		return
	default:
	}
	p.cmd.Process.Signal(sig)
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		p.cmd.Process.Kill()
		<-p.exited
		p.t.Errorf("shale dev did not exit on %v", sig)
	}
}

func (p *devProc) client(opts ...kgo.Opt) *kgo.Client {
	p.t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(p.kafkaAddr)}, opts...)...)
	if err != nil {
		p.t.Fatal(err)
	}
	p.t.Cleanup(cl.Close)
	return cl
}

func consumeAll(t *testing.T, cl *kgo.Client, want int) []*kgo.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out []*kgo.Record
	for len(out) < want {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("consumed %d of %d records", len(out), want)
		}
		out = append(out, fs.Records()...)
	}
	return out
}

// TestKillNineKeepsAcknowledgedRecords produces continuously with
// acks=all, kills the broker with SIGKILL mid-stream, restarts it on the
// same data directory and checks that every acknowledged record is there,
// once, in order.
func TestKillNineKeepsAcknowledgedRecords(t *testing.T) { killNineKeepsAcknowledgedRecords(t) }

// With preallocation the killed broker leaves its active segment with
// zeros after the last batch: the restart cuts them, loses no
// acknowledged record and serves no zeros.
func TestKillNineKeepsAcknowledgedRecordsWithPreallocation(t *testing.T) {
	killNineKeepsAcknowledgedRecords(t, "SHALE_TOPIC_DEFAULT=log.preallocate=true")
}

// endsWithZeros reports whether the file at path ends with 4 KiB of zeros.
func endsWithZeros(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || st.Size() < 4096 {
		return false
	}
	buf := make([]byte, 4096)
	if _, err := f.ReadAt(buf, st.Size()-4096); err != nil {
		return false
	}
	return bytes.Count(buf, []byte{0}) == len(buf)
}

func killNineKeepsAcknowledgedRecords(t *testing.T, env ...string) {
	p := startDev(t, "", env...)
	dataDir := p.dataDir
	prod := p.client(kgo.DefaultProduceTopic("crash"), kgo.AllowAutoTopicCreation(), kgo.RecordRetries(3),
		kgo.RecordDeliveryTimeout(5*time.Second))
	var mu sync.Mutex
	acked := map[string]bool{}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ctx.Err() == nil; i++ {
			v := strconv.Itoa(i)
			prod.Produce(ctx, &kgo.Record{Value: []byte(v)}, func(r *kgo.Record, err error) {
				if err == nil {
					mu.Lock()
					acked[v] = true
					mu.Unlock()
				}
			})
			if i%100 == 0 {
				time.Sleep(time.Millisecond)
			}
		}
	}()
	// Killed mid-stream once records are acknowledged (the topic's
	// auto-creation and the first answers take seconds on a loaded
	// machine: a fixed time could end with none).
	waitUntil(t, "records acknowledged before the kill", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(acked) >= 1000
	})
	if len(env) > 0 {
		// Preallocation zeros ahead of the logs the group commit
		// syncs, once it has been asked to: the kill comes once zeros
		// are there.
		waitUntil(t, "zeros ahead of the batches", func() bool {
			logs, _ := filepath.Glob(filepath.Join(dataDir, "log", "crash-*", "*.log"))
			for _, path := range logs {
				if endsWithZeros(path) {
					return true
				}
			}
			return false
		})
	}
	p.stop(syscall.SIGKILL)
	time.Sleep(300 * time.Millisecond)
	cancel()
	wg.Wait()
	prod.Close()
	mu.Lock()
	n := len(acked)
	mu.Unlock()
	if n == 0 {
		t.Fatal("nothing was acknowledged before the kill")
	}

	p2 := startDev(t, dataDir, env...)
	cons := p2.client(kgo.ConsumeTopics("crash"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(500*time.Millisecond))
	end := endOffset(t, p2, "crash")
	got := consumeAll(t, cons, int(end))
	seen := map[string]bool{}
	for i, r := range got {
		if r.Offset != int64(i) {
			t.Fatalf("offset %d at position %d", r.Offset, i)
		}
		if seen[string(r.Value)] {
			t.Fatalf("record %s appears twice", r.Value)
		}
		seen[string(r.Value)] = true
	}
	var lost []string
	for v := range acked {
		if !seen[v] {
			lost = append(lost, v)
		}
	}
	sort.Strings(lost)
	if len(lost) > 0 {
		t.Fatalf("%d of %d acknowledged records lost after kill -9, e.g. %v", len(lost), n, lost[:min(5, len(lost))])
	}
	if len(env) > 0 && !strings.Contains(p2.stderr.String(), "cutting a preallocated tail") {
		t.Fatalf("the restart found no preallocated tail to cut:\n%s", p2.stderr.String())
	}
	t.Logf("%d acknowledged records, %d in the log after kill -9 and restart", n, len(got))
}

// endOffset waits for the topic's partition 0 to be served and returns its
// log end offset.
func endOffset(t *testing.T, p *devProc, topic string) int64 {
	t.Helper()
	adm := kadm.NewClient(p.client())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		offs, err := adm.ListEndOffsets(ctx, topic)
		if err == nil {
			if o, ok := offs.Lookup(topic, 0); ok && o.Err == nil {
				return o.Offset
			}
		}
		if ctx.Err() != nil {
			t.Fatalf("list end offsets: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestCleanShutdownAndRestart(t *testing.T) {
	p := startDev(t, "")
	prod := p.client(kgo.DefaultProduceTopic("clean"), kgo.AllowAutoTopicCreation())
	for i := 0; i < 50; i++ {
		if err := prod.ProduceSync(context.Background(), &kgo.Record{Value: []byte(strconv.Itoa(i))}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	prod.Close()
	p.stop(syscall.SIGTERM)
	select {
	case <-p.exited:
	default:
		t.Fatal("not exited")
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit code %d after SIGTERM:\n%s", code, p.stderr)
	}
	p2 := startDev(t, p.dataDir)
	cons := p2.client(kgo.ConsumeTopics("clean"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if got := consumeAll(t, cons, 50); len(got) != 50 {
		t.Fatalf("%d records", len(got))
	}
}

func TestEnvironmentConfiguresFlags(t *testing.T) {
	dir := t.TempDir()
	kafka, httpAddr := freeAddr(t), freeAddr(t)
	cmd := exec.Command(shaleBin, "dev")
	cmd.Env = append(os.Environ(), "SHALE_DATA_DIR="+dir, "SHALE_KAFKA_ADDR="+kafka, "SHALE_HTTP_ADDR="+httpAddr)
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + httpAddr + "/metrics")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 && strings.Contains(string(body), "shale_connections") {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no metrics on %s:\n%s", httpAddr, stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := os.Stat(filepath.Join(dir, "etcd")); err != nil {
		t.Fatalf("SHALE_DATA_DIR not used: %v", err)
	}
	c, err := net.Dial("tcp", kafka)
	if err != nil {
		t.Fatalf("SHALE_KAFKA_ADDR not used: %v", err)
	}
	c.Close()
}

// Regression: a second `shale dev` on a data dir in use printed nothing,
// listened on its Kafka port and waited forever on etcd's file lock,
// ignoring SIGINT and SIGTERM. It now refuses at once, before listening.
func TestSecondDevOnADataDirInUseIsRefused(t *testing.T) {
	p := startDev(t, "")
	kafkaAddr := freeAddr(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, shaleBin, "dev", "--data-dir", p.dataDir, "--kafka-addr", kafkaAddr, "--http-addr", freeAddr(t))
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("second shale dev still running after 10s:\n%s", out)
	}
	if err == nil {
		t.Fatalf("second shale dev exited cleanly:\n%s", out)
	}
	want := fmt.Sprintf("data dir %s is in use by process %d", p.dataDir, p.cmd.Process.Pid)
	if !strings.Contains(string(out), want) {
		t.Fatalf("output %q does not say %q", out, want)
	}
	if c, err := net.Dial("tcp", kafkaAddr); err == nil {
		c.Close()
		t.Fatalf("the refused process listened on %s", kafkaAddr)
	}
	// The first one is unaffected.
	p.waitHealthy()
}

func TestDevRefusesArguments(t *testing.T) {
	out, err := exec.Command(shaleBin, "dev", "--data-dir", t.TempDir(), "extra-arg").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "extra-arg") {
		t.Fatalf("shale dev extra-arg: err %v, output %q", err, out)
	}
}

// Regression: SIGTERM waited for every client to disconnect (27 s with an
// idle franz-go client, forever with a raw idle socket).
func TestSIGTERMDoesNotWaitForClients(t *testing.T) {
	p := startDev(t, "")
	cl := p.client()
	if err := cl.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
	raw, err := net.Dial("tcp", p.kafkaAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	start := time.Now()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(15 * time.Second):
		t.Fatalf("shale dev still running 15s after SIGTERM:\n%s", p.stderr)
	}
	if d := time.Since(start); d > 8*time.Second {
		t.Errorf("exit took %s", d)
	}
	for _, want := range []string{"shutting down", "flushing and closing logs", "shut down"} {
		if !strings.Contains(p.stderr.String(), want) {
			t.Errorf("log does not say %q:\n%s", want, p.stderr)
		}
	}
}

// listeningPorts lists the TCP ports process pid listens on (Linux /proc).
func listeningPorts(t *testing.T, pid int) []int {
	t.Helper()
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	inodes := map[string]bool{}
	for _, fd := range fds {
		link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if err == nil && strings.HasPrefix(link, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]")] = true
		}
	}
	var ports []int
	for _, table := range []string{"tcp", "tcp6"} {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pid, table))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) < 10 || f[3] != "0A" || !inodes[f[9]] { // 0A: LISTEN
				continue
			}
			local := f[1]
			port, err := strconv.ParseInt(local[strings.LastIndex(local, ":")+1:], 16, 32)
			if err == nil {
				ports = append(ports, int(port))
			}
		}
	}
	sort.Ints(ports)
	return ports
}

// Regression: shale dev's embedded etcd listened without authentication
// on two random loopback ports besides the Kafka and HTTP listeners.
func TestDevListensOnlyOnItsConfiguredPorts(t *testing.T) {
	p := startDev(t, "")
	var want []int
	for _, addr := range []string{p.kafkaAddr, p.httpAddr} {
		_, port, _ := net.SplitHostPort(addr)
		n, _ := strconv.Atoi(port)
		want = append(want, n)
	}
	sort.Ints(want)
	if got := listeningPorts(t, p.cmd.Process.Pid); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("listening on %v, want only %v", got, want)
	}
}

// stallShutdown opens a connection that pipelines ApiVersions requests and
// never reads a response, until the broker stops reading it: its writer is
// then blocked on a full socket, and shutdown waits for it until the
// shutdown timeout closes the socket.
func stallShutdown(t *testing.T, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		// A small receive window: the broker's socket fills sooner.
		rc.Control(func(fd uintptr) {
			syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
		return nil
	}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	// ApiVersions v0: key 18, version 0, correlation id, null client id.
	req := []byte{0, 0, 0, 10, 0, 18, 0, 0, 0, 0, 0, 0, 0xff, 0xff}
	batch := bytes.Repeat(req, 1000)
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		c.SetWriteDeadline(time.Now().Add(time.Second))
		if _, err := c.Write(batch); err != nil {
			if isNetTimeout(err) {
				return c // the broker no longer reads this connection
			}
			t.Fatalf("pipelining requests: %v", err)
		}
	}
	t.Fatal("the broker still reads a connection whose client reads nothing after 20s")
	return nil
}

func isNetTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// After SIGTERM, shutdown waits up to its 5 s timeout for responses a
// client does not read; a second SIGTERM ends the process at once, killed
// by the signal (exit status 143 in a shell), without the clean shutdown.
func TestSecondSIGTERMExitsAtOnce(t *testing.T) {
	p := startDev(t, "")
	secondSIGTERMExitsAtOnce(t, p.cmd, p.stderr, p.exited, p.kafkaAddr)
}

func secondSIGTERMExitsAtOnce(t *testing.T, cmd *exec.Cmd, stderr *lockedBuffer, exited <-chan struct{}, kafkaAddr string) {
	t.Helper()
	stallShutdown(t, kafkaAddr)
	start := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	// Shutdown is under way and held by the stalled connection.
	for !strings.Contains(stderr.String(), "finishing requests in flight") {
		if time.Since(start) > 3*time.Second {
			t.Fatalf("shutdown did not start within 3s of SIGTERM:\n%s", stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(time.Second)
	select {
	case <-exited:
		t.Fatalf("exited within %s of SIGTERM: the shutdown was not held:\n%s", time.Since(start), stderr)
	default:
	}
	second := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Fatalf("still running 10s after a second SIGTERM:\n%s", stderr)
	}
	// The held shutdown has about 4s left (5s from the first SIGTERM):
	// an exit within 2.5s is the second signal's, with room for a loaded
	// machine.
	if d := time.Since(second); d > 2500*time.Millisecond {
		t.Errorf("exit took %s after the second SIGTERM", d)
	}
	ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ws.Signaled() || ws.Signal() != syscall.SIGTERM {
		t.Errorf("exit status %v, want killed by SIGTERM:\n%s", cmd.ProcessState, stderr)
	}
	if strings.Contains(stderr.String(), "closing connections still open at the deadline") {
		t.Errorf("the shutdown reached its deadline before the process exited:\n%s", stderr)
	}
}
