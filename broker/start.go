package broker

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/shale-log/shale/broker/controller"
	"github.com/shale-log/shale/localseg"
	"github.com/shale-log/shale/metadata"
)

// Options are what Start needs besides the broker's Config.
type Options struct {
	Config Config
	// Etcd is the metadata store's client; the broker does not close it.
	Etcd *clientv3.Client
	// EtcdPrefix is the key prefix of this cluster (default "/shale/").
	EtcdPrefix string
	Logger     *slog.Logger
	// Registry receives the broker's metrics; nil means none are kept.
	Registry prometheus.Registerer
	// FS is the filesystem the partition logs live on; nil means the
	// operating system's (tests pass fault-injecting and crash-simulating
	// ones).
	FS localseg.FS
	// BrokerSessionTTL is how long the broker's registration outlives it
	// when it dies without deregistering (default 10s).
	BrokerSessionTTL time.Duration
}

// Start joins the cluster described in etcd: it makes sure the cluster has
// an id, loads the metadata, registers this broker, opens the logs of its
// replicas and starts following metadata changes. Serve then accepts
// clients. Close undoes all of it.
//
// The data directory is locked (DataDir/shale.lock) before anything in it
// is opened, and stays locked until Close has closed every log: a second
// broker on it is refused at once.
func Start(ctx context.Context, opts Options) (*Broker, error) {
	if opts.Config.DataDir == "" {
		return start(ctx, opts) // refused by the config's validation
	}
	unlock, err := LockDataDir(opts.Config.DataDir)
	if err != nil {
		return nil, fmt.Errorf("broker: %w", err)
	}
	b, err := start(ctx, opts)
	if err != nil {
		unlock()
		return nil, err
	}
	b.onClose = append(b.onClose, unlock)
	return b, nil
}

func start(ctx context.Context, opts Options) (*Broker, error) {
	if opts.Etcd == nil {
		return nil, fmt.Errorf("broker: an etcd client is required")
	}
	if opts.EtcdPrefix == "" {
		opts.EtcdPrefix = metadata.DefaultPrefix
	}
	if opts.BrokerSessionTTL == 0 {
		opts.BrokerSessionTTL = 10 * time.Second
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	ms, err := newEtcdMeta(ctx, opts.Etcd, opts.EtcdPrefix, log)
	if err != nil {
		return nil, err
	}
	b, err := newBroker(opts.Config, ms, log, opts.Registry)
	if err != nil {
		ms.close()
		return nil, err
	}
	b.replicas.fs = opts.FS
	if opts.FS != nil {
		b.replicas.removal.fs = opts.FS
	}
	clean, err := takeCleanShutdownMarker(b.cfg.DataDir)
	if err != nil {
		ms.close()
		return nil, err
	}
	rebooted, bootID := machineRebooted(b.cfg.DataDir)
	if b.cfg.Tiering.Bucket != nil {
		if b.tier, err = newTierService(b, b.cfg.Tiering, opts.Registry); err != nil {
			ms.close()
			return nil, err
		}
		onLeader := b.replicas.onLeader
		b.replicas.onLeader = func(p *partition, leader bool) {
			if onLeader != nil {
				onLeader(p, leader)
			}
			if p.tier != nil {
				p.tier.setLeader(p, leader)
			}
		}
	}
	props, err := loadOrCreateMetaProperties(b.cfg.DataDir, b.cfg.NodeID, ms.snapshot().clusterID)
	if err != nil {
		ms.close()
		return nil, err
	}
	if b.secret, err = ms.store.EnsureClusterSecret(ctx); err != nil {
		ms.close()
		return nil, err
	}
	b.producerIDs.setSecret(b.secret)
	if b.cfg.SASLBootstrapUser != "" {
		if err := ensureBootstrapUser(ctx, ms.store, b.cfg.SASLBootstrapUser, b.cfg.SASLBootstrapPassword); err != nil {
			ms.close()
			return nil, fmt.Errorf("broker: creating the bootstrap SASL user: %w", err)
		}
	}
	self := metadata.Broker{
		ID:              b.cfg.NodeID,
		Host:            b.cfg.AdvertisedHost,
		Port:            b.cfg.AdvertisedPort,
		Rack:            b.cfg.Rack,
		HTTPAddr:        b.cfg.AdvertisedHTTPAddr,
		DirectoryID:     props.directoryID,
		UncleanShutdown: !clean,
	}
	crashed := !clean && rebooted
	if err := b.leaveLostISRs(ctx, ms, crashed); err != nil {
		ms.close()
		return nil, fmt.Errorf("broker: before registering: %w", err)
	}
	recordBootID(b.cfg.DataDir, bootID, b.log)
	reg, err := registerWithRetry(ctx, ms.store, self, opts.BrokerSessionTTL, b.log)
	if err != nil {
		ms.close()
		return nil, fmt.Errorf("broker: registering node %d: %w", b.cfg.NodeID, err)
	}
	ms.setRegistration(reg)
	rev, err := ms.store.Revision(ctx)
	if err == nil {
		err = ms.waitRevision(ctx, rev)
	}
	if err != nil {
		ms.close()
		return nil, err
	}
	b.start()
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		metadata.WatchConnection(b.ctx, opts.Etcd, log)
	}()
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		b.keepRegistered(ms, self, opts.BrokerSessionTTL)
	}()
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		b.watchSupersession(ms.provenUntil, opts.BrokerSessionTTL)
	}()
	ctl := controller.Start(ms.store, ms.cache, controller.Config{BrokerID: b.cfg.NodeID, SessionTTL: opts.BrokerSessionTTL,
		LeaderImbalanceCheckInterval: b.cfg.LeaderImbalanceCheckInterval, DeletedTopicRetention: b.cfg.DeletedTopicRetention, Logger: log,
		TopicDefaults: b.cfg.TopicDefaults, AskReplicaLogs: b.replicaLogEnds, UncleanRecoveryWait: b.cfg.UncleanRecoveryWait, OnUncleanElection: b.metrics.uncleanElections.WithLabelValues("controller").Inc,
		Answers: func(ctx context.Context, bv metadata.Broker) bool {
			return answersKafka(ctx, net.JoinHostPort(bv.Host, strconv.Itoa(int(bv.Port))), time.Second)
		}})
	// Start returns once the cluster has a controller (at once when one
	// runs; a new single-broker cluster elects this one in milliseconds),
	// so that partitions whose leader is gone are already being moved.
	for deadline := time.Now().Add(opts.BrokerSessionTTL); ms.cache.Snapshot().Controller < 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	b.onClose = append(b.onClose, ctl.Close, ms.close, func() { writeCleanShutdownMarker(b.cfg.DataDir, b.log) })
	return b, nil
}

// The clean-shutdown marker is written when the broker has closed every
// log and removed when it starts: a start that finds no marker in a
// directory that already holds a broker's data follows a crash, and the
// broker registers with UncleanShutdown so that leader election prefers
// replicas whose unflushed tail cannot have been lost (KIP-966).
const cleanShutdownFile = "clean-shutdown"

// takeCleanShutdownMarker reports whether the previous run on dir shut down
// cleanly (or there was none), and removes the marker, durably: a removal
// that a machine crash undid would pass that crash off as a clean
// shutdown, and the logs' lost tails as whole.
func takeCleanShutdownMarker(dir string) (bool, error) {
	if _, err := os.Stat(filepath.Join(dir, metaPropertiesFile)); errors.Is(err, fs.ErrNotExist) {
		return true, nil
	}
	if err := os.Remove(filepath.Join(dir, cleanShutdownFile)); err != nil {
		return false, nil
	}
	d, err := os.Open(dir)
	if err == nil {
		err = d.Sync()
		d.Close()
	}
	if err != nil {
		return false, fmt.Errorf("broker: removing the clean-shutdown marker durably: %w", err)
	}
	return true, nil
}

func writeCleanShutdownMarker(dir string, log *slog.Logger) {
	if err := writeFileAtomic(filepath.Join(dir, cleanShutdownFile), nil); err != nil {
		log.Error("writing the clean-shutdown marker", "err", err)
	}
}

// leaveLostISRs takes this broker, before it registers, out of the ISR of
// every partition that counts on a log it no longer has whole (lostAtOpen:
// the partition's directory is gone, or marked lost, and the ISR names
// this broker beside others). Unregistered, the broker is dead to the
// controller, which cannot elect it meanwhile on the strength of a
// membership its lost log earned: when the others of such an ISR are
// down, the partition then waits for them, offline, instead of being led
// from a log that lacks what they acknowledged, which they would cut
// theirs to on their return. A failed write is logged: the partition's
// open does the same (replicaManager.applyLostLocked), though a
// controller may act first.
//
// crashed says that the machine went down since the broker's last start
// (an unclean shutdown, and another boot): the page cache, and with it
// the unflushed tail of every log, may be gone, so every log the ISR
// counts on is marked lost first. Process crashes (kill -9, OOM) keep the
// page cache and lose nothing. Such a log (not an empty one) leaves the
// ISR only when another member that kept its log is up; when none is,
// the others may have crashed too and this log may be the longest left,
// so the broker stays in the ISR as recovering (metadata.Partition.
// Recovering), leading nothing, and the controller elects the longest
// once every member has reported (controller.planRecovering).
//
// A mark that cannot be written (the disk's, or etcd's after retries for
// markRetryFor) fails the start, and the boot is not recorded: the next
// start marks again. Registered without its marks, the broker answered
// as a member that kept its log, and the others, back from the same
// crash, left the ISR to it (keepersUp) until its partitions opened.
func (b *Broker) leaveLostISRs(ctx context.Context, ms *etcdMeta, crashed bool) error {
	self := b.cfg.NodeID
	view := ms.snapshot()
	up := map[int32]bool{}
	for _, tv := range view.topicList() {
		minISR := controller.MinInsyncReplicas(tv.configs, b.replicas.brokerConfig)
		for _, pv := range tv.partitions {
			if !countedOn(pv, self) {
				continue
			}
			dir := partitionDir(b.replicas.dir, tv.name, pv.index)
			_, err := readPartitionMetadata(dir)
			created := errors.Is(err, fs.ErrNotExist)
			if crashed && !created {
				if err := markLost(dir, true); err != nil {
					return fmt.Errorf("marking the log of %s-%d, which may have lost its unflushed tail in a machine crash: %w", tv.name, pv.index, err)
				}
			}
			// A log just marked is lost without looking at the mark.
			if !(crashed && !created) && !lostAtOpen(dir, created, pv, self, math.MaxInt64) {
				continue
			}
			var keepers []int32
			if !created {
				keepers = keepersUp(ctx, view, pv, self, up)
			}
			if !created && len(keepers) == 0 {
				// No other member that kept its log is up: this log
				// may be the longest left. Stay, recovering, for the
				// controller to compare (its end is reported once it
				// has opened).
				err := b.retryMark(ctx, func(wctx context.Context) error {
					return ms.markRecovering(wctx, tv.name, pv.index, self, -1, minISR)
				})
				if err != nil {
					return fmt.Errorf("recording %s-%d as recovering from a machine crash: %w", tv.name, pv.index, err)
				}
				b.log.Warn("this broker is back from a machine crash and no other in-sync replica that kept its log is up; it stays in the ISR, recovering, and leads nothing until the controller has compared the logs",
					"topic", tv.name, "partition", pv.index, "isr", pv.isr)
				continue
			}
			var exit isrExit
			err = b.retryMark(ctx, func(wctx context.Context) (err error) {
				exit, err = ms.leaveISR(wctx, tv.name, pv.index, self, keepers, minISR)
				return err
			})
			if err != nil {
				return fmt.Errorf("leaving the ISR of %s-%d, whose log on this broker lacks what the ISR counted on: %w", tv.name, pv.index, err)
			}
			switch exit {
			case isrRecovering:
				b.log.Warn("this broker is back from a machine crash and the other in-sync replicas that answered are recovering from one too; it stays in the ISR, recovering, and leads nothing until the controller has compared the logs",
					"topic", tv.name, "partition", pv.index, "isr", pv.isr)
				continue
			case isrUnchanged:
				// Its view was behind the record (the others left, or
				// min.insync.replicas came down): the partition counts on
				// this log alone, or not at all. The log's open decides
				// (replicaManager.applyLostLocked).
				continue
			}
			b.log.Warn("this broker's log of the partition may lack what the ISR counted on (its disk lost, or its unflushed tail in a machine crash); it left the ISR before registering",
				"topic", tv.name, "partition", pv.index, "isr", pv.isr, "machine_crash", crashed && !created)
		}
	}
	return nil
}

// markRetryFor is how long leaveLostISRs retries a mark etcd refuses
// before the start fails.
var markRetryFor = 30 * time.Second

// retryMark runs write, each try within 10 s, until it succeeds, the
// topic is gone (nothing to mark), or markRetryFor has passed.
func (b *Broker) retryMark(ctx context.Context, write func(context.Context) error) error {
	deadline := time.Now().Add(markRetryFor)
	backoff := 100 * time.Millisecond
	for {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := write(wctx)
		cancel()
		if err == nil || errors.Is(err, errUnknownTopic) {
			return nil
		}
		if time.Now().Add(backoff).After(deadline) {
			return err
		}
		b.log.Warn("writing a mark before registering; retrying", "in", backoff, "err", err)
		if !sleepCtx(ctx, backoff) {
			return err
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// keepersUp returns the other members of pv's ISR, and its eligible
// leader replicas, that kept their logs (not recovering from a machine
// crash) as far as view knows, and are up: leaving the ISR to one of them
// loses nothing, once leaveISR has found in etcd that it did keep its
// log. Up is registered and answering Kafka requests. A registration outlives its broker by up to a lease, and when
// every machine restarted faster than that, the others' old registrations
// would pass for members that kept their logs, so each is asked for its
// API versions (up, taken for down, only makes this broker wait as
// recovering, and the controller then elects that member all the same).
// A broker serves requests only once it has started, so one that answers
// has written its own marks: etcd says by then whether it kept its log
// (view, older, may not), and leaveISR reads that there. A connection
// alone says nothing of the sort: a process listens on its address from
// its first step, before its marks, and brokers whose machines booted
// together each took the others for members that kept their logs, and
// all left the ISR to the shortest log. up caches the checks.
func keepersUp(ctx context.Context, view *metaView, pv partitionView, self int32, up map[int32]bool) (keepers []int32) {
	for _, id := range pv.countedMembers() {
		if _, recovering := pv.recovering.End(id); id == self || recovering {
			continue
		}
		answers, checked := up[id]
		if !checked {
			if bv, ok := view.broker(id); ok {
				addr, _ := view.brokerAddr(bv.id)
				answers = answersKafka(ctx, addr, time.Second)
			}
			up[id] = answers
		}
		if answers {
			keepers = append(keepers, id)
		}
	}
	return keepers
}

// bootIDFile, in the data directory, holds the boot id of the machine the
// broker last started on, so that a start after an unclean shutdown tells
// a machine crash (the page cache lost) from a process crash.
const bootIDFile = "boot-id"

// bootIDPath is where Linux gives the running kernel's boot id, a random
// UUID drawn at every boot.
const bootIDPath = "/proc/sys/kernel/random/boot_id"

// answersKafka reports whether a Kafka broker at addr answers an
// ApiVersions request within timeout.
func answersKafka(ctx context.Context, addr string, timeout time.Duration) bool {
	conn, err := (&net.Dialer{Timeout: timeout}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return false
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(timeout))
	const correlationID = 0x5ea1
	// ApiVersions v0: size, api key 18, version 0, correlation id, a null
	// client id.
	req := binary.BigEndian.AppendUint32(nil, 10)
	req = binary.BigEndian.AppendUint16(req, 18)
	req = binary.BigEndian.AppendUint16(req, 0)
	req = binary.BigEndian.AppendUint32(req, correlationID)
	req = binary.BigEndian.AppendUint16(req, 0xffff)
	if _, err := conn.Write(req); err != nil {
		return false
	}
	var head [8]byte
	if _, err := io.ReadFull(conn, head[:]); err != nil {
		return false
	}
	return binary.BigEndian.Uint32(head[4:]) == correlationID
}

// machineRebooted reports whether the machine booted again since the broker
// last recorded its boot in dir, and returns the current boot id. When
// either id cannot be read (another system, or a directory from a version
// that did not record it) it says yes: the caller then treats an unclean
// shutdown as a machine crash, giving up availability rather than records.
func machineRebooted(dir string) (rebooted bool, current string) {
	data, err := os.ReadFile(bootIDPath)
	if err != nil {
		return true, ""
	}
	current = strings.TrimSpace(string(data))
	recorded, err := os.ReadFile(filepath.Join(dir, bootIDFile))
	if err != nil || current == "" {
		return true, current
	}
	return strings.TrimSpace(string(recorded)) != current, current
}

// recordBootID records the current boot id (machineRebooted) in dir.
func recordBootID(dir, current string, log *slog.Logger) {
	if current == "" {
		return
	}
	if err := writeFileAtomic(filepath.Join(dir, bootIDFile), []byte(current+"\n")); err != nil {
		log.Error("recording the machine's boot id", "err", err)
	}
}

// registerWithRetry registers the broker, waiting out a registration of
// its id from another data directory until its lease expires. A broker
// restarted after kill -9 takes over its own registration at once (the
// same directory id); one whose log directory was lost, meta.properties
// with it, has a new directory id and cannot tell its previous run's
// registration from a live broker's started with the same id, so it waits
// up to the session TTL, as a Kafka broker with a new incarnation id waits
// out broker.session.timeout.ms. The wait is logged: the broker serves
// nothing meanwhile.
func registerWithRetry(ctx context.Context, store *metadata.Store, self metadata.Broker, ttl time.Duration, log *slog.Logger) (*metadata.Registration, error) {
	start := time.Now()
	deadline := start.Add(ttl + 5*time.Second)
	waiting := false
	for {
		reg, err := store.RegisterBroker(ctx, self, ttl)
		if err == nil && waiting {
			log.Info("registered once the other registration of this node id expired", "id", self.ID, "waited", time.Since(start).Round(time.Millisecond))
		}
		if err == nil || !errors.Is(err, metadata.ErrBrokerIDInUse) || time.Now().After(deadline) {
			return reg, err
		}
		if !waiting {
			waiting = true
			log.Warn("this node id is registered from another data directory (this broker's previous run, if its log directory was lost; else another broker started with the same id): waiting for that registration's lease to expire before registering",
				"id", self.ID, "directory_id", self.DirectoryID, "up_to", deadline.Sub(start))
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// keepRegistered re-registers the broker when its lease is lost (etcd
// unreachable for longer than the TTL), until the broker closes. It
// learns that from etcd's answer to a renewal, or from the metadata it
// watches: its key deleted after its registration wrote it. The second
// covers a lease that etcd expired because no renewal reached it in time
// after a restart, when etcd went away again before the next renewal was
// answered: the renewals may stay unanswered for a while after etcd is
// back (the connection waiting out its reconnect backoff), while the
// watch catching up already shows the key gone, and meanwhile the other
// brokers no longer list this one.
func (b *Broker) keepRegistered(ms *etcdMeta, self metadata.Broker, ttl time.Duration) {
	changed := ms.subscribe(b.ctx)
	for {
		reg := ms.currentRegistration()
		if reg == nil {
			return // closing
		}
		select {
		case <-b.ctx.Done():
			return
		case <-reg.Done():
			b.log.Warn("broker registration lost; registering again")
		case <-changed:
			if !ms.registrationDeleted(reg, self.ID) {
				continue
			}
			b.log.Warn("broker registration deleted from etcd (its lease expired unrenewed); registering again", "lease", fmt.Sprintf("%x", reg.Lease()))
			// Revokes what may remain of the lease; etcd answers at
			// once (it was just seen).
			reg.Close()
		}
		for b.ctx.Err() == nil {
			ctx, cancel := context.WithTimeout(b.ctx, ttl+5*time.Second)
			reg, err := registerWithRetry(ctx, ms.store, self, ttl, b.log)
			cancel()
			if err == nil {
				ms.setRegistration(reg)
				break
			}
			b.log.Error("registering broker", "err", err)
			select {
			case <-b.ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
}

// livenessWait bounds how long Live waits for the broker's locks.
const livenessWait = 5 * time.Second

// Live reports whether the broker process is alive and not deadlocked: it
// is not shutting down, and the locks every connection and every metadata
// change take (the connection table, the applied revision) are free
// within a few seconds. It says nothing of storage or of the metadata
// store, since restarting the process mends neither (a full disk stays
// full, and a restart loses the page cache): those are Ready's. At most
// one probe of the locks is in flight, so a deadlock leaks one goroutine,
// not one per check.
func (b *Broker) Live(ctx context.Context) error {
	if b.ctx.Err() != nil {
		return fmt.Errorf("broker: shutting down")
	}
	b.liveMu.Lock()
	probe := b.liveProbe
	if probe == nil {
		probe = &lockProbe{done: make(chan struct{}), since: time.Now()}
		b.liveProbe = probe
		go func() {
			for _, l := range []struct {
				name string
				mu   *sync.Mutex
			}{{"connections", &b.connsMu}, {"applied metadata", &b.appliedMu}} {
				probe.waiting.Store(&l.name)
				l.mu.Lock()
				l.mu.Unlock()
			}
			b.liveMu.Lock()
			b.liveProbe = nil
			b.liveMu.Unlock()
			close(probe.done)
		}()
	}
	b.liveMu.Unlock()
	t := time.NewTimer(livenessWait)
	defer t.Stop()
	select {
	case <-probe.done:
		return nil
	case <-ctx.Done():
	case <-t.C:
	}
	if held := time.Since(probe.since); held >= livenessWait {
		return fmt.Errorf("broker: the %s lock has not been free for %s (deadlocked?)", *probe.waiting.Load(), held.Round(time.Second))
	}
	return ctx.Err()
}

// lockProbe is one check of Live's locks in flight.
type lockProbe struct {
	done    chan struct{}
	since   time.Time
	waiting atomic.Pointer[string] // the lock it waits for
}

// storageProblems describes what keeps the broker from storing data:
// partitions offline (a failed write or fsync, a full disk) and
// filesystems below their reserve; nil when there is none.
func (b *Broker) storageProblems() []string {
	var problems []string
	if n := b.replicas.offline.count(); n > 0 {
		problems = append(problems, fmt.Sprintf("%d partitions offline (retried with backoff): %s", n, strings.Join(b.replicas.offline.describe(3), "; ")))
	}
	for _, p := range b.replicas.all() {
		// Offline since the last retry pass looked.
		if err := p.log.Offline(); err != nil && b.replicas.offline.errOf(partitionKey{p.topic, p.index}) == nil {
			problems = append(problems, fmt.Sprintf("partition %s-%d offline: %v", p.topic, p.index, err))
		}
	}
	for _, g := range []*spaceGuard{b.logSpace, b.metaSpace} {
		if p := g.problem(); p != "" {
			problems = append(problems, p)
		}
	}
	return problems
}

// Ready reports whether the broker serves clients: it accepts connections
// on a listener, has applied the metadata, is registered in it, and can
// store data (no partition offline, no filesystem below its reserve).
func (b *Broker) Ready() error {
	if b.ctx.Err() != nil {
		return fmt.Errorf("broker: shutting down")
	}
	b.connsMu.Lock()
	listening := len(b.listeners) > 0 && !b.closing
	b.connsMu.Unlock()
	if !listening {
		return fmt.Errorf("broker: not accepting connections yet")
	}
	b.appliedMu.Lock()
	applied := b.applied
	b.appliedMu.Unlock()
	if applied == 0 {
		return fmt.Errorf("broker: metadata not loaded yet")
	}
	if _, ok := b.meta.snapshot().broker(b.cfg.NodeID); !ok {
		return fmt.Errorf("broker: node %d is not registered in the metadata store", b.cfg.NodeID)
	}
	if problems := b.storageProblems(); len(problems) > 0 {
		return fmt.Errorf("broker: %s", strings.Join(problems, "; "))
	}
	return nil
}
