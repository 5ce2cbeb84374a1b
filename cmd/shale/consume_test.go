package main

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestConsumeGroupResumesFromCommittedOffset: a group member commits the
// records it printed, and the next member starts after them.
func TestConsumeGroupResumesFromCommittedOffset(t *testing.T) {
	p := startDev(t, "")
	b := "--brokers=" + p.kafkaAddr
	var in strings.Builder
	for i := range 10 {
		fmt.Fprintf(&in, "r%d\n", i)
	}
	mustCLIIO(t, in.String(), "produce", "grp", b)

	out, _ := mustCLIIO(t, "", "consume", "grp", b, "-g", "readers", "-n", "4")
	if got := outLines(out); !slices.Equal(got, []string{"r0", "r1", "r2", "r3"}) {
		t.Fatalf("first member printed %q", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	offs, err := kadm.NewClient(p.client()).FetchOffsets(ctx, "readers")
	if err != nil {
		t.Fatal(err)
	}
	if o, ok := offs.Lookup("grp", 0); !ok || o.At != 4 {
		t.Fatalf("committed offset %+v, want 4", o)
	}
	// --offset only applies where the group has no commit.
	out, _ = mustCLIIO(t, "", "consume", "grp", b, "-g", "readers", "-e", "-o", "end")
	if got := outLines(out); !slices.Equal(got, []string{"r4", "r5", "r6", "r7", "r8", "r9"}) {
		t.Fatalf("second member printed %q", got)
	}
	out, _ = mustCLIIO(t, "", "consume", "grp", b, "-g", "readers", "-e")
	if out != "" {
		t.Fatalf("third member printed %q after everything was committed", out)
	}
}

// TestConsumeStopsOnSIGINT: a consumer without an end stops cleanly on
// Ctrl-C, exit status 0, and its group keeps the offsets it printed.
func TestConsumeStopsOnSIGINT(t *testing.T) {
	p := startDev(t, "")
	var in strings.Builder
	for i := range 20 {
		fmt.Fprintf(&in, "s%d\n", i)
	}
	mustCLIIO(t, in.String(), "produce", "sig", "--brokers", p.kafkaAddr)

	cmd := exec.Command(shaleBin, "consume", "sig", "--brokers", p.kafkaAddr, "-g", "sig-readers")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	var got bytes.Buffer
	buf := make([]byte, 4096)
	for strings.Count(got.String(), "\n") < 20 {
		n, err := stdout.Read(buf)
		got.Write(buf[:n])
		if err != nil {
			t.Fatalf("reading consume's output: %v (%q)\n%s", err, got.String(), stderr.String())
		}
	}
	cmd.Process.Signal(syscall.SIGINT)
	waitCleanExit(t, cmd, &stderr)
	if stderr.String() != "" {
		t.Fatalf("stderr: %s", stderr.String())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	offs, err := kadm.NewClient(p.client()).FetchOffsets(ctx, "sig-readers")
	if err != nil {
		t.Fatal(err)
	}
	if o, ok := offs.Lookup("sig", 0); !ok || o.At != 20 {
		t.Fatalf("committed offset %+v, want 20", o)
	}
}

func TestParseOffset(t *testing.T) {
	ts := time.Date(2026, 1, 2, 15, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want offsetSpec
	}{
		{"start", offsetSpec{kind: offsetStart}},
		{"beginning", offsetSpec{kind: offsetStart}},
		{"end", offsetSpec{kind: offsetEnd}},
		{"0", offsetSpec{kind: offsetExact}},
		{"42", offsetSpec{kind: offsetExact, n: 42}},
		{"-10", offsetSpec{kind: offsetFromEnd, n: 10}},
		{"@1700000000000", offsetSpec{kind: offsetAfterMs, n: 1700000000000}},
		{"@2026-01-02T15:04:05Z", offsetSpec{kind: offsetAfterMs, n: ts.UnixMilli()}},
		{"@2026-01-02T16:04:05+01:00", offsetSpec{kind: offsetAfterMs, n: ts.UnixMilli()}},
	} {
		got, err := parseOffset(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("parseOffset(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "first", "1.5", "@", "@-5", "@2026-01-02", "0x10", "-9223372036854775808", "@1969-12-31T23:59:59Z"} {
		if _, err := parseOffset(bad); err == nil {
			t.Errorf("parseOffset(%q) accepted", bad)
		}
	}
}

func TestRecordFormat(t *testing.T) {
	r := &kgo.Record{Topic: "t", Partition: 2, Offset: 7, Key: []byte("k"), Value: []byte("value"),
		Timestamp: time.UnixMilli(1700000000123),
		Headers:   []kgo.RecordHeader{{Key: "a", Value: []byte("1")}, {Key: "b", Value: nil}}}
	for _, tc := range []struct{ format, want string }{
		{`%v\n`, "value\n"},
		{`%t/%p@%o %k=%s (%K,%S) %T [%h]\t100%%\\`, "t/2@7 k=value (1,5) 1700000000123 [a=1,b=]\t100%\\"},
		{"plain", "plain"},
		{`\r\0`, "\r\x00"},
	} {
		f, err := parseFormat(tc.format)
		if err != nil {
			t.Fatalf("%q: %v", tc.format, err)
		}
		if got := string(f.append(nil, r)); got != tc.want {
			t.Errorf("format %q: %q, want %q", tc.format, got, tc.want)
		}
	}
	for _, bad := range []string{"%", `\`, "%x", `\q`} {
		if _, err := parseFormat(bad); err == nil {
			t.Errorf("format %q accepted", bad)
		}
	}
}

// FuzzParseFormat: any --format either is refused or formats any record
// without panicking; a format without % or \ prints itself.
func FuzzParseFormat(f *testing.F) {
	for _, s := range []string{`%v\n`, `%t|%p|%o|%k|%K|%s|%S|%h|%T\n`, "%", `\`, "%%", `\\`, "plain", "%z", `\q`} {
		f.Add(s)
	}
	r := &kgo.Record{Topic: "t", Key: []byte("k"), Value: []byte("v"), Headers: []kgo.RecordHeader{{Key: "h", Value: []byte("x")}}}
	f.Fuzz(func(t *testing.T, s string) {
		rf, err := parseFormat(s)
		if err != nil {
			return
		}
		out := rf.append(nil, r)
		if !strings.ContainsAny(s, `%\`) && string(out) != s {
			t.Fatalf("format %q printed %q", s, out)
		}
	})
}

// FuzzParseOffset: any --offset either is refused or is a valid spec.
func FuzzParseOffset(f *testing.F) {
	for _, s := range []string{"start", "end", "0", "-1", "@0", "@2026-01-02T15:04:05Z", "@", "-", "9223372036854775807", "-9223372036854775808"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		o, err := parseOffset(s)
		if err != nil {
			return
		}
		if o.kind >= offsetInvalid || o.n < 0 {
			t.Fatalf("parseOffset(%q) = %+v", s, o)
		}
	})
}
