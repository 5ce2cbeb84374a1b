package objectstore

import (
	"context"
	"errors"
	"io"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the Prometheus collectors of instrumented buckets: calls by
// operation and result, bytes moved, and latency (a Get's to its response,
// not through its body). Expected outcomes (not found, a failed
// precondition) have results of their own and are not errors.
//
// A call is not what a store bills: an S3 bucket's calls also count the
// HTTP requests they make, by S3 operation and billing class
// (shale_objectstore_s3_requests_total): a multipart upload is one put
// call but a request to create it, one per part and one to complete it,
// and every retried attempt is a request of its own.
//
// With AttributeToTopics, the billed requests are also counted by the
// topic whose objects they touch (shale_objectstore_topic_requests_total),
// the base of a topic's object-store cost.
type Metrics struct {
	requests      *prometheus.CounterVec
	bytes         *prometheus.CounterVec
	seconds       *prometheus.HistogramVec
	s3Requests    *prometheus.CounterVec
	getResumes    prometheus.Counter
	topicRequests *prometheus.CounterVec // topic, class
	// topicOf names the topic a key or list prefix belongs to (ok
	// false: none); nil counts no topic.
	topicOf func(key string) (topic string, ok bool)
}

// billingClasses are the classes of S3RequestClass.
var billingClasses = []string{"put", "get", "free"}

// NewMetrics registers the collectors with reg (nil: unregistered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "shale_objectstore_requests_total",
			Help: "Object store calls by operation and result (ok, not_found, precondition_failed, invalid, error)."},
			[]string{"op", "result"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "shale_objectstore_bytes_total",
			Help: "Bytes written by puts and read from get bodies."}, []string{"op"}),
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "shale_objectstore_request_seconds",
			Help:    "Object store call latency (a get's until its body starts).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 18)}, []string{"op"}),
		s3Requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "shale_objectstore_s3_requests_total",
			Help: "HTTP requests an S3 bucket's calls made that the store answered (each attempt, retries included), " +
				"by S3 operation and billing class: put (PUT, COPY, POST, LIST: PutObject, CreateMultipartUpload, UploadPart, " +
				"CompleteMultipartUpload, DeleteObjects, ListObjectsV2...), get (GET, HEAD and the rest), free (DELETE: DeleteObject, AbortMultipartUpload)."},
			[]string{"operation", "class"}),
		getResumes: prometheus.NewCounter(prometheus.CounterOpts{Name: "shale_objectstore_get_resumes_total",
			Help: "GET bodies of an S3 bucket that the connection ended early (an unexpected EOF or a reset), resumed with a GET of the rest: a store that drops transfers."}),
		topicRequests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "shale_objectstore_topic_requests_total",
			Help: "Requests the store bills, by the topic whose objects they touch and billing class (as shale_objectstore_s3_requests_total): " +
				"for an S3 bucket each HTTP request it answered, retries and multipart parts included (a batch delete's by its first key's topic); " +
				"for other stores each call (list is a put, head a get, delete free), and each key of a batch delete (free). " +
				"Requests for objects of no topic (the archive descriptor) are not counted here."},
			[]string{"topic", "class"}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.bytes, m.seconds, m.s3Requests, m.getResumes, m.topicRequests)
	}
	return m
}

// AttributeToTopics counts the billed requests of the calls through m's
// buckets by topic: topicOf names the topic of a call's key (or list
// prefix), ok false for a key of no topic. Call it before Wrap. A batch
// delete (DeleteMany) of an S3 bucket is billed to its first key's topic
// (see instrumented.DeleteMany).
func (m *Metrics) AttributeToTopics(topicOf func(key string) (topic string, ok bool)) {
	m.topicOf = topicOf
}

// ForgetTopic drops a topic's series (its objects are deleted).
func (m *Metrics) ForgetTopic(topic string) {
	for _, c := range billingClasses {
		m.topicRequests.DeleteLabelValues(topic, c)
	}
}

// topicKey is the context key of the topic a call's requests are billed
// to: an S3 bucket reads it in the middleware that counts attempts.
type topicKey struct{}

// billedTopic is the topic ctx bills its requests to ("" and false: none).
func billedTopic(ctx context.Context) (string, bool) {
	t, ok := ctx.Value(topicKey{}).(string)
	return t, ok
}

// countTopicRequest counts one billed request of class for ctx's topic.
func (m *Metrics) countTopicRequest(ctx context.Context, class string) {
	if t, ok := billedTopic(ctx); ok {
		m.topicRequests.WithLabelValues(t, class).Inc()
	}
}

// Wrap returns b instrumented with m. When b is an S3 bucket (under a
// prefix or not), its HTTP requests are counted into m from now on.
func (m *Metrics) Wrap(b Bucket) Bucket {
	counted := false
	if rc, ok := b.(requestCounted); ok {
		counted = rc.countRequests(m)
	}
	return &instrumented{b: b, m: m, perCall: !counted}
}

// requestCounted is a bucket that may count the requests it sends (and
// the bodies it resumes) into m's S3 counters: countRequests reports
// whether it does.
type requestCounted interface {
	countRequests(m *Metrics) bool
}

// S3RequestClass is the billing class of an S3 operation, as S3's price
// list groups requests: "put" for PUT, COPY, POST and LIST requests
// (DeleteObjects, a batch delete, is a POST), "free" for DELETE and the
// cancellation of a multipart upload, "get" for GET, HEAD and every other
// request.
func S3RequestClass(operation string) string {
	switch {
	case operation == "DeleteObjects":
		return "put"
	case strings.HasPrefix(operation, "Delete"), operation == "AbortMultipartUpload":
		return "free"
	case strings.HasPrefix(operation, "Put"), strings.HasPrefix(operation, "Copy"), strings.HasPrefix(operation, "List"),
		strings.HasPrefix(operation, "Create"), strings.HasPrefix(operation, "Upload"), operation == "CompleteMultipartUpload",
		operation == "RestoreObject":
		return "put"
	}
	return "get"
}

type instrumented struct {
	b Bucket
	m *Metrics
	// perCall: the bucket counts no requests of its own, so each call
	// is one billed request of its topic.
	perCall bool
}

// bill attributes the call on key to its topic: the context carries it
// to an S3 bucket's request counter, or the call is counted here as one
// request of class.
func (i *instrumented) bill(ctx context.Context, key, class string) context.Context {
	if i.m.topicOf == nil {
		return ctx
	}
	t, ok := i.m.topicOf(key)
	if !ok {
		return ctx
	}
	ctx = context.WithValue(ctx, topicKey{}, t)
	if i.perCall {
		i.m.countTopicRequest(ctx, class)
	}
	return ctx
}

var _ Bucket = (*instrumented)(nil)

func result(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, ErrNotFound):
		return "not_found"
	case errors.Is(err, ErrPreconditionFailed):
		return "precondition_failed"
	case errors.Is(err, ErrInvalidKey), errors.Is(err, ErrInvalidRange):
		return "invalid"
	}
	return "error"
}

func (i *instrumented) observe(op string, start time.Time, err error) {
	i.m.requests.WithLabelValues(op, result(err)).Inc()
	i.m.seconds.WithLabelValues(op).Observe(time.Since(start).Seconds())
}

func (i *instrumented) Put(ctx context.Context, key string, r io.Reader, size int64, opts PutOptions) (Attrs, error) {
	start := time.Now()
	ctx = i.bill(ctx, key, "put")
	a, err := i.b.Put(ctx, key, r, size, opts)
	i.observe("put", start, err)
	if err == nil {
		i.m.bytes.WithLabelValues("put").Add(float64(size))
	}
	return a, err
}

func (i *instrumented) Get(ctx context.Context, key string, off, length int64) (io.ReadCloser, error) {
	start := time.Now()
	ctx = i.bill(ctx, key, "get")
	body, err := i.b.Get(ctx, key, off, length)
	i.observe("get", start, err)
	if err != nil {
		return nil, err
	}
	return &countingBody{ReadCloser: body, c: i.m.bytes.WithLabelValues("get")}, nil
}

type countingBody struct {
	io.ReadCloser
	c prometheus.Counter
}

func (c *countingBody) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.c.Add(float64(n))
	return n, err
}

func (i *instrumented) Head(ctx context.Context, key string) (Attrs, error) {
	start := time.Now()
	ctx = i.bill(ctx, key, "get")
	a, err := i.b.Head(ctx, key)
	i.observe("head", start, err)
	return a, err
}

func (i *instrumented) List(ctx context.Context, prefix string, fn func(Attrs) error) error {
	return i.listing(ctx, prefix, func(ctx context.Context, stop func(error) error) error {
		return i.b.List(ctx, prefix, func(a Attrs) error { return stop(fn(a)) })
	})
}

func (i *instrumented) ListAfter(ctx context.Context, prefix, after string, fn func(Attrs) error) error {
	return i.listing(ctx, prefix, func(ctx context.Context, stop func(error) error) error {
		return i.b.ListAfter(ctx, prefix, after, func(a Attrs) error { return stop(fn(a)) })
	})
}

func (i *instrumented) ListDirs(ctx context.Context, prefix string, fn func(string) error) error {
	return i.listing(ctx, prefix, func(ctx context.Context, stop func(error) error) error {
		return i.b.ListDirs(ctx, prefix, func(d string) error { return stop(fn(d)) })
	})
}

// listing observes one listing as a "list" call. run passes each of its
// callback's results through stop, so that a listing the caller's
// callback stopped counts as a success.
func (i *instrumented) listing(ctx context.Context, prefix string, run func(ctx context.Context, stop func(error) error) error) error {
	start := time.Now()
	ctx = i.bill(ctx, prefix, "put")
	var stopped error
	err := run(ctx, func(err error) error {
		stopped = err
		return err
	})
	if err != nil && err == stopped {
		i.observe("list", start, nil) // the caller stopped it
	} else {
		i.observe("list", start, err)
	}
	return err
}

func (i *instrumented) Delete(ctx context.Context, key string) error {
	start := time.Now()
	ctx = i.bill(ctx, key, "free")
	err := i.b.Delete(ctx, key)
	i.observe("delete", start, err)
	return err
}

// DeleteMany is one "delete_many" call, billed to topics as what replaces
// the Deletes of its keys: a store that counts no requests of its own
// bills each key as the free request of its Delete, to the key's topic;
// an S3 bucket bills the requests it sends (DeleteObjects, a put each) to
// the topic of the first key, as its callers (tiering) delete one topic's
// objects a call.
func (i *instrumented) DeleteMany(ctx context.Context, keys []string) ([]string, error) {
	start := time.Now()
	switch {
	case len(keys) == 0 || i.m.topicOf == nil:
	case i.perCall:
		for _, k := range keys {
			if t, ok := i.m.topicOf(k); ok {
				i.m.topicRequests.WithLabelValues(t, "free").Inc()
			}
		}
	default:
		ctx = i.bill(ctx, keys[0], "put")
	}
	failed, err := i.b.DeleteMany(ctx, keys)
	i.observe("delete_many", start, err)
	return failed, err
}

func (i *instrumented) Close() error { return i.b.Close() }
