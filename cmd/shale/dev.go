package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/shale-log/shale/broker"
	"github.com/shale-log/shale/broker/acl"
	"github.com/shale-log/shale/broker/sasl"
	"github.com/shale-log/shale/metadata"
	"github.com/shale-log/shale/objectstore"
)

// devFlags are the flags of `shale dev`; each is also read from
// SHALE_<NAME> (for example SHALE_DATA_DIR).
type devFlags struct {
	dataDir    string
	kafkaAddr  string
	httpAddr   string
	nodeID     int32
	advertised string
	advHTTP    string
	logLevel   string
	etcdAddr   string
	brokers    int
	brokerFlags
}

// brokerFlags are the Kafka broker settings shared by `dev` and `broker`.
type brokerFlags struct {
	autoCreate        bool
	numPartitions     int32
	retentionCheck    time.Duration
	cleanerBackoff    time.Duration
	cleanerBuffer     int64
	maxOpenFiles      int
	maxGroupLagSeries int
	logDirReserve     int64
	scrubRate         int64
	scrubInterval     time.Duration
	remoteScrub       time.Duration
	metadataReserve   int64
	socketRequestMax  int64
	maxConns          int
	maxConnsPerIP     int
	maxConnRate       int
	replicaSelector   string
	groupInitialDelay time.Duration
	offsetsRetention  time.Duration
	txnMaxTimeout     time.Duration
	txnIDExpiration   time.Duration
	topicDefaults     map[string]string
	objectStore       string
	remoteCache       int64
	remoteChunk       int64
	remoteFetchWait   time.Duration
	pprof             bool
	saslMechanisms    []string
	reauth            time.Duration
	saslUser          string
	// saslPassword is saslUser's, from SHALE_SASL_BOOTSTRAP_PASSWORD:
	// never a flag, which would show in ps.
	saslPassword string
	// The TLS listener's PEM files and ssl.client.auth; tls and peerTLS
	// are the configs check builds from them (nil: a plain listener).
	tlsCert, tlsKey, tlsCA string
	tlsClientAuth          string
	tls, peerTLS           *tls.Config
	// certs serves tls and peerTLS the files as last read (tls_reload.go).
	certs *certReloader
	// --acls, --super-users (Kafka's super.users: superUsersFlag as
	// given, superUsers the principals check reads from it) and
	// --allow-everyone-if-no-acl-found.
	acls           bool
	superUsersFlag string
	superUsers     []string
	allowIfNoACL   bool
}

// saslBootstrapPasswordEnv holds the password of --sasl-bootstrap-user.
const saslBootstrapPasswordEnv = "SHALE_SASL_BOOTSTRAP_PASSWORD"

func (f *brokerFlags) register(cmd *cobra.Command) {
	fs := cmd.Flags()
	fs.BoolVar(&f.autoCreate, "auto-create-topics", true, "create topics on first use (auto.create.topics.enable)")
	fs.Int32Var(&f.numPartitions, "num-partitions", 1, "partitions of auto-created topics (num.partitions)")
	fs.DurationVar(&f.retentionCheck, "retention-check-interval", 5*time.Minute, "how often retention runs (log.retention.check.interval.ms)")
	fs.DurationVar(&f.cleanerBackoff, "log-cleaner-backoff", 15*time.Second, "how often the log cleaner looks for compacted partitions to clean (log.cleaner.backoff.ms); negative turns it off (log.cleaner.enable=false)")
	fs.Int64Var(&f.cleanerBuffer, "log-cleaner-dedupe-buffer-size", 128<<20, "memory of one compaction pass's key map, bytes (log.cleaner.dedupe.buffer.size, about 48 bytes a key)")
	fs.IntVar(&f.maxOpenFiles, "max-open-segment-files", 4096, "segment file descriptors kept open at once")
	fs.IntVar(&f.maxGroupLagSeries, "max-group-lag-series", 5000, "per-partition shale_consumer_group_lag series exported at most; beyond it groups (in name order) are summed per topic in shale_consumer_group_topic_lag (negative: no bound)")
	fs.Int64Var(&f.scrubRate, "scrub-bytes-per-second", 16<<20, "read rate of the background scrubber that verifies sealed segments (bounds its I/O; 16 MiB/s covers about 9.5 TiB a week)")
	fs.DurationVar(&f.scrubInterval, "scrub-interval", 7*24*time.Hour, "how often the scrubber verifies every sealed segment of each partition, counted from the partition's last complete scrub, which survives restarts (negative disables)")
	fs.DurationVar(&f.remoteScrub, "remote-scrub-interval", 30*24*time.Hour, "how often each tiered partition's leader reads its remote log back from the object store and verifies it, at --scrub-bytes-per-second, counted from the last complete scrub, which the bucket records (negative disables)")
	fs.Int64Var(&f.logDirReserve, "log-dir-reserve-bytes", 256<<20, "free space the log directory keeps: produce is refused (KAFKA_STORAGE_ERROR) below it; negative disables")
	fs.Int64Var(&f.metadataReserve, "metadata-reserve-bytes", 128<<20, "free space the embedded etcd's directory keeps: metadata writes are refused below it; negative disables")
	fs.Int64Var(&f.socketRequestMax, "socket-request-max-bytes", 100<<20, "largest request accepted (socket.request.max.bytes)")
	fs.IntVar(&f.maxConns, "max-connections", 10000, "client connections open at once; more are closed as they are accepted (max.connections)")
	fs.IntVar(&f.maxConnsPerIP, "max-connections-per-ip", 0, "client connections open at once from one IP address, 0 for no limit (max.connections.per.ip)")
	fs.IntVar(&f.maxConnRate, "max-connection-creation-rate", 0, "new connections accepted a second, 0 for no limit: past it the broker waits before accepting the next (max.connection.creation.rate; per client address, set the connection_creation_rate quota with shale quota alter --ip)")
	fs.StringVar(&f.replicaSelector, "replica-selector", broker.RackAwareSelector, "where consumers that name their rack (client.rack) read: rack-aware (an in-sync replica in their rack) or leader (replica.selector.class; Kafka's class names are accepted)")
	fs.DurationVar(&f.groupInitialDelay, "group-initial-rebalance-delay", 3*time.Second, "wait for more members before a new group's first rebalance (group.initial.rebalance.delay.ms)")
	fs.DurationVar(&f.offsetsRetention, "offsets-retention", 7*24*time.Hour, "how long committed offsets of empty groups are kept (offsets.retention.minutes)")
	fs.DurationVar(&f.txnMaxTimeout, "transaction-max-timeout", 15*time.Minute, "the longest transaction.timeout.ms a transactional producer may ask for: InitProducerId with a longer one is refused (INVALID_TRANSACTION_TIMEOUT) (transaction.max.timeout.ms; Flink's Kafka sink asks for 1h by default)")
	fs.DurationVar(&f.txnIDExpiration, "transactional-id-expiration", 7*24*time.Hour, "how long a transactional id no producer uses is kept (transactional.id.expiration.ms)")
	fs.StringToStringVar(&f.topicDefaults, "topic-default", nil, "broker-level topic defaults by Kafka broker config name, e.g. log.retention.ms=3600000 (repeatable)")
	fs.StringVar(&f.objectStore, "object-store", "", "object store for tiered storage: s3://BUCKET[/PREFIX]?endpoint=...&region=..., file:///ABS/PATH, mem:// or none (dev default: file://DATA-DIR/objects)")
	fs.Int64Var(&f.remoteCache, "remote-cache-bytes", 1<<30, "memory for chunks read from the object store (cold reads)")
	fs.Int64Var(&f.remoteChunk, "remote-chunk-bytes", 4<<20, "size of one ranged GET of a remote segment")
	fs.DurationVar(&f.remoteFetchWait, "remote-fetch-max-wait", 500*time.Millisecond, "how long a fetch waits for a read of the object store before it is answered without that partition's records; the read goes on for the next fetch (remote.fetch.max.wait.ms)")
	fs.BoolVar(&f.pprof, "pprof", false, "serve Go's profiler under /debug/pprof on the HTTP address (with mutex and block profiles sampled)")
	fs.StringSliceVar(&f.saslMechanisms, "sasl-mechanisms", nil, "SASL mechanisms clients must authenticate with, comma-separated, of "+sasl.Plain+", "+sasl.ScramSHA256+" and "+sasl.ScramSHA512+" (sasl.enabled.mechanisms; default: none, a PLAINTEXT listener without authentication). Users are SCRAM credentials (shale user); PLAIN checks the password against them")
	fs.StringVar(&f.tlsCert, "tls-cert", "", "PEM certificate (chain) of a TLS listener, with --tls-key: Kafka's SSL listener, SASL_SSL with --sasl-mechanisms (ssl.keystore.*; default: none, a plain TCP listener). It must name the advertised host, which clients and other brokers verify")
	fs.StringVar(&f.tlsKey, "tls-key", "", "PEM private key of --tls-cert")
	fs.StringVar(&f.tlsCA, "tls-ca", "", "PEM CA certificates that verify the other brokers' certificates, and clients' with --tls-client-auth (ssl.truststore.*; default: the system's)")
	fs.StringVar(&f.tlsClientAuth, "tls-client-auth", "none", "client certificates the TLS listener asks for: none, requested (verified when given) or required (ssl.client.auth; needs --tls-ca). A verified certificate's subject, e.g. CN=alice,O=example, is the connection's user unless SASL is required; the broker presents its own --tls-cert to the others")
	fs.DurationVar(&f.reauth, "connections-max-reauth", 0, "how long a client's SASL session lasts: the client authenticates again by then, or its connection is closed at its next request, so a user deleted or a password changed reaches open connections (connections.max.reauth.ms, KIP-368; 0: as long as the connection)")
	fs.StringVar(&f.saslUser, "sasl-bootstrap-user", "", "a user given SCRAM-SHA-256 and SCRAM-SHA-512 credentials at start unless it has credentials already, its password read from "+saslBootstrapPasswordEnv+" (never a flag): the first user of a cluster that requires SASL. With --acls it is a super user, who grants the first ACLs")
	fs.BoolVar(&f.acls, "acls", false, "enforce ACLs (Kafka's authorizer.class.name set to its StandardAuthorizer): a client may do only what ACLs allow its principal, User:NAME for its SASL user or its client certificate's subject, User:ANONYMOUS without either; super users and the other brokers may do anything. Manage them with shale acl or kafka-acls.sh (default: off, every client may do anything and the ACL APIs answer SECURITY_DISABLED)")
	fs.StringVar(&f.superUsersFlag, "super-users", "", "principals that may do anything with --acls, semicolon-separated, e.g. 'User:admin;User:ops' (super.users); --sasl-bootstrap-user is one too")
	fs.BoolVar(&f.allowIfNoACL, "allow-everyone-if-no-acl-found", false, "with --acls, a resource that no ACL names is open to every client, as without --acls (allow.everyone.if.no.acl.found; default: closed to all but super users)")
}

// check refuses flag values the broker cannot run with, naming the flag.
func (f *brokerFlags) check() error {
	if f.maxConns < 1 {
		return fmt.Errorf("--max-connections %d: at least 1", f.maxConns)
	}
	if f.maxConnsPerIP < 0 {
		return fmt.Errorf("--max-connections-per-ip %d: 0 (no limit) or more", f.maxConnsPerIP)
	}
	if f.maxConnRate < 0 {
		return fmt.Errorf("--max-connection-creation-rate %d: 0 (no limit) or more", f.maxConnRate)
	}
	if f.remoteFetchWait <= 0 {
		return fmt.Errorf("--remote-fetch-max-wait %v: more than 0", f.remoteFetchWait)
	}
	for _, d := range []struct {
		flag string
		v    time.Duration
	}{{"--transaction-max-timeout", f.txnMaxTimeout}, {"--transactional-id-expiration", f.txnIDExpiration}} {
		if d.v < time.Millisecond || d.v.Milliseconds() > math.MaxInt32 {
			return fmt.Errorf("%s %v: from 1ms to %v", d.flag, d.v, time.Duration(math.MaxInt32)*time.Millisecond)
		}
	}
	sel, ok := replicaSelectors[f.replicaSelector]
	if !ok {
		return fmt.Errorf("--replica-selector %q: %s or %s", f.replicaSelector, broker.RackAwareSelector, broker.LeaderSelector)
	}
	f.replicaSelector = sel
	for i, m := range f.saslMechanisms {
		mech, err := saslMechanism("--sasl-mechanisms", m)
		if err != nil {
			return err
		}
		f.saslMechanisms[i] = mech
	}
	if f.reauth < 0 {
		return fmt.Errorf("--connections-max-reauth %v: 0 or more", f.reauth)
	}
	if f.saslUser != "" {
		f.saslPassword = os.Getenv(saslBootstrapPasswordEnv)
		if f.saslPassword == "" {
			return fmt.Errorf("--sasl-bootstrap-user %q: set its password in %s (there is no flag for it)", f.saslUser, saslBootstrapPasswordEnv)
		}
	}
	var err error
	if f.tls, f.peerTLS, err = f.listenerTLS(); err != nil {
		return err
	}
	return f.checkACLs()
}

// checkACLs reads --super-users, and refuses it and
// --allow-everyone-if-no-acl-found without --acls: either would say that
// ACLs are enforced when they are not.
func (f *brokerFlags) checkACLs() error {
	users, err := acl.ParsePrincipals(f.superUsersFlag)
	if err != nil {
		return fmt.Errorf("--super-users %q: %w", f.superUsersFlag, err)
	}
	f.superUsers = users
	switch {
	case !f.acls && len(users) > 0:
		return fmt.Errorf("--super-users %q: only with --acls (without it every client may do anything)", f.superUsersFlag)
	case !f.acls && f.allowIfNoACL:
		return errors.New("--allow-everyone-if-no-acl-found: only with --acls (without it every client may do anything)")
	}
	return nil
}

// warnACLs logs what makes --acls hard to live with, though the broker
// can run: clients that need not say who they are, and nobody who may
// grant the first ACLs (ACLs already in the cluster may, so neither is
// refused).
func (f *brokerFlags) warnACLs(log *slog.Logger) {
	if !f.acls {
		return
	}
	if len(f.saslMechanisms) == 0 && (f.tls == nil || f.tls.ClientAuth == tls.NoClientCert) {
		supers := f.superUsers
		if f.saslUser != "" {
			supers = append(slices.Clip(supers), "User:"+f.saslUser)
		}
		log.Warn("ACLs are enforced but no client has to authenticate (no --sasl-mechanisms, no --tls-client-auth): every client that does not is User:ANONYMOUS, and may do only what ACLs grant User:ANONYMOUS or User:*",
			"super_users", supers, "allow_everyone_if_no_acl_found", f.allowIfNoACL)
	}
	if len(f.superUsers) == 0 && f.saslUser == "" && !f.allowIfNoACL {
		log.Warn("ACLs are enforced but there is no super user (--super-users, --sasl-bootstrap-user): only a principal that ACLs already in the cluster allow ALTER on the cluster can add ACLs")
	}
}

// replicaSelectors maps what --replica-selector accepts, Kafka's class
// names included, to the broker's selector.
var replicaSelectors = map[string]string{
	broker.RackAwareSelector: broker.RackAwareSelector,
	broker.LeaderSelector:    broker.LeaderSelector,
	"org.apache.kafka.common.replica.RackAwareReplicaSelector": broker.RackAwareSelector,
}

func (f *brokerFlags) apply(c *broker.Config) {
	c.AutoCreateTopics = f.autoCreate
	c.NumPartitions = f.numPartitions
	c.LogRetentionCheckInterval = f.retentionCheck
	c.LogCleanerBackoff = f.cleanerBackoff
	c.LogCleanerDedupeBufferSize = f.cleanerBuffer
	c.MaxOpenSegmentFiles = f.maxOpenFiles
	c.MaxGroupLagSeries = f.maxGroupLagSeries
	c.LogDirReserveBytes = f.logDirReserve
	c.ScrubBytesPerSecond = f.scrubRate
	c.ScrubInterval = f.scrubInterval
	c.RemoteScrubInterval = f.remoteScrub
	c.MetadataReserveBytes = f.metadataReserve
	c.SocketRequestMaxBytes = f.socketRequestMax
	c.MaxConnections = f.maxConns
	c.MaxConnectionsPerIP = f.maxConnsPerIP
	c.MaxConnectionCreationRate = f.maxConnRate
	c.ReplicaSelector = f.replicaSelector
	c.GroupInitialRebalanceDelay = f.groupInitialDelay
	c.OffsetsRetention = f.offsetsRetention
	c.TransactionConfigs = map[string]string{
		"transaction.max.timeout.ms":     strconv.FormatInt(f.txnMaxTimeout.Milliseconds(), 10),
		"transactional.id.expiration.ms": strconv.FormatInt(f.txnIDExpiration.Milliseconds(), 10),
	}
	c.TopicDefaults = f.topicDefaults
	c.Tiering.CacheBytes = f.remoteCache
	c.Tiering.ChunkBytes = f.remoteChunk
	c.Tiering.RemoteFetchMaxWait = f.remoteFetchWait
	c.SASLMechanisms = f.saslMechanisms
	c.SASLBootstrapUser, c.SASLBootstrapPassword = f.saslUser, f.saslPassword
	c.ConnectionsMaxReauth = f.reauth
	c.TLS, c.PeerTLS = f.tls, f.peerTLS
	if f.certs != nil {
		c.PeerTLSNow = f.certs.peerConfig
	}
	c.ACLs, c.SuperUsers, c.AllowEveryoneIfNoACLFound = f.acls, f.superUsers, f.allowIfNoACL
}

// openObjectStore opens the --object-store bucket; "none" means no tiered
// storage (nil).
func (f *brokerFlags) openObjectStore(ctx context.Context, log *slog.Logger) (objectstore.Bucket, error) {
	if f.objectStore == "none" || f.objectStore == "" {
		return nil, nil
	}
	b, err := objectstore.Open(ctx, f.objectStore, objectstore.OpenOptions{Logger: log})
	if err != nil {
		return nil, fmt.Errorf("--object-store: %w", err)
	}
	return b, nil
}

// devTopicDefaults make tiering visible within minutes in `shale dev`:
// segments roll at 8 MiB or after a minute, and uploaded segments stay on
// local disk for two minutes. Flags and --topic-default override them.
var devTopicDefaults = map[string]string{
	"log.segment.bytes":      "8388608",
	"log.roll.ms":            "60000",
	"log.local.retention.ms": "120000",
}

func newDevCmd() *cobra.Command {
	var f devFlags
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run a complete single-node Shale (embedded etcd, local storage)",
		Long: `Runs one broker with an embedded etcd under the data directory. Kafka clients
connect to --kafka-addr; /metrics, /healthz and /readyz are served on --http-addr.
Every flag can also be set with SHALE_<FLAG> (dashes become underscores),
--brokers with SHALE_DEV_BROKERS. With --sasl-mechanisms, clients must
authenticate (SASL_PLAINTEXT); the password of --sasl-bootstrap-user is read
from SHALE_SASL_BOOTSTRAP_PASSWORD. With --tls-cert and --tls-key the
listener is TLS (SSL, or SASL_SSL with --sasl-mechanisms); the certificate
must name the advertised host (127.0.0.1 by default), every broker's. With
--acls, a client may do only what ACLs (shale acl) allow its principal;
--super-users and the --sasl-bootstrap-user may do anything.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := bindEnv(cmd.Flags()); err != nil {
				return err
			}
			return runDev(cmd.Context(), f)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&f.dataDir, "data-dir", "./data", "directory for the logs and the embedded etcd")
	fs.StringVar(&f.kafkaAddr, "kafka-addr", "127.0.0.1:9092", "Kafka listener address")
	fs.StringVar(&f.httpAddr, "http-addr", "127.0.0.1:9644", "HTTP address for /metrics, /healthz and /readyz")
	fs.Int32Var(&f.nodeID, "node-id", 0, "this broker's id (node.id)")
	fs.StringVar(&f.advertised, "advertised-addr", "", "host:port clients are told to use (default: the Kafka listener address)")
	fs.StringVar(&f.advHTTP, "advertised-http-addr", "", "host:port tools are told to reach the HTTP address at (default: --http-addr, its host the advertised one when unspecified)")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.IntVar(&f.brokers, "brokers", 1, "brokers to run in this process (more than 1: a replicated cluster on the embedded etcd; broker i listens on the Kafka port + i and the HTTP port + i, each with its own /metrics, keeps its logs under DATA-DIR/broker-i and auto-created topics get min(3, brokers) replicas)")
	// SHALE_BROKERS names the brokers client commands talk to.
	fs.SetAnnotation("brokers", envAnnotation, []string{"SHALE_DEV_BROKERS"})
	fs.StringVar(&f.etcdAddr, "etcd-addr", "", "serve the embedded etcd's client API on this host:port, without authentication (default: no listener; only this process reaches it)")
	f.brokerFlags.register(cmd)
	// shale dev checks retention every 30s, so that segments are seen
	// leaving the local disk soon after upload.
	f.retentionCheck = 30 * time.Second
	cmd.Flags().Lookup("retention-check-interval").DefValue = "30s"
	return cmd
}

func newLogger(level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l})), nil
}

func runDev(ctx context.Context, f devFlags) error {
	log, err := newLogger(f.logLevel)
	if err != nil {
		return err
	}
	if err := f.brokerFlags.check(); err != nil {
		return err
	}
	f.warnACLs(log)
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

	etcd, err := metadata.StartEmbedded(ctx, metadata.EmbeddedConfig{Dir: filepath.Join(dataDir, "etcd"), Name: "shale-dev", ClientAddr: f.etcdAddr, Slog: log})
	if err != nil {
		return fmt.Errorf("embedded etcd: %w", err)
	}
	defer etcd.Close()
	if f.etcdAddr != "" {
		log.Warn("embedded etcd serves clients without authentication", "etcd", etcd.Endpoints())
	}

	host, port, err := advertisedHostPort(f.advertised, ln.Addr().String())
	if err != nil {
		return err
	}
	// With --brokers N the others advertise this host too (their ports
	// differ), so one certificate serves them all.
	if err := f.checkTLS(host, log); err != nil {
		return err
	}
	advHTTP, err := advertisedHTTPAddr(f.advHTTP, httpLn.Addr().String(), host, 0)
	if err != nil {
		return err
	}
	cfg := broker.Config{
		NodeID:             f.nodeID,
		DataDir:            filepath.Join(dataDir, "log"),
		AdvertisedHost:     host,
		AdvertisedPort:     port,
		AdvertisedHTTPAddr: advHTTP,
		MetadataDir:        filepath.Join(dataDir, "etcd"),
	}
	f.brokerFlags.apply(&cfg)
	if f.brokers < 1 {
		return fmt.Errorf("--brokers must be at least 1")
	}
	cfg.DefaultReplicationFactor = int16(min(3, f.brokers))
	defaults := maps.Clone(devTopicDefaults)
	maps.Copy(defaults, cfg.TopicDefaults)
	cfg.TopicDefaults = defaults
	if f.objectStore == "" {
		f.objectStore = "file://" + filepath.Join(dataDir, "objects")
	}
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
	setMemoryLimit(cfg, f.brokers, log)
	b, err := broker.Start(ctx, broker.Options{Config: cfg, Etcd: etcd.Client(), Logger: log, Registry: reg})
	if err != nil {
		return err
	}
	defer b.Close()

	// Every broker is up before the first HTTP address's /healthz and
	// /readyz answer 200: they speak for the process.
	all := []*broker.Broker{b}
	for i := 1; i < f.brokers; i++ {
		peer, extra, err := startDevPeer(ctx, devPeer{base: cfg, dataDir: dataDir, kafkaAddr: ln.Addr().String(), httpAddr: httpLn.Addr().String(),
			advertised: f.advertised, advHTTP: f.advHTTP, pprof: f.pprof, i: i}, etcd, log)
		if err != nil {
			return err
		}
		defer extra()
		all = append(all, peer)
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- b.Serve(ln) }()
	status.started(all...)
	log.Info("shale dev is up", "kafka", ln.Addr().String(), "http", httpLn.Addr().String(), "advertised_http", advHTTP, "data", dataDir, "object_store", f.objectStore,
		"sasl_mechanisms", f.saslMechanisms, "tls", f.tls != nil, "tls_client_auth", f.tlsClientAuth, "acls", f.acls)

	select {
	case <-ctx.Done():
		// From here a second SIGINT or SIGTERM ends the process at
		// once (the default action is restored).
		stop()
		log.Info("shutting down; a second signal exits at once")
	case err := <-serveErr:
		if err != nil {
			return err
		}
	}
	ln.Close()
	return nil
}

func advertisedHostPort(advertised, listen string) (string, int32, error) {
	addr := advertised
	if addr == "" {
		addr = listen
	}
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("advertised address %q: %w", addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port <= 0 || port > 65535 {
		return "", 0, errors.New("advertised address needs a port")
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		if host, err = os.Hostname(); err != nil {
			return "", 0, err
		}
	}
	return host, int32(port), nil
}

// devPeer is broker i of a `shale dev --brokers N` cluster: its id and
// Kafka and HTTP ports are the first broker's plus i (a port 0, any port,
// stays 0), its logs under DATA-DIR/broker-i.
type devPeer struct {
	base                broker.Config
	dataDir             string
	kafkaAddr, httpAddr string // the first broker's listeners
	advertised, advHTTP string // the first broker's flags
	pprof               bool
	i                   int
}

// listenPlus listens on addr's host at its port plus i (any port when
// addr's is 0).
func listenPlus(addr string, i int) (net.Listener, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	port, _ := strconv.Atoi(portStr)
	if port != 0 {
		port += i
	}
	return net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
}

// startDevPeer starts a devPeer in this process, with an HTTP address of
// its own (its metrics, health and tier status, as a broker process in
// production has). It returns the function that stops it.
func startDevPeer(ctx context.Context, d devPeer, etcd *metadata.Embedded, log *slog.Logger) (*broker.Broker, func(), error) {
	ln, err := listenPlus(d.kafkaAddr, d.i)
	if err != nil {
		return nil, nil, fmt.Errorf("kafka listener of broker %d: %w", d.i, err)
	}
	httpLn, err := listenPlus(d.httpAddr, d.i)
	if err != nil {
		ln.Close()
		return nil, nil, fmt.Errorf("http listener of broker %d: %w", d.i, err)
	}
	fail := func(err error) (*broker.Broker, func(), error) {
		httpLn.Close()
		ln.Close()
		return nil, nil, err
	}
	advHost, advPort, err := advertisedHostPort("", ln.Addr().String())
	if err != nil {
		return fail(err)
	}
	if d.advertised != "" {
		if advHost, advPort, err = advertisedHostPort(d.advertised, ln.Addr().String()); err != nil {
			return fail(err)
		}
		advPort += int32(d.i)
	}
	advHTTP, err := advertisedHTTPAddr(d.advHTTP, httpLn.Addr().String(), advHost, d.i)
	if err != nil {
		return fail(err)
	}
	cfg := d.base
	cfg.NodeID = d.base.NodeID + int32(d.i)
	cfg.DataDir = filepath.Join(d.dataDir, "broker-"+strconv.Itoa(d.i), "log")
	cfg.AdvertisedHost, cfg.AdvertisedPort, cfg.AdvertisedHTTPAddr = advHost, advPort, advHTTP
	// The Go runtime and process collectors are the first broker's: the
	// process is one.
	reg := prometheus.NewRegistry()
	status := serveStatus(httpLn, reg, d.pprof)
	b, err := broker.Start(ctx, broker.Options{Config: cfg, Etcd: etcd.Client(), Logger: log.With("node", cfg.NodeID), Registry: reg})
	if err != nil {
		status.close()
		return fail(fmt.Errorf("broker %d: %w", d.i, err))
	}
	go b.Serve(ln)
	status.started(b)
	log.Info("shale dev broker is up", "node", cfg.NodeID, "kafka", ln.Addr().String(), "http", httpLn.Addr().String(), "advertised_http", advHTTP)
	return b, func() {
		ln.Close()
		b.Close()
		status.close()
	}, nil
}

// advertisedHTTPAddr is the HTTP address a broker registers: flag when
// set (its port plus i, for broker i of shale dev), else the listener's
// address, its host advertisedHost when the listener's is unspecified.
func advertisedHTTPAddr(flag, listen, advertisedHost string, i int) (string, error) {
	if flag != "" {
		host, portStr, err := net.SplitHostPort(flag)
		port, perr := strconv.Atoi(portStr)
		if err != nil || host == "" || perr != nil || port <= 0 || port+i > 65535 {
			return "", fmt.Errorf("--advertised-http-addr %q: want host:port", flag)
		}
		return net.JoinHostPort(host, strconv.Itoa(port+i)), nil
	}
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", err
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = advertisedHost
	}
	return net.JoinHostPort(host, port), nil
}

// process is what a broker process holds from its first step: its data
// dir, locked, and its two listeners.
type process struct {
	dataDir     string
	kafka, http net.Listener
	unlock      func()
}

// openProcess locks the data dir before anything else opens it or a port,
// so a second process on the same data dir is refused at once, then
// listens on the Kafka and HTTP addresses.
func openProcess(dir, kafkaAddr, httpAddr string) (*process, error) {
	dataDir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	unlock, err := broker.LockDataDir(dataDir)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", kafkaAddr)
	if err != nil {
		unlock()
		return nil, fmt.Errorf("kafka listener: %w", err)
	}
	httpLn, err := net.Listen("tcp", httpAddr)
	if err != nil {
		ln.Close()
		unlock()
		return nil, fmt.Errorf("http listener: %w", err)
	}
	return &process{dataDir: dataDir, kafka: ln, http: httpLn, unlock: unlock}, nil
}

func (p *process) close() {
	p.http.Close()
	p.kafka.Close()
	p.unlock()
}

func orBackground(ctx context.Context) context.Context {
	if ctx == nil {
		return context.Background()
	}
	return ctx
}
