package main

import (
	"regexp"
	"strconv"
	"testing"
	"time"
)

var (
	benchProgress = regexp.MustCompile(`^(\d+) records, ([\d.]+) records/s, ([\d.]+) MB/s, latency avg ([\d.]+) ms, max ([\d.]+) ms$`)
	benchFinal    = regexp.MustCompile(`^(produced|consumed) (\d+) records in ([\d.]+)s: ([\d.]+) records/s, ([\d.]+) MB/s, latency avg ([\d.]+) ms, max ([\d.]+) ms, p50 ([\d.]+) ms, p99 ([\d.]+) ms, p999 ([\d.]+) ms$`)
)

// benchResult is a bench run's output, parsed.
type benchResult struct {
	progress                 []int64 // records of each progress line
	verb                     string
	records                  int64
	seconds, rate, mbps      float64
	avg, max, p50, p99, p999 float64
}

func parseBench(t *testing.T, out string) benchResult {
	t.Helper()
	ls := outLines(out)
	if len(ls) == 0 {
		t.Fatal("bench printed nothing")
	}
	var r benchResult
	for _, l := range ls[:len(ls)-1] {
		m := benchProgress.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("progress line %q does not parse", l)
		}
		n, _ := strconv.ParseInt(m[1], 10, 64)
		r.progress = append(r.progress, n)
	}
	m := benchFinal.FindStringSubmatch(ls[len(ls)-1])
	if m == nil {
		t.Fatalf("final line %q does not parse", ls[len(ls)-1])
	}
	f := func(i int) float64 {
		v, err := strconv.ParseFloat(m[i], 64)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	r.verb = m[1]
	r.records = int64(f(2))
	r.seconds, r.rate, r.mbps = f(3), f(4), f(5)
	r.avg, r.max, r.p50, r.p99, r.p999 = f(6), f(7), f(8), f(9), f(10)
	if !(r.p50 <= r.p99 && r.p99 <= r.p999 && r.p999 <= r.max) || r.avg > r.max {
		t.Fatalf("latencies out of order: %q", ls[len(ls)-1])
	}
	return r
}

// TestBenchProduceConsume runs bench produce and consume on a few thousand
// records and checks what they print.
func TestBenchProduceConsume(t *testing.T) {
	p := startDev(t, "")
	b := "--brokers=" + p.kafkaAddr

	// Rate limited to 10000 records/s, 3000 records take at least 0.3s:
	// progress lines every 50ms.
	out, _ := mustCLIIO(t, "", "bench", "produce", b, "--topic", "bench", "--records", "3000", "--record-size", "64",
		"--throughput", "10000", "--partitions", "3", "--interval", "50ms", "--acks", "1", "--compression", "lz4")
	r := parseBench(t, out)
	if r.verb != "produced" || r.records != 3000 || r.seconds < 0.29 || len(r.progress) < 2 || r.mbps <= 0 {
		t.Fatalf("bench produce: %+v\n%s", r, out)
	}
	var sum int64
	for _, n := range r.progress {
		sum += n
	}
	if sum > 3000 {
		t.Fatalf("progress lines count %d records, more than the 3000 produced\n%s", sum, out)
	}

	// An unlimited run by duration, into the same topic.
	out, _ = mustCLIIO(t, "", "bench", "produce", b, "--topic", "bench", "--records", "0", "--duration", "300ms", "--record-size", "10")
	byTime := parseBench(t, out)
	if byTime.records == 0 {
		t.Fatalf("bench produce --duration produced nothing:\n%s", out)
	}

	// Consume reads up to the end the topic had at start, over every
	// partition: the records of both runs.
	out, _ = mustCLIIO(t, "", "bench", "consume", b, "--topic", "bench")
	c := parseBench(t, out)
	if c.verb != "consumed" || c.records != 3000+byTime.records {
		t.Fatalf("bench consume: %+v, want %d records\n%s", c, 3000+byTime.records, out)
	}
	out, _ = mustCLIIO(t, "", "bench", "consume", b, "--topic", "bench", "--records", "100")
	if c := parseBench(t, out); c.records != 100 {
		t.Fatalf("bench consume --records 100: %+v", c)
	}
}

func TestLatencyHistQuantiles(t *testing.T) {
	var h latencyHist
	if h.quantile(0.5) != 0 {
		t.Fatal("empty histogram has a median")
	}
	// 1µs to 1s, uniformly: quantile q is q seconds, within the
	// histogram's 1/64 relative error.
	for us := 1; us <= 1_000_000; us++ {
		h.record(time.Duration(us) * time.Microsecond)
	}
	for _, q := range []float64{0.001, 0.01, 0.5, 0.9, 0.99, 0.999, 1} {
		want := q * float64(time.Second)
		got := float64(h.quantile(q))
		if got < want*(1-1.0/64) || got > want*(1+1.0/64) {
			t.Errorf("quantile %g = %v, want %v within 1/64", q, time.Duration(got), time.Duration(want))
		}
	}
	if h.quantile(1) != time.Second {
		t.Errorf("max quantile %v, want the largest sample", h.quantile(1))
	}
	// Small and huge values land in range.
	h.record(0)
	h.record(-time.Second)
	h.record(100 * 24 * time.Hour)
	if h.quantile(1) != 100*24*time.Hour {
		t.Errorf("max %v", h.quantile(1))
	}
	for us := range uint64(1 << 20) {
		if b := histBucket(us); b < 0 || b >= len(h.counts) || histValue(b) > float64(us)*(1+1.0/64)+1 || histValue(b)+1 < float64(us)*(1-1.0/64) {
			t.Fatalf("%dµs in bucket %d (value %g)", us, b, histValue(b))
		}
	}
}
