// Package broker is Shale's Kafka protocol server: connections, request
// handlers (one file per API key), partitions as leader, and the
// coordinators. It composes localseg, metadata and, later, tiering.
package broker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker/fetcher"
	"github.com/shale-log/shale/broker/sasl"
	"github.com/shale-log/shale/localseg"
	"github.com/shale-log/shale/localseg/recordbatch"
)

// Config is the broker's configuration. Field comments give Kafka's name.
type Config struct {
	NodeID         int32  // node.id
	DataDir        string // log.dirs (one directory)
	AdvertisedHost string // advertised.listeners host
	AdvertisedPort int32  // advertised.listeners port
	// AdvertisedHTTPAddr is the host:port where this broker's HTTP
	// address (/metrics, /healthz, /readyz, /v1/tier) is reached ("":
	// none). It is registered with the broker and described as
	// shale.advertised.http.address, so tools find every broker's from
	// the Kafka listener alone. Kafka has no name for it.
	AdvertisedHTTPAddr    string
	Rack                  string // broker.rack
	SocketRequestMaxBytes int64  // socket.request.max.bytes, default 100 MiB
	QueuedMaxRequestBytes int64  // queued.max.request.bytes, default 100 MiB (also bounds a non-produce request to 1/24 of it, see decodeExpansion)
	// QueuedMaxResponseBytes bounds the encoded responses waiting to be
	// sent, across all connections (default 100 MiB; Kafka has no name
	// for it). A connection with unsent responses past its share, or
	// while the budget is spent, reads no more requests until they are
	// sent (Kafka mutes such channels); one with none unsent is always
	// read, so a client that reads its responses keeps being served.
	QueuedMaxResponseBytes   int64
	AutoCreateTopics         bool  // auto.create.topics.enable (set by the caller; Kafka's default is true)
	NumPartitions            int32 // num.partitions, default 1
	DefaultReplicationFactor int16 // default.replication.factor, default 1
	// MaxConnections is max.connections (default 10,000) and
	// MaxConnectionsPerIP max.connections.per.ip (0: no per-address
	// limit, Kafka's default): a connection past either is closed as it
	// is accepted, with a rate-limited log line.
	MaxConnections      int
	MaxConnectionsPerIP int
	// MaxConnectionCreationRate is max.connection.creation.rate (0, the
	// default: no bound): past that many new connections a second, the
	// broker waits before it accepts the next (see conn_rate.go, also for
	// the connection_creation_rate quotas of client addresses).
	MaxConnectionCreationRate int
	// ConnectionsMaxIdle is connections.max.idle.ms (default 10
	// minutes): a connection that neither sends a request nor has one in
	// flight for that long is closed.
	ConnectionsMaxIdle time.Duration
	// RequestReadTimeout bounds the time from a request's size prefix to
	// its last byte (default 30s); a client that stops mid-request is
	// disconnected and the memory it held released. Kafka has no name
	// for it.
	RequestReadTimeout time.Duration
	// ResponseWriteTimeout: a response must be sent at a MiB or more
	// per ResponseWriteTimeout (default 30s), or its connection is
	// closed, so that a client that stops reading cannot hold memory.
	// Kafka has no name for it.
	ResponseWriteTimeout time.Duration
	// ShutdownTimeout bounds how long Close lets requests in flight
	// finish before it closes the sockets (default 5s).
	ShutdownTimeout time.Duration
	// ControlledShutdownTimeout bounds how long Close waits for the
	// controller to move this broker's leaderships to other in-sync
	// replicas before it stops (default 30s; negative: no controlled
	// shutdown, as Kafka's controlled.shutdown.enable=false).
	ControlledShutdownTimeout time.Duration
	// LeaderImbalanceCheckInterval is
	// leader.imbalance.check.interval.seconds (default 300s): how often
	// the controller moves leadership back to preferred replicas that are
	// in sync. Negative: never (auto.leader.rebalance.enable=false).
	LeaderImbalanceCheckInterval time.Duration
	// UncleanRecoveryWait is KIP-966's unclean.recovery.timeout.ms: how
	// long the controller holds a partition offline for an unclean
	// election while some of its replicas have not said where their logs
	// end (down, or not answering), since one of them may hold the
	// longest log; then the longest of those that answered leads.
	// Default (0): the broker session TTL, the time a dead broker's
	// registration takes to lapse.
	UncleanRecoveryWait time.Duration
	// DeletedTopicRetention is how long a deleted topic's tombstone stays
	// in etcd, so that a broker that was down during the deletion still
	// removes the topic's directories when it comes back (default 7
	// days; negative: for ever).
	DeletedTopicRetention time.Duration
	// LogRetentionCheckInterval is log.retention.check.interval.ms,
	// default 5 minutes.
	LogRetentionCheckInterval time.Duration
	// LogCleanerBackoff is log.cleaner.backoff.ms: how often the log
	// cleaner looks for compacted partitions to clean (default 15 s;
	// negative: the cleaner does not run, log.cleaner.enable=false).
	LogCleanerBackoff time.Duration
	// LogCleanerDedupeBufferSize is log.cleaner.dedupe.buffer.size: the
	// memory of one compaction pass's key map (default 128 MiB).
	LogCleanerDedupeBufferSize int64
	// MaxBrokerPartitions bounds the partition replicas each broker
	// hosts on average (max.broker.partitions, default 50,000): topic
	// creation and partition additions past it are refused.
	MaxBrokerPartitions int64
	// MaxOpenSegmentFiles bounds the segment descriptors open at once.
	MaxOpenSegmentFiles int
	// MaxGroupLagSeries bounds the per-partition consumer group lag
	// series a scrape exports, which clients' groups and commits would
	// otherwise grow without bound; beyond it groups are summed per topic
	// (default 5,000; negative: no bound).
	MaxGroupLagSeries int
	// ScrubBytesPerSecond bounds the read rate of the background scrubber
	// that verifies sealed segments (default 16 MiB/s: about 9.5 TiB a
	// week); ScrubInterval is how often it verifies each partition
	// (default 7 days, counted from the partition's last complete scrub,
	// which survives restarts; negative disables).
	ScrubBytesPerSecond int64
	ScrubInterval       time.Duration
	// RemoteScrubInterval is how often the leader of a tiered partition
	// reads its remote log back and checks it, at most
	// ScrubBytesPerSecond (default 30 days, counted from the last
	// complete scrub, which the bucket records; negative disables).
	RemoteScrubInterval time.Duration
	// LogDirReserveBytes is the free space the log directory keeps:
	// produce is refused with KAFKA_STORAGE_ERROR before the disk fills
	// up (default 256 MiB; negative disables the guard).
	LogDirReserveBytes int64
	// MetadataDir is the embedded etcd's data directory ("" with an
	// external etcd), and MetadataReserveBytes the free space it keeps:
	// admin writes to etcd are refused with KAFKA_STORAGE_ERROR below it,
	// instead of etcd failing a write for space and exiting (default
	// 128 MiB; negative disables the guard).
	MetadataDir          string
	MetadataReserveBytes int64
	// GroupInitialRebalanceDelay is group.initial.rebalance.delay.ms:
	// how long a new group waits for more members. Zero means no wait
	// (the command line's default is Kafka's 3s).
	GroupInitialRebalanceDelay time.Duration
	// OffsetsRetention is offsets.retention.minutes (default 7 days).
	OffsetsRetention time.Duration
	// OffsetsTopicPartitions is offsets.topic.num.partitions (default 50).
	OffsetsTopicPartitions int32
	// OffsetsTopicReplicationFactor is offsets.topic.replication.factor
	// (default 3, capped at the live brokers).
	OffsetsTopicReplicationFactor int16
	// TransactionTopicPartitions is transaction.state.log.num.partitions
	// (default 50).
	TransactionTopicPartitions int32
	// TransactionTopicReplicationFactor is
	// transaction.state.log.replication.factor (default 3, capped at the
	// live brokers).
	TransactionTopicReplicationFactor int16
	// TransactionConfigs are further transaction coordinator settings
	// under Kafka's names (transaction.max.timeout.ms,
	// transactional.id.expiration.ms, ...; see txn.Config.Set).
	TransactionConfigs map[string]string
	// GroupConfigs are further group coordinator settings under Kafka's
	// names (group.min.session.timeout.ms, offsets.retention.check.interval.ms,
	// group.consumer.heartbeat.interval.ms, ...; see group.Config.Set).
	GroupConfigs map[string]string
	// Tiering configures tiered storage (on when it has a bucket).
	Tiering TieringConfig
	// ReplicaLagTimeMax is replica.lag.time.max.ms: a follower that has
	// not caught up with the leader for this long leaves the ISR
	// (default 30s).
	ReplicaLagTimeMax time.Duration
	// ReplicaFetchWaitMax is replica.fetch.wait.max.ms, how long a
	// follower's fetch waits at the leader for data (default 500ms).
	ReplicaFetchWaitMax time.Duration
	// LeaderReplicationThrottledRate and FollowerReplicationThrottledRate
	// are the static values of Kafka's leader.replication.throttled.rate
	// and follower.replication.throttled.rate in bytes per second (0: no
	// bound); the dynamic broker configs in etcd override them (see
	// replication_quota.go). In-sync followers are never held back.
	LeaderReplicationThrottledRate   int64
	FollowerReplicationThrottledRate int64
	// DialPeer connects to another broker (replica fetchers); nil is a
	// plain TCP dial. Tests route it through a fault-injecting proxy.
	DialPeer func(ctx context.Context, network, addr string) (net.Conn, error)
	// ReplicaSelector is replica.selector.class: RackAwareSelector (the
	// default) or LeaderSelector.
	ReplicaSelector string
	// TopicDefaults are broker-level defaults for topic configs, under
	// Kafka's broker names (log.retention.ms, log.segment.bytes,
	// message.max.bytes, ...).
	TopicDefaults map[string]string
	// QuotaWindowNum and QuotaWindowSize are quota.window.num and
	// quota.window.size.seconds: client quotas are measured over that
	// many samples of that length (default 11 of 1 s).
	QuotaWindowNum  int
	QuotaWindowSize time.Duration
	// SASLMechanisms are sasl.enabled.mechanisms (PLAIN, SCRAM-SHA-256,
	// SCRAM-SHA-512): set, the listener is SASL_PLAINTEXT and clients
	// must authenticate with one of them; empty, it is PLAINTEXT. See
	// client_auth.go.
	SASLMechanisms []string
	// SASLBootstrapUser and SASLBootstrapPassword are a user the broker
	// creates at start (SCRAM credentials for both mechanisms) unless it
	// has credentials already: the first user of a cluster that
	// requires SASL ("": none).
	SASLBootstrapUser, SASLBootstrapPassword string
	// ConnectionsMaxReauth is connections.max.reauth.ms (KIP-368): a
	// client's SASL session lasts that long, and a connection whose
	// client did not authenticate again by then is closed at its next
	// request; so a user deleted, or a password changed, reaches the
	// connections open. 0 (the default, as Kafka's): sessions last as
	// long as their connections.
	ConnectionsMaxReauth time.Duration
	// TLS, set, makes the Kafka listener TLS (ssl.keystore.*,
	// ssl.client.auth): Kafka's SSL listener, or SASL_SSL with
	// SASLMechanisms. PeerTLS is how this broker dials the others then
	// (ssl.truststore.*, and its own certificate where they ask for one;
	// nil: the system's roots). See listener_tls.go.
	TLS, PeerTLS *tls.Config
	// PeerTLSNow, set, is called for PeerTLS at each dial of another
	// broker instead: certificates and CA certificates read again since
	// the start (the listener's own follow through
	// TLS.GetConfigForClient).
	PeerTLSNow func() *tls.Config
	// ACLs, set, enforces the ACLs (Kafka's authorizer.class.name set to
	// its StandardAuthorizer): see authorize.go. SuperUsers are
	// super.users ("User:admin"), who may do anything; with
	// AllowEveryoneIfNoACLFound (allow.everyone.if.no.acl.found) a
	// resource no ACL names is open to everyone, as without ACLs.
	ACLs                      bool
	SuperUsers                []string
	AllowEveryoneIfNoACLFound bool
}

// HTTPAddressConfig is the broker config that DescribeConfigs shows the
// broker's advertised HTTP address under (empty: none).
const HTTPAddressConfig = "shale.advertised.http.address"

// EnsureDefaults fills zero fields with Kafka's defaults.
func (c *Config) EnsureDefaults() {
	if c.SocketRequestMaxBytes == 0 {
		c.SocketRequestMaxBytes = 100 << 20
	}
	if c.QueuedMaxRequestBytes == 0 {
		c.QueuedMaxRequestBytes = 100 << 20
	}
	if c.QueuedMaxResponseBytes == 0 {
		c.QueuedMaxResponseBytes = 100 << 20
	}
	if c.MaxConnections == 0 {
		c.MaxConnections = 10000
	}
	if c.ConnectionsMaxIdle == 0 {
		c.ConnectionsMaxIdle = 10 * time.Minute
	}
	if c.RequestReadTimeout == 0 {
		c.RequestReadTimeout = 30 * time.Second
	}
	if c.ResponseWriteTimeout == 0 {
		c.ResponseWriteTimeout = 30 * time.Second
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 5 * time.Second
	}
	if c.ControlledShutdownTimeout == 0 {
		c.ControlledShutdownTimeout = 30 * time.Second
	}
	if c.LeaderImbalanceCheckInterval == 0 {
		c.LeaderImbalanceCheckInterval = 300 * time.Second
	}
	if c.NumPartitions == 0 {
		c.NumPartitions = 1
	}
	if c.DefaultReplicationFactor == 0 {
		c.DefaultReplicationFactor = 1
	}
	if c.LogRetentionCheckInterval == 0 {
		c.LogRetentionCheckInterval = 5 * time.Minute
	}
	if c.LogCleanerBackoff == 0 {
		c.LogCleanerBackoff = 15 * time.Second
	}
	if c.LogCleanerDedupeBufferSize == 0 {
		c.LogCleanerDedupeBufferSize = 128 << 20
	}
	if c.MaxBrokerPartitions == 0 {
		c.MaxBrokerPartitions = 50000
	}
	if c.MaxOpenSegmentFiles == 0 {
		c.MaxOpenSegmentFiles = 4096
	}
	if c.MaxGroupLagSeries == 0 {
		c.MaxGroupLagSeries = 5000
	}
	if c.ScrubBytesPerSecond == 0 {
		c.ScrubBytesPerSecond = 16 << 20
	}
	if c.ScrubInterval == 0 {
		c.ScrubInterval = 7 * 24 * time.Hour
	}
	if c.RemoteScrubInterval == 0 {
		c.RemoteScrubInterval = 30 * 24 * time.Hour
	}
	if c.LogDirReserveBytes == 0 {
		c.LogDirReserveBytes = 256 << 20
	}
	if c.MetadataReserveBytes == 0 {
		c.MetadataReserveBytes = 128 << 20
	}
	if c.OffsetsRetention == 0 {
		c.OffsetsRetention = 7 * 24 * time.Hour
	}
	if c.OffsetsTopicPartitions == 0 {
		c.OffsetsTopicPartitions = 50
	}
	if c.TransactionTopicPartitions == 0 {
		c.TransactionTopicPartitions = 50
	}
	if c.TransactionTopicReplicationFactor == 0 {
		c.TransactionTopicReplicationFactor = 3
	}
	if c.OffsetsTopicReplicationFactor == 0 {
		c.OffsetsTopicReplicationFactor = 3
	}
	if c.QuotaWindowNum <= 0 {
		c.QuotaWindowNum = 11
	}
	if c.QuotaWindowSize <= 0 {
		c.QuotaWindowSize = time.Second
	}
	if c.ReplicaLagTimeMax == 0 {
		c.ReplicaLagTimeMax = 30 * time.Second
	}
	if c.ReplicaFetchWaitMax == 0 {
		c.ReplicaFetchWaitMax = 500 * time.Millisecond
	}
	if c.TopicDefaults == nil {
		c.TopicDefaults = map[string]string{}
	}
	if c.ReplicaSelector == "" {
		c.ReplicaSelector = RackAwareSelector
	}
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	switch {
	case c.NodeID < 0:
		return fmt.Errorf("broker: node.id must not be negative")
	case c.DataDir == "":
		return fmt.Errorf("broker: a data directory is required")
	case c.AdvertisedHost == "" || c.AdvertisedPort <= 0:
		return fmt.Errorf("broker: an advertised host and port are required")
	case c.SocketRequestMaxBytes < 1024:
		return fmt.Errorf("broker: socket.request.max.bytes is too small")
	case c.AdvertisedHTTPAddr != "" && !validHostPort(c.AdvertisedHTTPAddr):
		return fmt.Errorf("broker: advertised HTTP address %q: want host:port", c.AdvertisedHTTPAddr)
	case c.MaxConnectionCreationRate < 0:
		return fmt.Errorf("broker: max.connection.creation.rate %d: 0 (no bound) or more", c.MaxConnectionCreationRate)
	case c.ReplicaSelector != "" && c.ReplicaSelector != RackAwareSelector && c.ReplicaSelector != LeaderSelector:
		return fmt.Errorf("broker: replica.selector.class %q: %q or %q", c.ReplicaSelector, RackAwareSelector, LeaderSelector)
	}
	for _, mech := range c.SASLMechanisms {
		if mech != sasl.Plain && !sasl.ScramMechanism(mech) {
			return fmt.Errorf("broker: SASL mechanism %q: want %s, %s or %s", mech, sasl.Plain, sasl.ScramSHA256, sasl.ScramSHA512)
		}
	}
	if err := c.checkTLSConfig(); err != nil {
		return err
	}
	for _, p := range c.SuperUsers {
		if typ, name, ok := strings.Cut(p, ":"); !ok || typ == "" || name == "" {
			return fmt.Errorf("broker: super user %q: want a principal, as User:alice", p)
		}
	}
	if c.SASLBootstrapUser != "" && c.SASLBootstrapPassword == "" {
		return fmt.Errorf("broker: the bootstrap SASL user %q needs a password", c.SASLBootstrapUser)
	}
	for name, v := range c.TopicDefaults {
		def := topicDefByBrokerName(name)
		if def == nil {
			return fmt.Errorf("broker: unknown broker-level topic default %q", name)
		}
		if err := def.validate(v); err != nil {
			return fmt.Errorf("broker: %s: %w", name, err)
		}
	}
	return nil
}

func validHostPort(addr string) bool {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return false
	}
	n, err := strconv.Atoi(port)
	return err == nil && n > 0 && n <= 65535
}

func topicDefByBrokerName(name string) *topicConfigDef {
	if name == "" {
		return nil
	}
	for i := range topicConfigDefs {
		if topicConfigDefs[i].synonym == name {
			return &topicConfigDefs[i]
		}
	}
	return nil
}

// securityProtocol is the listener's, as Kafka names it.
func (c *Config) securityProtocol() string {
	switch {
	case c.TLS != nil && len(c.SASLMechanisms) > 0:
		return "SASL_SSL"
	case c.TLS != nil:
		return "SSL"
	case len(c.SASLMechanisms) > 0:
		return "SASL_PLAINTEXT"
	}
	return "PLAINTEXT"
}

// sslClientAuth is ssl.client.auth: whether the TLS listener asks
// clients for a certificate.
func (c *Config) sslClientAuth() string {
	switch {
	case c.TLS == nil || c.TLS.ClientAuth == tls.NoClientCert:
		return "none"
	case c.TLS.ClientAuth == tls.RequireAndVerifyClientCert || c.TLS.ClientAuth == tls.RequireAnyClientCert:
		return "required"
	}
	return "requested"
}

type describedEntry struct {
	name, value string
	typ         kmsg.ConfigType
}

// describe lists the broker's configs for DescribeConfigs.
func (c *Config) describe() []describedEntry {
	entries := []describedEntry{
		{"node.id", strconv.Itoa(int(c.NodeID)), kmsg.ConfigTypeInt},
		{"broker.id", strconv.Itoa(int(c.NodeID)), kmsg.ConfigTypeInt},
		{"log.dirs", c.DataDir, kmsg.ConfigTypeString},
		{"broker.rack", c.Rack, kmsg.ConfigTypeString},
		{"replica.selector.class", kafkaSelectorClass(c.ReplicaSelector), kmsg.ConfigTypeClass},
		{"advertised.listeners", c.securityProtocol() + "://" + net.JoinHostPort(c.AdvertisedHost, strconv.Itoa(int(c.AdvertisedPort))), kmsg.ConfigTypeString},
		{"sasl.enabled.mechanisms", strings.Join(c.SASLMechanisms, ","), kmsg.ConfigTypeList},
		{"ssl.client.auth", c.sslClientAuth(), kmsg.ConfigTypeString},
		{"connections.max.reauth.ms", strconv.FormatInt(c.ConnectionsMaxReauth.Milliseconds(), 10), kmsg.ConfigTypeLong},
		{HTTPAddressConfig, c.AdvertisedHTTPAddr, kmsg.ConfigTypeString},
		{"socket.request.max.bytes", strconv.FormatInt(c.SocketRequestMaxBytes, 10), kmsg.ConfigTypeInt},
		{"queued.max.request.bytes", strconv.FormatInt(c.QueuedMaxRequestBytes, 10), kmsg.ConfigTypeLong},
		{"max.connections", strconv.Itoa(c.MaxConnections), kmsg.ConfigTypeInt},
		{"max.connections.per.ip", strconv.Itoa(max(c.MaxConnectionsPerIP, 0)), kmsg.ConfigTypeInt},
		{"max.connection.creation.rate", strconv.Itoa(c.connectionCreationRate()), kmsg.ConfigTypeInt},
		{"connections.max.idle.ms", strconv.FormatInt(c.ConnectionsMaxIdle.Milliseconds(), 10), kmsg.ConfigTypeLong},
		{"auto.create.topics.enable", strconv.FormatBool(c.AutoCreateTopics), kmsg.ConfigTypeBoolean},
		{"num.partitions", strconv.Itoa(int(c.NumPartitions)), kmsg.ConfigTypeInt},
		{"max.broker.partitions", strconv.FormatInt(c.MaxBrokerPartitions, 10), kmsg.ConfigTypeLong},
		{"default.replication.factor", strconv.Itoa(int(c.DefaultReplicationFactor)), kmsg.ConfigTypeInt},
		{"log.retention.check.interval.ms", strconv.FormatInt(c.LogRetentionCheckInterval.Milliseconds(), 10), kmsg.ConfigTypeLong},
		{"log.cleaner.enable", strconv.FormatBool(c.LogCleanerBackoff > 0), kmsg.ConfigTypeBoolean},
		{"log.cleaner.threads", "1", kmsg.ConfigTypeInt},
		{"log.cleaner.backoff.ms", strconv.FormatInt(max(c.LogCleanerBackoff.Milliseconds(), 0), 10), kmsg.ConfigTypeLong},
		{"log.cleaner.dedupe.buffer.size", strconv.FormatInt(c.LogCleanerDedupeBufferSize, 10), kmsg.ConfigTypeLong},
		{"remote.log.storage.system.enable", strconv.FormatBool(c.Tiering.Bucket != nil), kmsg.ConfigTypeBoolean},
	}
	if c.Tiering.Bucket != nil {
		tc := c.Tiering
		tc.ensureDefaults()
		entries = append(entries, describedEntry{"remote.fetch.max.wait.ms", strconv.FormatInt(tc.RemoteFetchMaxWait.Milliseconds(), 10), kmsg.ConfigTypeInt})
	}
	for _, def := range topicConfigDefs {
		if def.synonym == "" {
			continue // no broker-wide default
		}
		v, ok := c.TopicDefaults[def.synonym]
		if !ok {
			v = def.def
		}
		entries = append(entries, describedEntry{def.synonym, v, def.typ})
	}
	return entries
}

// Broker serves the Kafka protocol for one node.
type Broker struct {
	cfg           Config
	cleaner       *logCleaner
	log           *slog.Logger
	ctx           context.Context
	cancel        context.CancelFunc
	metrics       *brokerMetrics
	requestMemory *byteBudget
	// responseMemory counts the encoded responses not yet sent.
	responseMemory *byteBudget
	// scanBudget bounds the memory of everything that looks inside
	// batches at once: produce validation, ListOffsets by timestamp and
	// the group coordinator's load.
	scanBudget    *recordbatch.Budget
	meta          metaStore
	replicas      *replicaManager
	producerIDs   *producerIDAllocator
	repairs       *repairer
	fetchSessions *fetchSessionCache
	groups        *groupCoordinator
	txns          *txnCoordinator
	// remoteHWs are the high watermarks of partitions led elsewhere,
	// for the consumer group lag metric.
	remoteHWs *remoteHighWatermarks
	// secret is the cluster's inter-broker secret: a connection that
	// presents it may fetch as a follower.
	secret   string
	tier     *tierService // nil: no object store
	fetchers *fetcher.Manager
	// quotas are the replication throttles (KIP-73).
	quotas *replicationQuotas
	// clientQuotas bound what clients produce and fetch (KIP-13).
	clientQuotas *clientQuotaManager
	// connRates bound the connections accepted a second (KIP-612).
	connRates *connRateLimiter

	// applied is the metadata revision the replica manager has applied;
	// appliedCh is closed and replaced whenever it moves.
	appliedMu sync.Mutex
	applied   int64
	appliedCh chan struct{}

	// connsMu guards the listeners being served and the open
	// connections, which Close stops. closing: no more are added.
	connsMu   sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	closing   bool
	connsDone sync.WaitGroup

	// logSpace and metaSpace refuse writes before the log directory's or
	// the embedded etcd's filesystem fills up (nil: no guard).
	logSpace, metaSpace *spaceGuard

	// superUsers are the principals that may do anything (superUserSet).
	superUsers map[string]bool
	// refusedLog: refused requests (malformed, unsupported, not
	// authorized, corrupt batches), one Warn line per interval.
	refusedLog rateLimitedLog
	// connCount and connsPerIP count the accepted connections (under
	// connsMu); limitLog logs the connections refused for the limits.
	connCount  int
	connsPerIP map[string]int
	limitLog   rateLimitedLog

	// wg counts the broker's goroutines, which Close waits for; bgMu
	// orders goBackground's Add before Close's cancel, so that no Add
	// races the Wait.
	wg        sync.WaitGroup
	bgMu      sync.Mutex
	closeOnce sync.Once
	// liveProbe is Live's check of the locks in flight (nil: none).
	liveMu       sync.Mutex
	liveProbe    *lockProbe
	shutdownOnce sync.Once // ControlledShutdown
	// shutdownAsked: ControlledShutdown has asked (or is about to ask)
	// the controller to move this broker out of the ISRs it is in, so
	// its word no longer proves another broker's leadership
	// (tellPeerOfLease).
	shutdownAsked atomic.Bool
	onClose       []func() // run last by Close, in order

	// parkedProduces counts the produce requests parked (park).
	parkedProduces atomic.Int64
}

// New returns a broker over a metadata store. Start it with Start, then
// Serve on a listener.
func newBroker(cfg Config, meta metaStore, log *slog.Logger, reg prometheus.Registerer) (*Broker, error) {
	cfg.EnsureDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	logDir := filepath.Join(cfg.DataDir)
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return nil, fmt.Errorf("broker: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b := &Broker{
		cfg:            cfg,
		log:            log,
		ctx:            ctx,
		cancel:         cancel,
		metrics:        newBrokerMetrics(reg),
		requestMemory:  newByteBudget(cfg.QueuedMaxRequestBytes),
		responseMemory: newByteBudget(cfg.QueuedMaxResponseBytes),
		scanBudget:     recordbatch.NewBudget(recordbatch.DefaultBudgetBytes),
		meta:           meta,
		appliedCh:      make(chan struct{}),
		fetchSessions:  newFetchSessionCache(),
		logSpace:       newSpaceGuard("log directory", logDir, cfg.LogDirReserveBytes),
		metaSpace:      newSpaceGuard("metadata directory", cfg.MetadataDir, cfg.MetadataReserveBytes),
	}
	b.quotas = newReplicationQuotas(&b.cfg, reg)
	b.clientQuotas = newClientQuotaManager(b.cfg.QuotaWindowNum, b.cfg.QuotaWindowSize, reg)
	b.connRates = newConnRateLimiter(b.cfg.QuotaWindowNum, b.cfg.QuotaWindowSize, b.cfg.MaxConnectionCreationRate, reg)
	if em, ok := meta.(*etcdMeta); ok {
		em.space = b.metaSpace
		em.askLogs = b.replicaLogEnds
		em.uncleanElected = b.metrics.uncleanElections.WithLabelValues("operator")
	}
	b.remoteHWs = newRemoteHighWatermarks(b)
	b.superUsers = superUserSet(&b.cfg)
	b.refusedLog.interval = 10 * time.Second
	b.limitLog.interval = 10 * time.Second
	if reg != nil {
		budget := b.scanBudget
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "shale", Name: "scan_budget_bytes_in_use",
			Help: "Bytes of the scan budget (" + strconv.Itoa(recordbatch.DefaultBudgetBytes>>20) + " MiB) taken by produce validation, ListOffsets by timestamp and the group load looking inside batches.",
		}, func() float64 { return float64(budget.InUse()) }))
	}
	b.fetchers = b.newFetchers()
	b.producerIDs = newProducerIDAllocator(meta.allocateProducerIDs)
	b.repairs = newRepairer(b)
	b.replicas = &replicaManager{
		nodeID:       cfg.NodeID,
		dir:          logDir,
		files:        localseg.NewFileCache(cfg.MaxOpenSegmentFiles),
		brokerConfig: cfg.TopicDefaults,
		removal:      newLogRemoval(nil),
		b:            b,
		opened:       make(chan struct{}, 1),
	}
	b.replicas.removal.reapply = func() { b.applyView(b.meta.snapshot()) }
	b.replicas.removal.log = b.log.Error
	var err error
	if b.groups, err = newGroupCoordinator(b); err != nil {
		cancel()
		return nil, err
	}
	if b.txns, err = newTxnCoordinator(b); err != nil {
		cancel()
		return nil, err
	}
	if reg != nil {
		reg.MustRegister(partitionCollector{b}, b.txns.c.Collector())
	}
	b.cleaner = newLogCleaner(b, reg)
	return b, nil
}

// start applies the current metadata (opening every local replica), then
// looks at the partition directories it did not open: those of topics whose
// deletion is recorded are queued for removal, the others kept and reported.
// Then it starts the background loops: metadata following, log removal and
// retention.
func (b *Broker) start() {
	view := b.meta.snapshot()
	if b.tier != nil {
		b.tier.start()
	}
	// The logs open in parallel; the second apply installs them.
	b.applyView(view)
	b.replicas.waitOpening()
	view = b.meta.snapshot()
	b.applyView(view)
	b.replicas.scanStrays(view)
	changes := b.meta.subscribe(b.ctx)
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		b.replicas.removal.run(b.ctx)
	}()
	b.wg.Add(5)
	go func() {
		defer b.wg.Done()
		b.checkISRs()
	}()
	go func() {
		defer b.wg.Done()
		t := time.NewTicker(hwCheckpointInterval)
		defer t.Stop()
		for {
			select {
			case <-b.ctx.Done():
				return
			case <-t.C:
				b.replicas.checkpointHighWatermarks()
			}
		}
	}()
	go func() {
		defer b.wg.Done()
		b.watchStorage()
	}()
	b.wg.Add(2)
	go func() {
		defer b.wg.Done()
		b.scrubLoop()
	}()
	go func() {
		defer b.wg.Done()
		b.repairs.run(b.ctx)
	}()
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		b.cleaner.run(b.ctx)
	}()
	go func() {
		defer b.wg.Done()
		// Metadata changes and logs opened in the background (which a
		// later apply installs) are applied in turn.
		for {
			select {
			case _, ok := <-changes:
				if !ok {
					return
				}
			case <-b.replicas.opened:
			}
			b.applyView(b.meta.snapshot())
		}
	}()
	go func() {
		defer b.wg.Done()
		t := time.NewTicker(b.cfg.LogRetentionCheckInterval)
		defer t.Stop()
		for {
			select {
			case <-b.ctx.Done():
				return
			case now := <-t.C:
				b.replicas.applyRetention(now)
			}
		}
	}()
}

// scrubLoop verifies every hosted partition's sealed segments about once
// per ScrubInterval, reading at most ScrubBytesPerSecond: a partition is
// due one interval after its last complete scrub, which its log records on
// disk (so restarts do not put it off; one never scrubbed is due at once),
// and the due ones go oldest first. Damage newly found is logged and
// recorded by the log and counted (OnDamage) in shale_lost_ranges_total.
// Then the remote logs of the partitions this broker leads get theirs,
// about once per RemoteScrubInterval (tierService.scrubRemote).
func (b *Broker) scrubLoop() {
	local, remote := b.cfg.ScrubInterval >= 0, b.cfg.RemoteScrubInterval >= 0 && b.tier != nil
	if !local && !remote {
		return
	}
	every := time.Minute
	if local {
		every = min(every, b.cfg.ScrubInterval)
	}
	if remote {
		every = min(every, b.cfg.RemoteScrubInterval)
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-b.ctx.Done():
			return
		case <-t.C:
		}
		if local {
			b.scrubLocal(time.Now())
		}
		if remote && b.ctx.Err() == nil {
			b.tier.scrubRemote(b.ctx, time.Now())
		}
	}
}

// scrubLocal scrubs the hosted partitions' logs that are due, the longest
// waiting first.
func (b *Broker) scrubLocal(now time.Time) {
	type due struct {
		p    *partition
		last time.Time
	}
	var ps []due
	for _, p := range b.replicas.all() {
		if last := p.log.LastScrubbed(); now.Sub(last) >= b.cfg.ScrubInterval {
			ps = append(ps, due{p, last})
		}
	}
	slices.SortFunc(ps, func(a, b due) int { return a.last.Compare(b.last) })
	for _, d := range ps {
		p := d.p
		ds, err := p.log.Scrub(b.ctx, b.cfg.ScrubBytesPerSecond)
		if b.ctx.Err() != nil {
			return
		}
		if err != nil {
			b.log.Warn("scrubbing a partition log", "topic", p.topic, "partition", p.index, "err", err)
		}
		if len(ds) > 0 { // counted by the log's OnDamage
			b.log.Error("sealed segments of a partition hold corrupt batches", "topic", p.topic, "partition", p.index, "ranges", len(ds))
		}
	}
}

// watchStorage refreshes the free-space guards and retries offline
// partitions when their backoff has passed, so that the broker recovers
// by itself when space returns.
func (b *Broker) watchStorage() {
	t := time.NewTicker(minOfflineBackoff / 2)
	defer t.Stop()
	for {
		select {
		case <-b.ctx.Done():
			return
		case now := <-t.C:
			b.logSpace.refresh()
			b.metaSpace.refresh()
			retry := b.replicas.offline.anyDue(now)
			for _, p := range b.replicas.all() {
				if !retry && p.log.Offline() != nil && b.replicas.offline.errOf(partitionKey{p.topic, p.index}) == nil {
					retry = true
				}
			}
			if retry {
				b.applyView(b.meta.snapshot())
			}
		}
	}
}

func (b *Broker) applyView(view *metaView) {
	b.quotas.apply(view)
	b.clientQuotas.apply(view)
	b.connRates.apply(view)
	b.replicas.apply(view)
	b.appliedMu.Lock()
	if view.revision > b.applied {
		b.applied = view.revision
		close(b.appliedCh)
		b.appliedCh = make(chan struct{})
	}
	b.appliedMu.Unlock()
}

// waitApplied waits until the replica manager has applied metadata at
// revision rev or later, so that a topic this broker just created is
// served when the request that created it is answered.
func (b *Broker) waitApplied(ctx context.Context, rev int64) error {
	if err := b.meta.waitRevision(ctx, rev); err != nil {
		return err
	}
	for {
		b.appliedMu.Lock()
		done, ch := b.applied >= rev, b.appliedCh
		b.appliedMu.Unlock()
		if done {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// waitOpened waits, after a committed write that adds partitions to topic
// (its creation, CreatePartitions), until this broker's metadata has it
// and, for at most three quarters of the time ctx leaves, until the replica
// manager has opened and installed the topic's new logs (a time that grows
// with their count; the logs of other topics opening meanwhile are not
// waited for). When the request's deadline would pass first (or passes
// while this broker's metadata catches up) it answers nil: the write
// stands and the partitions are served once their logs are open (clients
// retry NOT_LEADER_OR_FOLLOWER meanwhile), which tells the client the
// truth where REQUEST_TIMED_OUT would have it retry into
// TOPIC_ALREADY_EXISTS.
func (b *Broker) waitOpened(ctx context.Context, rev int64, topic string) error {
	if err := b.meta.waitRevision(ctx, rev); err != nil {
		if ctx.Err() != nil && errors.Is(err, context.DeadlineExceeded) {
			// The write stands all the same (a commit that was
			// settled by re-reading close to the deadline, say).
			b.log.Info("answering before this broker's metadata showed the change; it follows", "topic", topic, "revision", rev)
			return nil
		}
		return err
	}
	wctx := ctx
	if dl, ok := ctx.Deadline(); ok {
		var cancel context.CancelFunc
		wctx, cancel = context.WithTimeout(ctx, time.Until(dl)*3/4)
		defer cancel()
	}
	err := b.waitApplied(wctx, rev)
	for err == nil {
		busy, settled := b.replicas.openingTopic(topic)
		if !busy {
			break
		}
		select {
		case <-settled:
		case <-wctx.Done():
			err = wctx.Err()
		}
	}
	if err != nil && ctx.Err() == nil && wctx.Err() != nil {
		b.log.Info("answering before this broker opened every new partition log; they open in the background", "topic", topic, "revision", rev)
		return nil
	}
	return err
}

// Serve accepts connections until the listener is closed or the broker
// closes (Close closes it).
func (b *Broker) Serve(ln net.Listener) error {
	b.connsMu.Lock()
	if b.closing {
		b.connsMu.Unlock()
		return nil
	}
	if b.listeners == nil {
		b.listeners = map[net.Listener]struct{}{}
	}
	b.listeners[ln] = struct{}{}
	b.connsMu.Unlock()
	defer func() {
		b.connsMu.Lock()
		delete(b.listeners, ln)
		b.connsMu.Unlock()
	}()
	for {
		nc, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || b.ctx.Err() != nil {
				return nil
			}
			return err
		}
		// max.connection.creation.rate: accepted late (conn_rate.go).
		if !b.waitAcceptRate() {
			nc.Close()
			return nil
		}
		ip := connIP(nc)
		if reason := b.admitConn(ip); reason != "" {
			// Counted before the close, so that a client that sees
			// its connection closed finds it counted.
			b.metrics.connectionsRefused.Inc()
			nc.Close()
			b.limitLog.log(b.log, "refused a connection: "+reason, "remote", nc.RemoteAddr().String())
			continue
		}
		// connection_creation_rate: held unserved, then closed.
		if b.throttleConnIP(nc, ip) {
			continue
		}
		if tc, ok := nc.(*net.TCPConn); ok {
			tc.SetNoDelay(true)
		}
		if !b.goBackground(func() {
			defer b.releaseConn(ip)
			if b.cfg.TLS != nil {
				tc, err := b.serverTLS(nc)
				if err != nil {
					nc.Close()
					b.refusedLog.log(b.log, "TLS handshake failed: closing the connection", "remote", nc.RemoteAddr().String(), "err", err)
					return
				}
				nc = tc
			}
			b.serveConn(nc)
		}) {
			b.releaseConn(ip)
			nc.Close()
			return nil
		}
	}
}

// connIP is the address a connection comes from (its limit's key).
func connIP(nc net.Conn) string {
	addr := nc.RemoteAddr().String()
	if host, _, err := net.SplitHostPort(addr); err == nil {
		return host
	}
	return addr
}

// admitConn counts a new connection from ip, or says which limit
// (max.connections, max.connections.per.ip) refuses it.
func (b *Broker) admitConn(ip string) string {
	b.connsMu.Lock()
	defer b.connsMu.Unlock()
	if b.cfg.MaxConnections > 0 && b.connCount >= b.cfg.MaxConnections {
		return fmt.Sprintf("max.connections (%d) reached", b.cfg.MaxConnections)
	}
	if b.cfg.MaxConnectionsPerIP > 0 && b.connsPerIP[ip] >= b.cfg.MaxConnectionsPerIP {
		return fmt.Sprintf("max.connections.per.ip (%d) reached for %s", b.cfg.MaxConnectionsPerIP, ip)
	}
	if b.connsPerIP == nil {
		b.connsPerIP = map[string]int{}
	}
	b.connCount++
	b.connsPerIP[ip]++
	return ""
}

// releaseConn uncounts a connection admitted by admitConn.
func (b *Broker) releaseConn(ip string) {
	b.connsMu.Lock()
	defer b.connsMu.Unlock()
	b.connCount--
	if b.connsPerIP[ip]--; b.connsPerIP[ip] <= 0 {
		delete(b.connsPerIP, ip)
	}
}

// goBackground runs fn in a goroutine that Close waits for, unless the
// broker is closing (it reports whether fn was started).
func (b *Broker) goBackground(fn func()) bool {
	b.bgMu.Lock()
	defer b.bgMu.Unlock()
	if b.ctx.Err() != nil {
		return false
	}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		fn()
	}()
	return true
}

// trackConn adds (or removes) a connection to the set Close stops. Adding
// fails once the broker is closing.
func (b *Broker) trackConn(c *conn, add bool) bool {
	b.connsMu.Lock()
	defer b.connsMu.Unlock()
	if !add {
		delete(b.conns, c)
		b.connsDone.Done()
		return true
	}
	if b.closing {
		return false
	}
	if b.conns == nil {
		b.conns = map[*conn]struct{}{}
	}
	b.conns[c] = struct{}{}
	b.connsDone.Add(1)
	return true
}

// Close stops the broker within Config.ShutdownTimeout whatever clients
// do: it stops accepting (closing the listeners given to Serve), stops
// reading requests, lets the requests in flight finish or fail (waiting
// ones give up) and their responses be written, closes every socket still
// open at the deadline, then flushes and closes every log with its clean
// marker. It logs each step. Safe to call more than once. First, unless
// ControlledShutdown ran already, it hands its partitions over to other
// replicas (Config.ControlledShutdownTimeout).
func (b *Broker) Close() error {
	b.closeOnce.Do(func() {
		if b.cfg.ControlledShutdownTimeout > 0 {
			ctx, cancel := context.WithTimeout(context.Background(), b.cfg.ControlledShutdownTimeout)
			b.ControlledShutdown(ctx)
			cancel()
		}
		start := time.Now()
		deadline := start.Add(b.cfg.ShutdownTimeout)
		b.connsMu.Lock()
		b.closing = true
		for ln := range b.listeners {
			ln.Close()
		}
		n := len(b.conns)
		b.connsMu.Unlock()
		b.log.Info("shutting down: listeners closed, finishing requests in flight", "connections", n, "timeout", b.cfg.ShutdownTimeout)
		b.bgMu.Lock()
		b.cancel()
		b.bgMu.Unlock()
		b.connsMu.Lock()
		for c := range b.conns {
			c.stopReading()
		}
		b.connsMu.Unlock()
		done := make(chan struct{})
		go func() {
			b.connsDone.Wait()
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(time.Until(deadline)):
			b.connsMu.Lock()
			b.log.Warn("shutting down: closing connections still open at the deadline", "connections", len(b.conns))
			for c := range b.conns {
				c.nc.Close()
			}
			b.connsMu.Unlock()
			<-done
		}
		b.fetchers.Close()
		b.wg.Wait()
		if b.tier != nil {
			// The archive loops end with b.ctx; wait for them
			// before their logs close.
			b.tier.close()
		}
		b.log.Info("shutting down: connections closed; flushing and closing logs")
		b.replicas.closeAll()
		for _, fn := range b.onClose {
			fn()
		}
		b.log.Info("shut down", "took", time.Since(start).Round(time.Millisecond))
	})
	return nil
}

// partitionByName finds a hosted partition. A partition the metadata knows
// but this broker does not host is NOT_LEADER_OR_FOLLOWER; an unknown one
// UNKNOWN_TOPIC_OR_PARTITION.
func (b *Broker) partitionByName(topic string, index int32) (*partition, error) {
	if p, ok := b.replicas.lookupByName(topic, index); ok {
		return p, nil
	}
	if err := b.replicas.offline.errOf(partitionKey{topic, index}); err != nil {
		return nil, err
	}
	view := b.meta.snapshot()
	if r := view.unreadableReason(topic, index); r != "" {
		return nil, fmt.Errorf("%w: %s", errLeaderNotAvailable, r)
	}
	if tv := view.topics[topic]; tv != nil && index >= 0 && int(index) < len(tv.partitions) {
		return nil, errNotLeader
	}
	return nil, errUnknownTopic
}

func (b *Broker) partitionByID(id [16]byte, index int32) (*partition, error) {
	if p, ok := b.replicas.lookupByID(id, index); ok {
		return p, nil
	}
	if tv := b.meta.snapshot().topicsByID[id]; tv != nil && index >= 0 && int(index) < len(tv.partitions) {
		if err := b.replicas.offline.errOf(partitionKey{tv.name, index}); err != nil {
			return nil, err
		}
		return nil, errNotLeader
	}
	return nil, errUnknownTopic
}
