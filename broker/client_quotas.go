package broker

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/shale-log/shale/broker/clientquota"
	"github.com/shale-log/shale/metadata"
)

// Client quotas (Kafka's KIP-13 and KIP-55, throttled as KIP-219 says):
// producer_byte_rate and consumer_byte_rate, set with kafka-configs
// --entity-type users/clients (AlterClientQuotas) and kept in etcd,
// bound the bytes a client produces and fetches on each broker. A
// produce request's bytes are counted when it is read; past the quota,
// its answer carries a throttle time and the broker reads nothing more
// from the connection until it has passed (the client, told, waits too).
// A fetch whose records would take the client past its quota is answered
// without them, with the throttle time, and its bytes are not counted.
// request_percentage bounds the time the broker spends on a client's
// requests, as a percentage of one thread's (chargeRequestTime), and
// controller_mutation_rate the partitions it creates and deletes
// (mutationGate). Rates are measured as Kafka measures them (clientquota.Rate). A client
// is the user it authenticated as (client_auth.go), or user ANONYMOUS, as
// Kafka names an unauthenticated principal; brokers' own connections
// (replication) are never throttled by client quotas.

// anonymousUser is the user of a connection that did not authenticate.
const anonymousUser = "ANONYMOUS"

// clientQuotaManager measures clients against their quotas.
type clientQuotaManager struct {
	samples int
	window  time.Duration
	// quotas is the latest metadata's (nil or empty: none, and nothing is
	// measured).
	quotas atomic.Pointer[map[metadata.QuotaEntity]map[string]float64]

	mu    sync.Mutex
	rates map[quotaRateKey]*quotaRate
	// buckets are the clients' controller_mutation_rate buckets.
	buckets map[clientquota.Sensor]*mutationBucket
	swept   time.Time

	throttled    *prometheus.CounterVec
	throttleSecs *prometheus.CounterVec
}

// quotaRateKey names one measured rate: a quota key and the names its
// entity keeps it for.
type quotaRateKey struct {
	key    string
	sensor clientquota.Sensor
}

type quotaRate struct {
	rate *clientquota.Rate
	used time.Time
}

type mutationBucket struct {
	bucket clientquota.Bucket
	used   time.Time
}

func newClientQuotaManager(samples int, window time.Duration, reg prometheus.Registerer) *clientQuotaManager {
	m := &clientQuotaManager{
		samples: samples, window: window,
		rates:   map[quotaRateKey]*quotaRate{},
		buckets: map[clientquota.Sensor]*mutationBucket{},
		throttled: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "shale_client_quota_throttled_total",
			Help: "Responses that carried a throttle time because the client exceeded a quota, by kind: produce and fetch (producer_byte_rate, consumer_byte_rate; fetches throttled are answered without records), mutation (controller_mutation_rate: CreateTopics, CreatePartitions, DeleteTopics), request (request_percentage: the time the broker spent on the client's requests)."}, []string{"kind"}),
		throttleSecs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "shale_client_quota_throttle_seconds_total",
			Help: "The throttle time of those responses, summed: how long the broker held throttled clients' connections."}, []string{"kind"}),
	}
	for _, kind := range []string{"produce", "fetch", "mutation", "request"} {
		m.throttled.WithLabelValues(kind)
		m.throttleSecs.WithLabelValues(kind)
	}
	if reg != nil {
		reg.MustRegister(m.throttled, m.throttleSecs)
	}
	return m
}

// apply takes the quotas of a new metadata view.
func (m *clientQuotaManager) apply(view *metaView) {
	q := view.clientQuotas
	m.quotas.Store(&q)
}

// charge counts n (bytes, or request time) of a client's traffic against
// key's quota at now, and returns the throttle time it costs (0 within
// the quota, or with no quota) and the rate charged (nil when none:
// refund then does nothing).
func (m *clientQuotaManager) charge(key, user, clientID string, n float64, now time.Time) (time.Duration, *quotaRate) {
	qp := m.quotas.Load()
	if qp == nil || len(*qp) == 0 {
		return 0, nil
	}
	bound, sensor, ok := clientquota.Resolve(*qp, user, clientID, key)
	if !ok {
		return 0, nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	rk := quotaRateKey{key: key, sensor: sensor}
	r := m.rates[rk]
	if r == nil {
		m.sweepLocked(now)
		r = &quotaRate{rate: clientquota.NewRate(m.samples, m.window)}
		m.rates[rk] = r
	}
	r.used = now
	r.rate.Record(now, n)
	return r.rate.Throttle(now, bound), r
}

// refund takes back n bytes charged to r (a fetch answered without its
// records).
func (m *clientQuotaManager) refund(r *quotaRate, n int64, now time.Time) {
	if r == nil {
		return
	}
	m.mu.Lock()
	r.rate.Record(now, -float64(n))
	m.mu.Unlock()
}

// sweepLocked forgets, at most once per window, the rates of clients idle
// for longer than the samples span: their next bytes start afresh, as
// they would have anyway. Requires mu.
func (m *clientQuotaManager) sweepLocked(now time.Time) {
	if now.Sub(m.swept) < m.window {
		return
	}
	m.swept = now
	idle := time.Duration(m.samples) * m.window
	for k, r := range m.rates {
		if now.Sub(r.used) > idle {
			delete(m.rates, k)
		}
	}
	for k, b := range m.buckets {
		if now.Sub(b.used) > idle { // full again: as good as new
			delete(m.buckets, k)
		}
	}
}

// mutations applies a client's controller_mutation_rate (KIP-599) to
// creating or deleting n partitions at now. Strict (the request versions
// KIP-599 gave THROTTLING_QUOTA_EXCEEDED), it refuses them while the
// client is over its quota; otherwise, or within the quota, it takes
// them, even past it. It returns whether they go ahead, and the throttle
// the client owes after (0: none, or no quota).
func (m *clientQuotaManager) mutations(user, clientID string, n int, strict bool, now time.Time) (bool, time.Duration) {
	qp := m.quotas.Load()
	if qp == nil || len(*qp) == 0 {
		return true, 0
	}
	quota, sensor, ok := clientquota.Resolve(*qp, user, clientID, clientquota.ControllerMutationRate)
	if !ok {
		return true, 0
	}
	burst := quota * float64(m.samples) * m.window.Seconds()
	m.mu.Lock()
	defer m.mu.Unlock()
	b := m.buckets[sensor]
	if b == nil {
		m.sweepLocked(now)
		b = &mutationBucket{}
		m.buckets[sensor] = b
	}
	b.used = now
	if d := b.bucket.Throttle(now, quota, burst); d > 0 && strict {
		return false, d
	}
	b.bucket.Take(now, float64(n), quota, burst)
	return true, b.bucket.Throttle(now, quota, burst)
}

// counted records a throttle in the metrics.
func (m *clientQuotaManager) counted(kind string, d time.Duration) {
	m.throttled.WithLabelValues(kind).Inc()
	m.throttleSecs.WithLabelValues(kind).Add(d.Seconds())
}

// quotaUser is the connection's user for client quotas, and false for a
// broker's connection, which client quotas do not bound.
func (c *conn) quotaUser() (string, bool) {
	if c == nil || c.peer.Load() != 0 {
		return "", false
	}
	if u := c.user.Load(); u != nil {
		return *u, true
	}
	return anonymousUser, true
}

// chargeProduce counts a produce request's frame against the client's
// producer_byte_rate, mutes the connection for the throttle it costs, and
// returns that throttle.
func (c *conn) chargeProduce(clientID string, n int, now time.Time) time.Duration {
	user, ok := c.quotaUser()
	if !ok {
		return 0
	}
	d, _ := c.b.clientQuotas.charge(clientquota.ProducerByteRate, user, clientID, float64(n), now)
	if d > 0 {
		c.b.clientQuotas.counted("produce", d)
		c.mute(now.Add(d))
	}
	return d
}

// chargeFetch counts the n bytes of records a fetch answer would carry
// against the client's consumer_byte_rate. Within the quota they stay
// counted and it returns 0; past it, they are taken back (the answer goes
// without them), the connection is muted for the throttle, and it
// returns the throttle.
func (c *conn) chargeFetch(clientID string, n int64) time.Duration {
	user, ok := c.quotaUser()
	if !ok {
		return 0
	}
	now := time.Now()
	d, r := c.b.clientQuotas.charge(clientquota.ConsumerByteRate, user, clientID, float64(n), now)
	if d > 0 {
		c.b.clientQuotas.refund(r, n, now)
		c.b.clientQuotas.counted("fetch", d)
		c.mute(now.Add(d))
	}
	return d
}

// active reports whether any client quota is set (only then is request
// time measured).
func (m *clientQuotaManager) active() bool {
	qp := m.quotas.Load()
	return qp != nil && len(*qp) > 0
}

// spent adds the time the reader spent on a request read at read to what
// the connection's client owes its request_percentage quota
// (chargeRequestTime), while any client quota is set.
func (c *conn) spent(read time.Time) {
	if c.b.clientQuotas.active() {
		c.requestTime += time.Since(read)
	}
}

// chargeRequestTime counts the time the reader spent on the client's
// requests since the last charge against its request_percentage (KIP-124:
// a percentage of one thread's time, 200 for two), mutes the connection
// for the throttle it costs, and returns that throttle, which the answer
// to the request read now carries: Kafka charges a request's time when it
// is done and throttles its answer, Shale charges it at the next request
// and throttles that one's, the same time, one request later. The time
// is the reader's, from the frame read to its handler's return
// (decoding, validation, the handler's own work), not time spent
// waiting: as Kafka counts its threads' time, not a long poll's or an
// acks=all wait.
func (c *conn) chargeRequestTime(clientID string, now time.Time) time.Duration {
	spent := c.requestTime
	if spent == 0 {
		return 0
	}
	c.requestTime = 0
	user, ok := c.quotaUser()
	if !ok {
		return 0
	}
	d, _ := c.b.clientQuotas.charge(clientquota.RequestPercentage, user, clientID, spent.Seconds()*100, now)
	if d > 0 {
		c.b.clientQuotas.counted("request", d)
		c.mute(now.Add(d))
	}
	return d
}

// mutationGate is how a request that creates or deletes partitions meets
// its client's controller_mutation_rate (KIP-599): admit, before each
// topic's change, takes its n partitions or refuses them
// (errThrottlingQuotaExceeded, only when strict: in the request versions
// that may be refused, see clientQuotaManager.mutations); throttle, when
// the request is done, mutes the connection for what the client owes
// then, counts it, and returns it for the answer (setThrottle).
// Brokers' own requests are not bound.
func (r *request) mutationGate(strict bool) (admit func(n int) error, throttle func() time.Duration) {
	var owed time.Duration
	user, bound := r.conn.quotaUser()
	admit = func(n int) error {
		if !bound {
			return nil
		}
		ok, d := r.conn.b.clientQuotas.mutations(user, r.header.clientID, n, strict, time.Now())
		owed = d
		if !ok {
			return errThrottlingQuotaExceeded
		}
		return nil
	}
	throttle = func() time.Duration {
		if owed > 0 {
			r.conn.b.clientQuotas.counted("mutation", owed)
			r.conn.mute(time.Now().Add(owed))
		}
		return owed
	}
	return admit, throttle
}

// errThrottlingQuotaExceeded refuses a topic's partitions to a client over
// its controller_mutation_rate.
var errThrottlingQuotaExceeded = errors.New("broker: the client's controller_mutation_rate quota is exceeded")

// mute has the reader read nothing more from the connection until t.
func (c *conn) mute(t time.Time) {
	for {
		cur := c.mutedUntil.Load()
		if t.UnixNano() <= cur || c.mutedUntil.CompareAndSwap(cur, t.UnixNano()) {
			return
		}
	}
}

// muteLeft is how long the connection stays muted.
func (c *conn) muteLeft() time.Duration {
	until := c.mutedUntil.Load()
	if until == 0 {
		return 0
	}
	return time.Until(time.Unix(0, until))
}

// setThrottle puts d in resp, if it has a throttle field.
func setThrottle(resp kmsg.Response, d time.Duration) {
	if d <= 0 {
		return
	}
	if st, ok := resp.(kmsg.SetThrottleResponse); ok {
		st.SetThrottle(int32(min(d.Milliseconds(), 1<<31-1)))
	}
}
