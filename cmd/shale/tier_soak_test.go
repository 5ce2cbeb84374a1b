package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/shale-log/shale/broker/brokertest"
	"github.com/shale-log/shale/localseg/recordbatch"
	"github.com/shale-log/shale/objectstore"
	"github.com/shale-log/shale/objectstore/miniotest"
	"github.com/shale-log/shale/tiering"
)

// soakKey and soakValue are record seq of partition p: the value is long
// enough (300 to 700 bytes) that 64 KiB segments seal every hundred or
// so records, and differs with seq so that a misplaced byte shows.
func soakKey(p int32, seq int) []byte { return []byte(fmt.Sprintf("p%d-s%08d", p, seq)) }

func soakValue(p int32, seq int) []byte {
	if seq%997 == 500 {
		// Now and then a record larger than a segment.
		return []byte(fmt.Sprintf("p%d-s%08d-%s", p, seq, bytes.Repeat([]byte{byte('A' + seq%26)}, 90_000)))
	}
	return []byte(fmt.Sprintf("p%d-s%08d-%s", p, seq, strings.Repeat(string(rune('a'+seq%26)), 300+(seq*7919)%400)))
}

func parseSoakKey(k []byte) (p int32, seq int, ok bool) {
	ps, ss, found := strings.Cut(string(k), "-s")
	if !found || !strings.HasPrefix(ps, "p") {
		return 0, 0, false
	}
	pn, err1 := strconv.Atoi(ps[1:])
	sn, err2 := strconv.Atoi(ss)
	return int32(pn), sn, err1 == nil && err2 == nil
}

// soakRecord is one record as a reader saw it.
type soakRecord struct {
	offset, ts int64
	key, value []byte
}

// TestTierSoakKillsAndOutages runs one `shale broker` with a MinIO store
// and a 4-partition topic of 64 KiB segments whose uploaded segments leave
// the local disk at once, while an idempotent acks=all producer writes
// numbered records (one partition gets few; now and then one is larger
// than a segment). Meanwhile, at random: the broker is killed with
// SIGKILL (at any moment, at an upload's fault points through the test
// hook, or while frozen with SIGSTOP) and restarted on its data
// directory; MinIO is killed or frozen and restarted, the broker
// restarting while it is down or frozen too, or a topic created and
// written while it is down (bornInAnOutage). A consumer reads from offset
// 0 over and over throughout. At the end every partition, read by
// franz-go, by kcat and from the bucket alone (tiering.ReadBatches), holds
// every acknowledged record once, in order, byte for byte, at contiguous
// offsets; ListOffsets (earliest, latest, by timestamp) agrees; what the
// live consumer was served is what the log holds; the local disk holds
// the active segments only (every sealed one is in the bucket). Seeds of
// 1 mod 2 compress, of 2 mod 3 add remote retention (retention.bytes), of
// 3 mod 4 roll every 250 ms.
//
// SHALE_SOAK_SECONDS sets the length of the fault phase (default 15;
// the test then takes about 21 s), SHALE_SOAK_SEED the first seed
// (default: the clock's), SHALE_SOAK_ROUNDS the number of rounds (default
// 1), SHALE_SOAK_ONLY one kind of fault, SHALE_SOAK_DISKLOSS=1 adds the
// loss of the log directory, SHALE_SOAK_CLIENTLOG=1 logs the producer
// (franz-go) to stderr.
func TestTierSoakKillsAndOutages(t *testing.T) {
	brokertest.KcatPath(t)
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("SHALE_SOAK_SEED"); v != "" {
		seed, _ = strconv.ParseUint(v, 10, 64)
	}
	rounds := 1
	if v := os.Getenv("SHALE_SOAK_ROUNDS"); v != "" {
		rounds, _ = strconv.Atoi(v)
	}
	dur := 15 * time.Second
	if v := os.Getenv("SHALE_SOAK_SECONDS"); v != "" {
		n, _ := strconv.Atoi(v)
		dur = time.Duration(n) * time.Second
	}
	for i := range rounds {
		s := seed + uint64(i)
		t.Run(fmt.Sprintf("seed=%d", s), func(t *testing.T) { tierSoak(t, s, dur) })
	}
}

type tierSoakState struct {
	t      *testing.T
	srv    *miniotest.Server
	p      *brokerProc
	env    []string
	events []string
	start  time.Time
}

func (s *tierSoakState) logf(format string, args ...any) {
	s.events = append(s.events, fmt.Sprintf("%6.2fs ", time.Since(s.start).Seconds())+fmt.Sprintf(format, args...))
}

func tierSoak(t *testing.T, seed uint64, dur time.Duration) {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	srv := miniotest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), dur+5*time.Minute)
	defer cancel()
	etcdAddr := startTestEtcd(t, ctx)
	const bucket, topic, partitions = "soak", "soak", 4
	storeURL := srv.URL(bucket, "")
	env := append(miniotest.Env(), "SHALE_TEST_ORPHAN_GRACE=1ms")
	p := &brokerProc{t: t, id: 0, dataDir: t.TempDir(), kafkaAddr: freeAddr(t), httpAddr: freeAddr(t), etcd: etcdAddr,
		objectStore: storeURL + "&create_bucket=true", env: env,
		extra: []string{"--retention-check-interval", "200ms"}}
	s := &tierSoakState{t: t, srv: srv, p: p, env: env, start: time.Now()}
	if err := launchBroker(p, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.kill(syscall.SIGKILL) })
	// The bucket exists now: restarts do not ask for it, so that a broker
	// may start while MinIO is down.
	p.objectStore = storeURL
	defer func() {
		keepBrokerLogs(t, []*brokerProc{p})
		if t.Failed() {
			t.Logf("seed %d; events:\n%s", seed, strings.Join(s.events, "\n"))
			t.Logf("broker:\n%s", tail(p.stderr.String(), 8000))
		}
	}()

	adm, err := kgo.NewClient(kgo.SeedBrokers(p.kafkaAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	configs := map[string]*string{"segment.bytes": ptr("65536"), "local.retention.ms": ptr("1"), "file.delete.delay.ms": ptr("1")}
	// Seeds of 2 mod 3 also keep 1 MiB per partition (remote retention
	// deletes from the bucket as the faults go on).
	retention := seed%3 == 2
	if retention {
		configs["retention.bytes"] = ptr("1048576")
	}
	// Seeds of 3 mod 4 also roll segments every 250 ms: many small ones,
	// on the partitions that get few records too.
	if seed%4 == 3 {
		configs["segment.ms"] = ptr("250")
	}
	if _, err := kadm.NewClient(adm).CreateTopic(ctx, partitions, 1, configs, topic); err != nil {
		t.Fatal(err)
	}

	// The producer: idempotent (franz-go's default), acks=all, records
	// numbered per partition.
	var (
		mu     sync.Mutex
		acked  [partitions]map[int]int64 // seq -> offset
		failed [partitions]map[int]error
		// acks counts acknowledgements; ackedAtLoss is its value at the
		// last loss of the log disk.
		acks, ackedAtLoss int
	)
	for i := range acked {
		acked[i], failed[i] = map[int]int64{}, map[int]error{}
	}
	// Odd seeds compress (snappy: the values shrink tenfold), even ones
	// do not (a segment every hundred or so records).
	codec := kgo.NoCompression()
	if seed%2 == 1 {
		codec = kgo.SnappyCompression()
	}
	var clientLog []kgo.Opt
	if os.Getenv("SHALE_SOAK_CLIENTLOG") == "1" {
		clientLog = append(clientLog, kgo.WithLogger(kgo.BasicLogger(os.Stderr, kgo.LogLevelInfo, func() string { return time.Now().Format("15:04:05.000 ") })))
	}
	prod, err := kgo.NewClient(append(clientLog, kgo.SeedBrokers(p.kafkaAddr), kgo.DefaultProduceTopic(topic), kgo.ProducerBatchCompression(codec),
		kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(2*time.Millisecond),
		kgo.MaxBufferedRecords(2000), kgo.RequestTimeoutOverhead(3*time.Second),
		kgo.RetryTimeout(2*time.Minute))...)
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	ackCount := func() int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for i := range acked {
			n += len(acked[i])
		}
		return n
	}
	// ackedInOutage fails the test unless records are acknowledged past
	// before within 15 s, while MinIO is still down (how: "down",
	// "paused"; until: when it is over). Unless nothing was acknowledged
	// since the log disk was lost: then a log may not have read its end
	// from the bucket yet, and it appends nothing until it has.
	ackedInOutage := func(before int, how, until string) {
		mu.Lock()
		unread := acks == ackedAtLoss
		mu.Unlock()
		if unread {
			s.logf("  nothing acknowledged since the log disk was lost: no appends expected before MinIO %s", until)
			return
		}
		for wait := time.Now().Add(15 * time.Second); ackCount() == before && time.Now().Before(wait); {
			time.Sleep(50 * time.Millisecond)
		}
		if n := ackCount() - before; n == 0 {
			t.Errorf("the broker restarted while MinIO was %s acknowledged nothing in 15 s", how)
		} else {
			s.logf("  %d records acknowledged before MinIO %s", n, until)
		}
	}
	stopProducing := make(chan struct{})
	produced := make(chan struct{})
	go func() {
		defer close(produced)
		rng := rand.New(rand.NewPCG(seed, 1))
		var next [partitions]int
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stopProducing:
				return
			case <-tick.C:
			}
			// About 2 records a millisecond at most (in practice fewer).
			for range 2 {
				// Partition 3 gets one record in 50.
				part := int32(rng.IntN(partitions - 1))
				if rng.IntN(50) == 0 {
					part = partitions - 1
				}
				seq := next[part]
				next[part]++
				r := &kgo.Record{Partition: part, Key: soakKey(part, seq), Value: soakValue(part, seq)}
				prod.Produce(ctx, r, func(r *kgo.Record, err error) {
					mu.Lock()
					defer mu.Unlock()
					if err != nil {
						failed[part][seq] = err
					} else {
						acked[part][seq] = r.Offset
						acks++
					}
				})
			}
		}
	}()

	// A consumer reads every partition from offset 0 throughout, as the
	// broker restarts: what it is served must be what the log holds at
	// the end, and it must not skip offsets.
	type seenRec struct {
		key   string
		valid bool
	}
	var (
		liveMu    sync.Mutex
		live      [partitions]map[int64]seenRec
		liveSkips []string
	)
	for i := range live {
		live[i] = map[int64]seenRec{}
	}
	liveCtx, liveCancel := context.WithCancel(ctx)
	liveDone := make(chan struct{})
	go func() {
		defer close(liveDone)
		// Each pass starts from offset 0 with a new client, for 4 s: the
		// early offsets come from the bucket (cold reads) while the
		// broker and MinIO restart.
		for liveCtx.Err() == nil {
			cons, err := kgo.NewClient(kgo.SeedBrokers(p.kafkaAddr), kgo.ConsumeTopics(topic),
				kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxBytes(256<<10), kgo.FetchMaxPartitionBytes(64<<10))
			if err != nil {
				return
			}
			var next [partitions]int64
			passCtx, passCancel := context.WithTimeout(liveCtx, 4*time.Second)
			for passCtx.Err() == nil {
				fs := cons.PollFetches(passCtx)
				liveMu.Lock()
				fs.EachRecord(func(r *kgo.Record) {
					if r.Offset > next[r.Partition] {
						liveSkips = append(liveSkips, fmt.Sprintf("partition %d: served %d after %d", r.Partition, r.Offset, next[r.Partition]-1))
					}
					next[r.Partition] = r.Offset + 1
					pp, seq, ok := parseSoakKey(r.Key)
					live[r.Partition][r.Offset] = seenRec{key: string(r.Key), valid: ok && pp == r.Partition && bytes.Equal(r.Value, soakValue(pp, seq))}
				})
				liveMu.Unlock()
			}
			passCancel()
			cons.Close()
		}
	}()

	// The faults.
	// SHALE_SOAK_ONLY=N narrows the faults to one kind (0 to 15, as in
	// the switch below); SHALE_SOAK_DISKLOSS=1 adds the loss of the log
	// directory (15).
	kinds := 15
	if os.Getenv("SHALE_SOAK_DISKLOSS") == "1" {
		kinds = 16
	}
	lostAcked := 0
	born := 0 // topics created while MinIO was down
	only := -1
	if v := os.Getenv("SHALE_SOAK_ONLY"); v != "" {
		only, _ = strconv.Atoi(v)
	}
	deadline := time.Now().Add(dur)
	for time.Now().Before(deadline) {
		time.Sleep(time.Duration(200+rng.IntN(1800)) * time.Millisecond)
		a := rng.IntN(kinds)
		if only >= 0 {
			a = only
		}
		switch {
		case a < 4:
			s.logf("kill -9 broker")
			p.kill(syscall.SIGKILL)
			time.Sleep(time.Duration(rng.IntN(300)) * time.Millisecond)
			s.restartBroker(nil)
		case a < 5:
			d := time.Duration(500+rng.IntN(3000)) * time.Millisecond
			s.logf("kill MinIO for %v", d)
			srv.Kill()
			time.Sleep(d)
			s.restartMinIO()
		case a < 6:
			born++
			s.bornInAnOutage(ctx, adm, fmt.Sprintf("born-%d", born), configs, storeURL)
		case a < 7:
			d := time.Duration(500+rng.IntN(2500)) * time.Millisecond
			s.logf("pause MinIO for %v", d)
			srv.Pause()
			time.Sleep(d)
			srv.Resume()
		case a < 8:
			// The broker restarts while MinIO is down.
			s.logf("kill MinIO, then kill -9 broker and restart it while MinIO is down")
			srv.Kill()
			time.Sleep(time.Duration(rng.IntN(1000)) * time.Millisecond)
			p.kill(syscall.SIGKILL)
			s.p.env = append([]string(nil), s.env...)
			before := ackCount()
			errc := make(chan error, 1)
			go func() { errc <- launchBroker(p, 20*time.Second) }()
			time.Sleep(time.Duration(1000+rng.IntN(2000)) * time.Millisecond)
			// Its logs reach the bucket's end (each partition's only
			// replica, which uploads only what it fsynced): it takes
			// produce before MinIO is back.
			ackedInOutage(before, "down", "was back")
			s.restartMinIO()
			if err := <-errc; err != nil {
				// It needs no bucket to start (objectstore.Open gives
				// create_bucket a few seconds, then goes on).
				t.Errorf("the broker did not start while MinIO was down: %.300s", err)
				p.kill(syscall.SIGKILL)
				s.restartBroker(nil)
			}
		case a == 13:
			// Requests sent to a frozen MinIO land after the broker that
			// sent them died and another process took over its data.
			// The restarted broker takes produce before MinIO thaws, as
			// when MinIO is down: a store that hangs holds up neither its
			// start nor its appends.
			s.logf("pause MinIO; kill -9 broker and restart it; resume MinIO")
			srv.Pause()
			time.Sleep(time.Duration(rng.IntN(1500)) * time.Millisecond)
			p.kill(syscall.SIGKILL)
			s.p.env = append([]string(nil), s.env...)
			before := ackCount()
			errc := make(chan error, 1)
			go func() { errc <- launchBroker(p, 20*time.Second) }()
			time.Sleep(time.Duration(500+rng.IntN(2000)) * time.Millisecond)
			ackedInOutage(before, "paused", "thawed")
			srv.Resume()
			if err := <-errc; err != nil {
				t.Errorf("the broker did not start while MinIO was paused: %.300s", err)
				p.kill(syscall.SIGKILL)
				s.restartBroker(nil)
			}
		case a == 14:
			// The broker freezes: the producer's requests time out and
			// are retried; sometimes it is killed while frozen.
			d := time.Duration(500+rng.IntN(4000)) * time.Millisecond
			kill := rng.IntN(2) == 0
			s.logf("SIGSTOP broker for %v (then kill -9: %v)", d, kill)
			p.cmd.Process.Signal(syscall.SIGSTOP)
			time.Sleep(d)
			if kill {
				p.kill(syscall.SIGKILL)
				s.restartBroker(nil)
			} else {
				p.cmd.Process.Signal(syscall.SIGCONT)
			}
		case a == 15:
			// The log disk is lost while the broker is down: what the
			// bucket holds stays readable, acknowledged records past
			// the bucket's end are gone (one replica), and new records
			// continue after the bucket's end, never at an offset a
			// reader was already served something else at.
			s.logf("kill -9 broker and lose its log directory")
			td, err := kadm.NewClient(adm).ListTopics(ctx, topic)
			if err != nil {
				t.Fatal(err)
			}
			id := td[topic].ID
			p.kill(syscall.SIGKILL)
			time.Sleep(200 * time.Millisecond) // the last callbacks
			if err := os.RemoveAll(filepath.Join(p.dataDir, "log")); err != nil {
				t.Fatal(err)
			}
			b := soakBucket(ctx, t, storeURL)
			for part := int32(0); part < partitions; part++ {
				m, err := tiering.LoadManifest(ctx, b, tiering.Layout{}, tiering.Partition{Topic: topic, TopicID: id, Index: part})
				if err != nil {
					t.Fatal(err)
				}
				mu.Lock()
				ackedAtLoss = acks
				n := 0
				for seq, off := range acked[part] {
					if off >= m.End() {
						delete(acked[part], seq)
						n++
					}
				}
				mu.Unlock()
				liveMu.Lock()
				for off := range live[part] {
					if off >= m.End() {
						delete(live[part], off)
					}
				}
				liveMu.Unlock()
				lostAcked += n
				s.logf("  partition %d: the bucket ends at %d; %d acknowledged records past it lost with the disk", part, m.End(), n)
			}
			b.Close()
			s.restartBroker(nil)
		case a == 12:
			// A long outage: the broker is killed and restarted twice
			// while MinIO is down, producing goes on to the local disk.
			s.logf("kill MinIO; kill -9 broker twice while it is down")
			srv.Kill()
			before := ackCount()
			for range 2 {
				time.Sleep(time.Duration(500+rng.IntN(2000)) * time.Millisecond)
				p.kill(syscall.SIGKILL)
				s.restartBroker(nil)
				s.logf("  restarted; %d acknowledged so far in the outage", ackCount()-before)
			}
			time.Sleep(time.Duration(2000+rng.IntN(2000)) * time.Millisecond)
			s.logf("  %d records acknowledged while MinIO was down", ackCount()-before)
			s.restartMinIO()
		default:
			point := []string{tiering.FaultUploaded, tiering.FaultCommitted}[rng.IntN(2)]
			n := 1 + rng.IntN(6)
			s.logf("restart broker to kill itself at %s:%d", point, n)
			p.kill(syscall.SIGKILL)
			p.env = append(append([]string(nil), s.env...), "SHALE_TEST_KILL_AT="+point+":"+strconv.Itoa(n))
			// It may reach the point before it is healthy.
			if err := launchBroker(p, 30*time.Second); err != nil && !strings.Contains(err.Error(), "SHALE_TEST_KILL_AT") {
				t.Fatal(err)
			}
			select {
			case <-p.exited:
				s.logf("  killed itself: %v", strings.Contains(p.stderr.String(), "SHALE_TEST_KILL_AT"))
			case <-time.After(8 * time.Second):
				s.logf("  did not reach it in 8s; kill -9")
				p.kill(syscall.SIGKILL)
			}
			s.restartBroker(nil)
		}
	}
	close(stopProducing)
	<-produced
	s.logf("faults over")
	fctx, fcancel := context.WithTimeout(ctx, 2*time.Minute)
	if err := prod.Flush(fctx); err != nil {
		t.Fatalf("flushing the producer: %v", err)
	}
	fcancel()
	// One more record per partition, after the faults, seals nothing but
	// lets the broker's producer state be current; then wait for the
	// uploads to catch up with every sealed segment.
	mu.Lock()
	var nAcked, nFailed int
	for i := range acked {
		nAcked += len(acked[i])
		nFailed += len(failed[i])
	}
	var someErr error
	for i := range failed {
		for _, e := range failed[i] {
			someErr = e
		}
	}
	mu.Unlock()
	s.logf("%d acknowledged, %d failed (%v)", nAcked, nFailed, someErr)

	var status []tierPartition
	waitUntilFor(t, 90*time.Second, "uploads caught up", func() bool {
		status = tierStatus(t, p.httpAddr, topic)
		if len(status) != partitions {
			return false
		}
		for _, st := range status {
			// (A partition may have sealed no segment: compressed, the
			// one that gets few records holds 64 KiB after a while.)
			if st.Loading || st.UploadLagSegments != 0 || st.LocalStartOffset < st.RemoteEndOffset {
				return false
			}
		}
		return true
	}, func() string { return fmt.Sprintf("tier status: %+v", status) })

	liveCancel()
	<-liveDone
	nLive := 0
	for i := range live {
		nLive += len(live[i])
	}
	s.logf("the live consumer read %d offsets", nLive)
	// Remote retention moves the log start past a reader: franz-go then
	// resets to the new start, a skip that is no defect.
	for _, sk := range liveSkips {
		if retention {
			s.logf("live consumer: %s", sk)
		} else {
			t.Errorf("live consumer: %s", sk)
		}
	}

	kadmc := kadm.NewClient(adm)
	if retention {
		// Let remote retention finish with what the uploads left.
		var prev kadm.ListedOffsets
		waitUntilFor(t, 30*time.Second, "the log start offsets settled", func() bool {
			time.Sleep(time.Second)
			cur, err := kadmc.ListStartOffsets(ctx, topic)
			if err != nil {
				return false
			}
			same := prev != nil
			cur.Each(func(o kadm.ListedOffset) {
				if q, ok := prev.Lookup(topic, o.Partition); !ok || q.Offset != o.Offset {
					same = false
				}
			})
			prev = cur
			return same
		})
	}
	starts, err := kadmc.ListStartOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	ends, err := kadmc.ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}

	// Everything read back, three ways.
	bkt := soakBucket(ctx, t, storeURL)
	defer bkt.Close()
	reader, err := tiering.NewReader(tiering.ReaderConfig{Bucket: bkt})
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	tds, err := tiering.ListTopics(ctx, bkt, tiering.Layout{})
	if err != nil || len(tds) != 1+born {
		t.Fatalf("%d topic descriptors in the bucket, want %d: %v", len(tds), 1+born, err)
	}
	i := slices.IndexFunc(tds, func(d *tiering.TopicDescriptor) bool { return d.Name == topic })
	if i < 0 {
		t.Fatalf("no descriptor of topic %s in the bucket", topic)
	}
	topicID, err := tds[i].TopicID()
	if err != nil {
		t.Fatal(err)
	}

	var totalLocal, totalRemote int64
	for part := int32(0); part < partitions; part++ {
		start, _ := starts.Lookup(topic, part)
		end, _ := ends.Lookup(topic, part)
		if start.Err != nil || end.Err != nil || start.Offset != 0 && !retention {
			t.Errorf("partition %d: ListOffsets earliest %d (%v), latest %d (%v)", part, start.Offset, start.Err, end.Offset, end.Err)
		}
		from := start.Offset
		got := consumePartition(t, ctx, p.kafkaAddr, topic, part, from, end.Offset)
		mu.Lock()
		checkSoakPartition(t, part, got, from, end.Offset, acked[part], failed[part])
		mu.Unlock()
		bad := 0
		for off, sr := range live[part] {
			if off < from {
				continue
			}
			if !sr.valid || off-from >= int64(len(got)) || string(got[off-from].key) != sr.key {
				if bad++; bad <= 5 {
					t.Errorf("partition %d: the live consumer was served %q (valid %v) at %d, the log holds another", part, sr.key, sr.valid, off)
				}
			}
		}

		// ListOffsets by timestamp finds the first record at or after
		// it, in the bucket or on the local disk (the producer's
		// timestamps do not go back within a partition).
		for range 15 {
			if len(got) == 0 {
				break
			}
			want := rng.IntN(len(got))
			ts := got[want].ts
			for want > 0 && got[want-1].ts >= ts {
				want--
			}
			lo, err := kadmc.ListOffsetsAfterMilli(ctx, ts, topic)
			if err != nil {
				t.Fatal(err)
			}
			o, _ := lo.Lookup(topic, part)
			if o.Err != nil || o.Offset != got[want].offset {
				t.Errorf("partition %d: ListOffsets at time %d: offset %d (%v), want %d", part, ts, o.Offset, o.Err, got[want].offset)
			}
		}

		// kcat reads the same.
		out := brokertest.Kcat(t, "", "-b", p.kafkaAddr, "-C", "-t", topic, "-p", strconv.Itoa(int(part)), "-o", "beginning", "-e",
			"-f", "%o %k %s\n")
		var lines []string // none for a partition whose records retention deleted
		if out != "" {
			lines = strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		}
		if len(lines) != len(got) {
			t.Errorf("partition %d: kcat read %d records, franz-go %d", part, len(lines), len(got))
		}
		for i := 0; i < min(len(lines), len(got)); i++ {
			want := fmt.Sprintf("%d %s %s", got[i].offset, got[i].key, got[i].value)
			if lines[i] != want {
				t.Errorf("partition %d: kcat line %d %.60q, franz-go %.60q", part, i, lines[i], want)
				break
			}
		}

		// The bucket alone holds the same records up to its manifest's end.
		tp := tiering.Partition{Topic: topic, TopicID: topicID, Index: part}
		m, err := tiering.LoadManifest(ctx, bkt, tiering.Layout{}, tp)
		if err != nil {
			t.Fatal(err)
		}
		for i, seg := range m.Segments {
			if i > 0 && seg.BaseOffset != m.Segments[i-1].NextOffset {
				t.Errorf("partition %d: manifest segments [%d, %d) then [%d, %d)", part, m.Segments[i-1].BaseOffset, m.Segments[i-1].NextOffset, seg.BaseOffset, seg.NextOffset)
			}
		}
		if m.End() > 0 && m.Start() != from || m.End() > end.Offset {
			t.Errorf("partition %d: manifest [%d, %d), log end %d", part, m.Start(), m.End(), end.Offset)
		}
		var remote []soakRecord
		err = tiering.ReadBatches(ctx, reader, tp, m, from, func(b recordbatch.Batch) error {
			return recordbatch.Records(ctx, b, recordbatch.ValidateOptions{}, func(r recordbatch.Record) error {
				remote = append(remote, soakRecord{offset: r.Offset, ts: r.Timestamp, key: bytes.Clone(r.Key), value: bytes.Clone(r.Value)})
				return nil
			})
		})
		if err != nil {
			t.Errorf("partition %d: reading the bucket: %v", part, err)
		}
		if int64(len(remote)) != m.End()-from {
			t.Errorf("partition %d: %d records in the bucket from %d, its manifest ends at %d", part, len(remote), from, m.End())
		}
		for i := 0; i < min(len(remote), len(got)); i++ {
			r, g := remote[i], got[i]
			if r.offset != g.offset || r.ts != g.ts || !bytes.Equal(r.key, g.key) || !bytes.Equal(r.value, g.value) {
				t.Errorf("partition %d: bucket record %d at %d %q, broker's at %d %q", part, i, r.offset, r.key, g.offset, g.key)
				break
			}
		}

		// The local log drops what the bucket holds (segment.ms may have
		// sealed and uploaded more since the status above).
		var st tierPartition
		waitUntilFor(t, 15*time.Second, fmt.Sprintf("partition %d's local log to start at or past the bucket's end %d", part, m.End()), func() bool {
			for _, x := range tierStatus(t, p.httpAddr, topic) {
				if x.Partition == part {
					st = x
				}
			}
			return st.LocalStartOffset >= m.End()
		}, func() string { return fmt.Sprintf("status %+v", st) })
		s.logf("partition %d: local [%d, %d) %d bytes, remote [%d, %d) %d bytes", part, st.LocalStartOffset, st.LogEndOffset, st.LocalBytes,
			st.RemoteStartOffset, st.RemoteEndOffset, st.RemoteBytes)
		totalLocal += st.LocalBytes
		totalRemote += st.RemoteBytes
	}
	// Every sealed segment is in the bucket and off the local disk
	// (checked above): what is left is the active segments, which the
	// partitions' local bytes count, and those of the born topics. An
	// active segment may hold far more than segment.bytes: a producer's
	// backlog after a restart comes in batches of up to 1 MiB, and a
	// batch is never split. Anything beyond is a file the broker lost
	// track of.
	onDisk := sizeOfLogs(filepath.Join(p.dataDir, "log"))
	if slack := int64(born) * (1 << 20); onDisk > totalLocal+slack {
		t.Errorf("%d bytes of segments on the local disk, the partitions count %d (and %d topics born in an outage)", onDisk, totalLocal, born)
	}
	s.logf("local %d bytes (status %d), remote %d bytes", onDisk, totalLocal, totalRemote)
	requireNoAppendsOverTheBucket(t, []*brokerProc{p})
	t.Logf("seed %d: %d records acknowledged, %d failed; events:\n%s", seed, nAcked, nFailed, strings.Join(s.events, "\n"))
}

// restartBroker starts the broker (stopped) with extra environment and
// waits until it is healthy.
func (s *tierSoakState) restartBroker(extraEnv []string) {
	s.t.Helper()
	s.p.env = append(append([]string(nil), s.env...), extraEnv...)
	if err := launchBroker(s.p, 30*time.Second); err != nil {
		s.t.Fatal(err)
	}
}

// restartMinIO restarts the killed MinIO.
// bornInAnOutage kills MinIO, creates topic (one partition, configs) and
// produces bornRecords records to it with acks=all, which must all be
// acknowledged while MinIO is down (none of its records is in the bucket,
// so its leader needs nothing from it). Once MinIO is back, the sealed
// segments reach the bucket, and every record reads from offset 0, the
// first ones from the bucket.
func (s *tierSoakState) bornInAnOutage(ctx context.Context, adm *kgo.Client, topic string, configs map[string]*string, storeURL string) {
	t := s.t
	t.Helper()
	const bornRecords = 300
	s.logf("kill MinIO, create topic %s and produce %d records to it", topic, bornRecords)
	s.srv.Kill()
	if _, err := kadm.NewClient(adm).CreateTopic(ctx, 1, 1, configs, topic); err != nil {
		t.Fatal(err)
	}
	prod, err := kgo.NewClient(kgo.SeedBrokers(s.p.kafkaAddr), kgo.DefaultProduceTopic(topic), kgo.RecordDeliveryTimeout(20*time.Second),
		kgo.ProducerBatchCompression(kgo.NoCompression()))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	start := time.Now()
	// Uncompressed batches of 50 records (about 25 KB): segments seal as
	// they come.
	for i := 0; i < bornRecords; i += 50 {
		var recs []*kgo.Record
		for j := i; j < i+50; j++ {
			recs = append(recs, &kgo.Record{Key: soakKey(0, j), Value: soakValue(0, j)})
		}
		if err := prod.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatalf("producing to %s, created while MinIO was down: %v", topic, err)
		}
	}
	s.logf("  acknowledged while MinIO was down, %v after the creation", time.Since(start).Round(time.Millisecond))
	s.restartMinIO()

	td, err := kadm.NewClient(adm).ListTopics(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	b := soakBucket(ctx, t, storeURL)
	defer b.Close()
	part := tiering.Partition{Topic: topic, TopicID: td[topic].ID, Index: 0}
	for wait := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		m, err := tiering.LoadManifest(ctx, b, tiering.Layout{}, part)
		if err == nil && m.End() > 0 {
			s.logf("  its first %d records uploaded", m.End())
			break
		}
		if time.Now().After(wait) {
			t.Fatalf("%s, created while MinIO was down, uploaded nothing in 60 s after MinIO was back: %v", topic, err)
		}
	}
	cons, err := kgo.NewClient(kgo.SeedBrokers(s.p.kafkaAddr), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for next := 0; next < bornRecords; {
		fs := cons.PollFetches(rctx)
		if err := rctx.Err(); err != nil {
			t.Fatalf("read %d of %s's %d records: %v", next, topic, bornRecords, err)
		}
		for _, r := range fs.Records() {
			if r.Offset != int64(next) || !bytes.Equal(r.Value, soakValue(0, next)) {
				t.Fatalf("%s: record at offset %d, want %d", topic, r.Offset, next)
			}
			next++
		}
	}
}

// soakBucket opens the soak's bucket, with MinIO's credentials, as the
// test's own client.
func soakBucket(ctx context.Context, t *testing.T, storeURL string) objectstore.Bucket {
	t.Helper()
	for k, v := range map[string]string{"AWS_ACCESS_KEY_ID": miniotest.AccessKey, "AWS_SECRET_ACCESS_KEY": miniotest.SecretKey, "AWS_REGION": "us-east-1"} {
		t.Setenv(k, v)
	}
	b, err := objectstore.Open(ctx, storeURL, objectstore.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (s *tierSoakState) restartMinIO() {
	s.t.Helper()
	if err := s.srv.Restart(); err != nil {
		s.t.Fatalf("restarting MinIO: %v", err)
	}
}

// launchBroker starts (or restarts, on the same directory and addresses)
// p and waits up to wait for it to be healthy.
func launchBroker(p *brokerProc, wait time.Duration) error {
	if p.stderr != nil {
		p.earlier.WriteString(p.stderr.String())
		fmt.Fprintf(&p.earlier, "--- broker %d started again ---\n", p.id)
	}
	p.stderr, p.exited = &lockedBuffer{}, make(chan struct{})
	p.cmd = exec.Command(shaleBin, "broker", "--id", strconv.Itoa(p.id), "--data-dir", p.dataDir,
		"--kafka-addr", p.kafkaAddr, "--http-addr", p.httpAddr, "--etcd", p.etcd, "--cluster", "kill",
		"--object-store", p.objectStore, "--session-ttl", "2s", "--replica-lag-time-max", "5s",
		"--group-initial-rebalance-delay", "0s")
	if level := os.Getenv("SHALE_TEST_LOG_LEVEL"); level != "" {
		p.cmd.Args = append(p.cmd.Args, "--log-level", level)
	}
	p.cmd.Args = append(p.cmd.Args, p.extra...)
	p.cmd.Stderr = p.stderr
	p.cmd.Env = append(os.Environ(), p.env...)
	if err := p.cmd.Start(); err != nil {
		return err
	}
	exited, cmd := p.exited, p.cmd
	go func() {
		cmd.Wait()
		close(exited)
	}()
	deadline := time.Now().Add(wait)
	for {
		select {
		case <-exited:
			return fmt.Errorf("broker exited:\n%s", tail(p.stderr.String(), 4000))
		default:
		}
		if resp, err := http.Get("http://" + p.httpAddr + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("broker not healthy after %v", wait)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// tierStatus is the broker's /v1/tier answer for topic.
func tierStatus(t *testing.T, httpAddr, topic string) []tierPartition {
	resp, err := http.Get("http://" + httpAddr + "/v1/tier?topic=" + topic)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var doc partitionsDocument[tierPartition]
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&doc) != nil {
		return nil
	}
	return doc.Partitions
}

func waitUntilFor(t *testing.T, d time.Duration, what string, cond func() bool, show ...func() string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			for _, f := range show {
				t.Log(f())
			}
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// sizeOfLogs sums the sizes of the .log files under dir.
func sizeOfLogs(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(d.Name(), ".log") {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// consumePartition reads partition part of topic from offset 0 to end.
func consumePartition(t *testing.T, ctx context.Context, addr, topic string, part int32, from, end int64) []soakRecord {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {part: kgo.NewOffset().At(from)}}))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	var out []soakRecord
	next := from
	for next < end {
		fs := cl.PollFetches(cctx)
		if cctx.Err() != nil {
			t.Fatalf("partition %d: read up to %d of %d", part, next, end)
		}
		fs.EachError(func(_ string, _ int32, err error) { t.Logf("partition %d: fetch error: %v", part, err) })
		fs.EachRecord(func(r *kgo.Record) {
			out = append(out, soakRecord{offset: r.Offset, ts: r.Timestamp.UnixMilli(), key: r.Key, value: r.Value})
			next = r.Offset + 1
		})
	}
	return out
}

// checkSoakPartition checks what was read of partition part against what
// the producer was told.
func checkSoakPartition(t *testing.T, part int32, got []soakRecord, from, end int64, acked map[int]int64, failed map[int]error) {
	t.Helper()
	seen := map[int]int64{}
	last := -1
	errs := 0
	fail := func(format string, args ...any) {
		errs++
		if errs <= 20 {
			t.Errorf("partition %d: "+format, append([]any{part}, args...)...)
		}
	}
	for i, r := range got {
		if r.offset != from+int64(i) {
			fail("record %d at offset %d (a gap or a repeat)", i, r.offset)
		}
		p, seq, ok := parseSoakKey(r.key)
		if !ok || p != part {
			fail("offset %d: key %q", r.offset, r.key)
			continue
		}
		if !bytes.Equal(r.value, soakValue(p, seq)) {
			fail("offset %d: seq %d's value differs: %.60q", r.offset, seq, r.value)
		}
		if prev, dup := seen[seq]; dup {
			fail("seq %d at offsets %d and %d", seq, prev, r.offset)
		}
		seen[seq] = r.offset
		if seq <= last {
			fail("offset %d: seq %d after seq %d", r.offset, seq, last)
		}
		last = seq
		if off, ok := acked[seq]; ok && off != r.offset {
			fail("seq %d acknowledged at offset %d, read at %d", seq, off, r.offset)
		}
	}
	if int64(len(got)) != end-from {
		fail("%d records read from %d, log end offset %d", len(got), from, end)
	}
	lost := 0
	for seq, off := range acked {
		if _, ok := seen[seq]; !ok && off >= from {
			lost++
			if lost <= 10 {
				fail("acknowledged seq %d (offset %d) is missing", seq, off)
			}
		}
	}
	unacked := 0
	for seq := range failed {
		if _, ok := seen[seq]; ok {
			unacked++
		}
	}
	if lost > 0 || unacked > 0 {
		t.Logf("partition %d: %d acknowledged records lost; %d of %d failed records present", part, lost, unacked, len(failed))
	}
}
