package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/shale-log/shale/broker"
)

// clusterFlags are the flags of `shale broker`; each is also read from
// SHALE_<NAME> (for example SHALE_ETCD).
type clusterFlags struct {
	id              int32
	dataDir         string
	kafkaAddr       string
	httpAddr        string
	advertised      string
	advHTTP         string
	etcd            etcdFlags
	cluster         string
	rack            string
	logLevel        string
	sessionTTL      time.Duration
	replicaLagMax   time.Duration
	throttledRate   int64
	followerRate    int64
	replicationFctr int16
	offsetsRF       int16
	txnRF           int16
	ctlShutdown     time.Duration
	autoRebalance   bool
	imbalanceCheck  time.Duration
	uncleanWait     time.Duration
	brokerFlags
}

func newBrokerCmd() *cobra.Command {
	var f clusterFlags
	cmd := &cobra.Command{
		Use:   "broker",
		Short: "Run one broker of a Shale cluster (external etcd)",
		Long: `Runs one broker that joins the cluster named by --cluster in the etcd at --etcd:
it registers under a lease, takes part in the controller election, leads or
follows its partitions' replicas, and serves Kafka clients on --kafka-addr.
Start more brokers with other ids on the same etcd to grow the cluster.
Every flag can also be set with SHALE_<FLAG> (dashes become underscores).
With --sasl-mechanisms, clients must authenticate (SASL_PLAINTEXT); the
password of --sasl-bootstrap-user is read from SHALE_SASL_BOOTSTRAP_PASSWORD.
With --tls-cert and --tls-key the listener is TLS (SSL, or SASL_SSL with
--sasl-mechanisms), for clients and other brokers alike: the certificate
must name the advertised host, and --tls-ca verify the other brokers'.
With --acls, a client may do only what ACLs (shale acl) allow its principal;
--super-users and the --sasl-bootstrap-user may do anything.
The etcd connection is TLS with --etcd-tls-ca (etcd's CA), and
--etcd-tls-cert and --etcd-tls-key for an etcd that requires client
certificates, or with https:// endpoints; with --etcd-user the broker
authenticates to etcd as that user, its password read from
SHALE_ETCD_PASSWORD. A broker that cannot read its cluster's keys in etcd
fails at start, saying why.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := bindEnv(cmd.Flags()); err != nil {
				return err
			}
			return runBroker(cmd.Context(), f)
		},
	}
	fs := cmd.Flags()
	fs.Int32Var(&f.id, "id", -1, "this broker's id, unique in the cluster (node.id; required)")
	fs.StringVar(&f.dataDir, "data-dir", "./data", "directory for this broker's logs")
	fs.StringVar(&f.kafkaAddr, "kafka-addr", "127.0.0.1:9092", "Kafka listener address (clients and other brokers)")
	fs.StringVar(&f.httpAddr, "http-addr", "127.0.0.1:9644", "HTTP address for /metrics, /healthz and /readyz")
	fs.StringVar(&f.advertised, "advertised-addr", "", "host:port clients and other brokers are told to use (default: the Kafka listener address)")
	fs.StringVar(&f.advHTTP, "advertised-http-addr", "", "host:port tools (shale tier status) are told to reach the HTTP address at (default: --http-addr, its host the advertised one when unspecified)")
	f.etcd.register(fs)
	fs.StringVar(&f.cluster, "cluster", "shale", "cluster name: the etcd key prefix /NAME/, so clusters can share an etcd")
	fs.StringVar(&f.rack, "rack", "", "this broker's rack or zone (broker.rack); replicas are spread over racks")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.DurationVar(&f.sessionTTL, "session-ttl", 10*time.Second, "the broker's etcd lease: how long after it dies its partitions move")
	fs.DurationVar(&f.replicaLagMax, "replica-lag-time-max", 30*time.Second, "a follower not caught up for this long leaves the ISR (replica.lag.time.max.ms)")
	fs.Int64Var(&f.throttledRate, "leader-replication-throttled-rate", 0, "bytes per second this broker sends at most, as leader, to throttled replicas out of the ISR (those a reassignment adds, and those leader.replication.throttled.replicas names), all partitions together (static leader.replication.throttled.rate, under the dynamic broker config; 0: no bound)")
	fs.Int64Var(&f.followerRate, "follower-replication-throttled-rate", 0, "bytes per second this broker fetches at most, as follower, for its throttled replicas out of the ISR (follower.replication.throttled.replicas), all partitions together (static follower.replication.throttled.rate, under the dynamic broker config; 0: no bound)")
	fs.Int16Var(&f.replicationFctr, "default-replication-factor", 1, "replicas of auto-created topics (default.replication.factor)")
	fs.Int16Var(&f.offsetsRF, "offsets-topic-replication-factor", 3, "replicas of __consumer_offsets, capped at the live brokers (offsets.topic.replication.factor)")
	fs.Int16Var(&f.txnRF, "transaction-state-replication-factor", 3, "replicas of __transaction_state, capped at the live brokers (transaction.state.log.replication.factor)")
	fs.DurationVar(&f.ctlShutdown, "controlled-shutdown-timeout", 30*time.Second, "on SIGTERM, how long to wait for the controller to move this broker's leaderships to other in-sync replicas (negative: exit without, as controlled.shutdown.enable=false)")
	fs.BoolVar(&f.autoRebalance, "auto-leader-rebalance", true, "move leadership back to each partition's preferred replica when it is in sync (auto.leader.rebalance.enable)")
	fs.DurationVar(&f.imbalanceCheck, "leader-imbalance-check-interval", 300*time.Second, "how often leadership is moved back to preferred replicas (leader.imbalance.check.interval.seconds)")
	fs.DurationVar(&f.uncleanWait, "unclean-recovery-wait", 0, "how long a partition waits, offline, for an unclean election until every replica has said where its log ends, so that the longest log leads (unclean.recovery.timeout.ms of KIP-966; 0: --session-ttl)")
	f.brokerFlags.register(cmd)
	return cmd
}

// etcdStartTimeout bounds how long a starting broker waits for its first
// answer from etcd: an etcd that starts along with the brokers has time
// to, and a broker that cannot reach it fails rather than hang.
const etcdStartTimeout = 30 * time.Second

// clusterPrefix is the etcd key prefix of cluster name.
func clusterPrefix(name string) (string, error) {
	if name == "" || strings.ContainsAny(name, "/ \t\n") {
		return "", fmt.Errorf("--cluster %q: a non-empty name without slashes or spaces", name)
	}
	return "/" + name + "/", nil
}

func runBroker(ctx context.Context, f clusterFlags) error {
	log, err := newLogger(f.logLevel)
	if err != nil {
		return err
	}
	if f.id < 0 {
		return fmt.Errorf("--id is required")
	}
	if err := f.brokerFlags.check(); err != nil {
		return err
	}
	if err := f.etcd.check(); err != nil {
		return err
	}
	f.warnACLs(log)
	if f.uncleanWait < 0 {
		return fmt.Errorf("--unclean-recovery-wait %v: 0 (the session TTL) or more", f.uncleanWait)
	}
	prefix, err := clusterPrefix(f.cluster)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(orBackground(ctx), os.Interrupt, syscall.SIGTERM)
	defer stop()
	proc, err := openProcess(f.dataDir, f.kafkaAddr, f.httpAddr)
	if err != nil {
		return err
	}
	defer proc.close()
	dataDir, ln, httpLn := proc.dataDir, proc.kafka, proc.http
	reg := newRegistry()
	status := serveStatus(httpLn, reg, f.pprof)
	defer status.close()

	host, port, err := advertisedHostPort(f.advertised, ln.Addr().String())
	if err != nil {
		return err
	}
	if err := f.checkTLS(host, log); err != nil {
		return err
	}
	advHTTP, err := advertisedHTTPAddr(f.advHTTP, httpLn.Addr().String(), host, 0)
	if err != nil {
		return err
	}

	cli, err := f.etcd.dial(ctx, prefix, etcdStartTimeout)
	if err != nil {
		return err
	}
	defer cli.Close()

	cfg := broker.Config{
		NodeID:                            f.id,
		DataDir:                           filepath.Join(dataDir, "log"),
		AdvertisedHost:                    host,
		AdvertisedPort:                    port,
		AdvertisedHTTPAddr:                advHTTP,
		Rack:                              f.rack,
		ReplicaLagTimeMax:                 f.replicaLagMax,
		DefaultReplicationFactor:          f.replicationFctr,
		OffsetsTopicReplicationFactor:     f.offsetsRF,
		TransactionTopicReplicationFactor: f.txnRF,
		ControlledShutdownTimeout:         f.ctlShutdown,
		LeaderImbalanceCheckInterval:      f.imbalanceCheck,
		UncleanRecoveryWait:               f.uncleanWait,
	}
	cfg.LeaderReplicationThrottledRate = f.throttledRate
	cfg.FollowerReplicationThrottledRate = f.followerRate
	if !f.autoRebalance || f.imbalanceCheck <= 0 {
		cfg.LeaderImbalanceCheckInterval = -1
	}
	f.brokerFlags.apply(&cfg)
	bucket, err := f.openObjectStore(ctx, log)
	if err != nil {
		return err
	}
	if bucket != nil {
		defer bucket.Close()
		cfg.Tiering.Bucket = bucket
	}
	if err := applyTestHooks(&cfg.Tiering); err != nil {
		return err
	}
	setMemoryLimit(cfg, 1, log)
	startCtx, cancel := context.WithTimeout(ctx, f.sessionTTL+30*time.Second)
	b, err := broker.Start(startCtx, broker.Options{Config: cfg, Etcd: cli, EtcdPrefix: prefix, Logger: log, Registry: reg, BrokerSessionTTL: f.sessionTTL})
	cancel()
	if err != nil {
		return err
	}
	defer b.Close()
	serveErr := make(chan error, 1)
	go func() { serveErr <- b.Serve(ln) }()
	status.started(b)
	log.Info("shale broker is up", "id", f.id, "kafka", ln.Addr().String(), "advertised", fmt.Sprintf("%s:%d", host, port),
		"http", httpLn.Addr().String(), "advertised_http", advHTTP, "etcd", f.etcd.endpoints, "etcd_tls", f.etcd.tls != nil, "etcd_user", f.etcd.user, "cluster", f.cluster, "rack", f.rack, "sasl_mechanisms", f.saslMechanisms,
		"tls", f.tls != nil, "tls_client_auth", f.tlsClientAuth, "acls", f.acls)
	select {
	case <-ctx.Done():
		stop()
		log.Info("shutting down; a second signal exits at once")
		if f.ctlShutdown > 0 {
			// Hand the partitions over while clients can still
			// reach this broker and be redirected.
			sctx, cancel := context.WithTimeout(context.Background(), f.ctlShutdown)
			b.ControlledShutdown(sctx)
			cancel()
		}
	case err := <-serveErr:
		if err != nil {
			return err
		}
	}
	ln.Close()
	return nil
}
