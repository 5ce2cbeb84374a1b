package objectstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/feature/s3/transfermanager"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/logging"
	smithymw "github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// S3Options configure an S3 bucket. Zero values take the defaults that
// EnsureDefaults documents.
type S3Options struct {
	// Bucket is the bucket's name (required).
	Bucket string
	// Endpoint is the service URL, e.g. http://127.0.0.1:9000 for MinIO;
	// empty means AWS S3.
	Endpoint string
	// Region defaults to the AWS configuration's, else us-east-1.
	Region string
	// PathStyle addresses the bucket as endpoint/bucket rather than
	// bucket.endpoint (MinIO and most S3-compatible stores need it).
	PathStyle bool
	// AccessKey and SecretKey, when set, are the credentials; otherwise
	// the standard AWS chain (environment, shared files, instance role).
	AccessKey, SecretKey, SessionToken string
	// RequestChecksumCalculation and ResponseChecksumValidation are the
	// SDK's settings: "when_supported" (the SDK default) or
	// "when_required", for S3-compatible stores that reject checksums.
	RequestChecksumCalculation string
	ResponseChecksumValidation string

	// RequestTimeout bounds a call without a large body (head, list
	// page, delete, the wait for a GET's response headers), every
	// attempt and backoff included. Default 30s.
	RequestTimeout time.Duration
	// AttemptTimeout bounds one attempt's wait for its response
	// headers (and its dial), so a stuck attempt is retried within the
	// call's deadline. Default 10s, at most RequestTimeout.
	AttemptTimeout time.Duration
	// MinThroughput, in bytes per second, extends a Put's deadline by
	// its size: RequestTimeout + size/MinThroughput. Default 1 MiB/s.
	MinThroughput int64
	// StallTimeout aborts a GET body that delivers no byte for this
	// long. Default 30s.
	StallTimeout time.Duration
	// MaxAttempts per request (first try included) and MaxBackoff
	// between attempts (exponential with jitter). Defaults 5 and 5s.
	MaxAttempts int
	MaxBackoff  time.Duration
	// PartSize of multipart uploads (min 5 MiB), MultipartThreshold the
	// size from which a body that seeks is uploaded in parts (at most
	// MaxSinglePut), Concurrency the parts in flight. A body that seeks
	// and reads at offsets (io.ReaderAt, as a file) is read part by part
	// where it lies, nothing buffered, so its parts are PartSize or an
	// eighth of it (SeekableParts; at most MaxPartSize), whichever is
	// larger: 10 requests for 1 GiB with a lower threshold, not 130; one
	// that does not seek is buffered, (Concurrency+1)*PartSize bytes,
	// and goes in parts from PartSize. Defaults 8 MiB, MaxSinglePut,
	// GOMAXPROCS at most 4.
	//
	// Below MultipartThreshold a body that seeks is one streaming PUT,
	// so a segment file (1 GiB by default) is one request: a multipart
	// upload is a request to create it, one per part and one to complete
	// it, each billed as a PUT (130 for 1 GiB in 8 MiB parts). Against
	// MinIO on 2 cores a 1 GiB PUT cost no more CPU per byte, in MinIO or
	// here, than 128 MiB parts 4 at a time, and less than 8 MiB parts,
	// at the same rate. What it costs is its retry: a failed PUT is sent
	// again whole (the SDK rewinds the body), up to 1 GiB more for a
	// segment, where a part's retry resends a part; the Put's deadline
	// grows with its size (MinThroughput) to allow for it.
	PartSize           int64
	MultipartThreshold int64
	Concurrency        int
	// ListPageSize is the keys asked per list request. Default 1000.
	ListPageSize int32
	// WrapTransport, when set, wraps the HTTP transport (tests inject
	// network faults with it).
	WrapTransport func(http.RoundTripper) http.RoundTripper
}

// S3's limits on uploads.
const (
	// MaxSinglePut is the largest object one PUT may write.
	MaxSinglePut = 5 << 30
	// MaxParts is the most parts a multipart upload may have.
	MaxParts = 10000
	// MaxPartSize is the largest part.
	MaxPartSize = 5 << 30
)

// SeekableParts is the parts a body read at offsets is split into (when
// that makes them larger than PartSize): reading a part where it lies
// buffers nothing, whatever its size, and against MinIO 128 MiB parts
// cost less CPU per byte than 8 MiB ones, in the store and here.
const SeekableParts = 8

// partSize is the part size of a multipart upload of size bytes from a
// body read at offsets: PartSize, or an eighth of the body rounded up to
// a MiB when that is larger, at most MaxPartSize (so, up to S3's 5 TiB
// object, at most MaxParts parts).
func (o *S3Options) partSize(size int64) int64 {
	ps := (size + SeekableParts - 1) / SeekableParts
	ps = (ps + 1<<20 - 1) &^ (1<<20 - 1)
	return min(max(ps, o.PartSize), MaxPartSize)
}

// PutRequests is the number of HTTP requests a successful Put of size
// bytes from a body that seeks and reads at offsets (a segment file)
// makes with these options, retries aside: one PUT below
// MultipartThreshold, else a create, one per part and a completion.
func (o S3Options) PutRequests(size int64) int64 {
	o.EnsureDefaults()
	if size < o.MultipartThreshold {
		return 1
	}
	ps := o.partSize(size)
	return (size+ps-1)/ps + 2
}

// EnsureDefaults fills the zero fields.
func (o *S3Options) EnsureDefaults() {
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = 30 * time.Second
	}
	if o.AttemptTimeout <= 0 {
		o.AttemptTimeout = 10 * time.Second
	}
	o.AttemptTimeout = min(o.AttemptTimeout, o.RequestTimeout)
	if o.MinThroughput <= 0 {
		o.MinThroughput = 1 << 20
	}
	if o.StallTimeout <= 0 {
		o.StallTimeout = 30 * time.Second
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = 5
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 5 * time.Second
	}
	if o.PartSize <= 0 {
		o.PartSize = 8 << 20
	}
	if o.MultipartThreshold <= 0 || o.MultipartThreshold > MaxSinglePut {
		o.MultipartThreshold = MaxSinglePut
	}
	if o.Concurrency <= 0 {
		o.Concurrency = min(runtime.GOMAXPROCS(0), 4)
	}
	if o.ListPageSize <= 0 {
		o.ListPageSize = 1000
	}
}

func (o *S3Options) validate() error {
	if o.Bucket == "" {
		return errors.New("objectstore: s3: no bucket")
	}
	if o.PartSize < 5<<20 {
		return fmt.Errorf("objectstore: s3: part size %d is below S3's 5 MiB minimum", o.PartSize)
	}
	for _, v := range []string{o.RequestChecksumCalculation, o.ResponseChecksumValidation} {
		if v != "" && v != "when_supported" && v != "when_required" {
			return fmt.Errorf("objectstore: s3: checksum setting %q: want when_supported or when_required", v)
		}
	}
	return nil
}

// S3 is a bucket in S3 or an S3-compatible store (s3://).
//
// Retries with backoff are the SDK's standard retryer without its retry
// quota (an outage must not turn into failures once it ends), plus S3's
// 409 ConditionalRequestConflict. A conditional Put whose response was
// lost and whose retry then fails its condition is recognised as a
// success: every Put carries a random put id in its metadata, compared
// with the stored object's before any failure is returned.
type S3 struct {
	opts      S3Options
	client    *s3.Client
	tm        *transfermanager.Client
	transport *http.Transport
	// checksum is the algorithm multipart uploads declare and their
	// parts carry ("" when checksums are computed only when required).
	checksum types.ChecksumAlgorithm
	// metrics counts the HTTP requests the store answered, by
	// operation and class, and the GET bodies resumed (see
	// resumingBody); nil: not counted.
	metrics atomic.Pointer[Metrics]
	// closed is closed by Close: a bucket still being created in the
	// background (createLater) stops trying.
	closed    chan struct{}
	closeOnce sync.Once
	// batchDelete is the way DeleteMany sends its deletes:
	// batchDeleteCRC32 at first, then batchDeleteMD5 or singleDeletes once
	// the store refused the way before (see DeleteMany).
	batchDelete atomic.Int32
}

// The ways of S3.batchDelete, each a fallback for the one before.
const (
	// batchDeleteCRC32 sends DeleteObjects as the SDK does, with a
	// CRC32 checksum of the body.
	batchDeleteCRC32 int32 = iota
	// batchDeleteMD5 adds a Content-MD5 header, which some stores want.
	batchDeleteMD5
	// singleDeletes sends a DeleteObject a key.
	singleDeletes
)

var _ Bucket = (*S3)(nil)

const putIDMeta = "shale-put-id"

// NewS3 returns a bucket; it makes no request.
func NewS3(ctx context.Context, opts S3Options) (*S3, error) {
	opts.EnsureDefaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	httpClient := awshttp.NewBuildableClient().
		WithDialerOptions(func(d *net.Dialer) { d.Timeout = opts.AttemptTimeout }).
		WithTransportOptions(func(t *http.Transport) {
			t.ResponseHeaderTimeout = opts.AttemptTimeout
			t.MaxIdleConnsPerHost = 64
			if strings.HasPrefix(opts.Endpoint, "http://") {
				t.DialContext = bulkDial(t.DialContext)
			}
		})
	loadOpts := []func(*config.LoadOptions) error{
		config.WithHTTPClient(httpClient),
		config.WithLogger(logging.Nop{}),
		config.WithRetryer(func() aws.Retryer {
			return retry.NewStandard(func(o *retry.StandardOptions) {
				o.MaxAttempts = opts.MaxAttempts
				o.MaxBackoff = opts.MaxBackoff
				o.RateLimiter = ratelimit.None
				o.Retryables = append(o.Retryables, retry.IsErrorRetryableFunc(func(err error) aws.Ternary {
					var ae smithy.APIError
					if errors.As(err, &ae) && ae.ErrorCode() == "ConditionalRequestConflict" {
						return aws.TrueTernary
					}
					return aws.UnknownTernary
				}))
			})
		}),
	}
	if opts.Region != "" {
		loadOpts = append(loadOpts, config.WithRegion(opts.Region))
	}
	if opts.AccessKey != "" {
		loadOpts = append(loadOpts, config.WithCredentialsProvider(
			credentials.NewStaticCredentialsProvider(opts.AccessKey, opts.SecretKey, opts.SessionToken)))
	}
	switch opts.RequestChecksumCalculation {
	case "when_required":
		loadOpts = append(loadOpts, config.WithRequestChecksumCalculation(aws.RequestChecksumCalculationWhenRequired))
	case "when_supported":
		loadOpts = append(loadOpts, config.WithRequestChecksumCalculation(aws.RequestChecksumCalculationWhenSupported))
	}
	switch opts.ResponseChecksumValidation {
	case "when_required":
		loadOpts = append(loadOpts, config.WithResponseChecksumValidation(aws.ResponseChecksumValidationWhenRequired))
	case "when_supported":
		loadOpts = append(loadOpts, config.WithResponseChecksumValidation(aws.ResponseChecksumValidationWhenSupported))
	}
	cfg, err := config.LoadDefaultConfig(ctx, loadOpts...)
	if err != nil {
		return nil, fmt.Errorf("objectstore: s3: %w", err)
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	// One transport of our own, so Close can drop its connections; it
	// is the configured one (timeouts, and a CA bundle from the
	// environment when the SDK added one).
	transport := httpClient.GetTransport()
	if bc, ok := cfg.HTTPClient.(*awshttp.BuildableClient); ok {
		transport = bc.GetTransport()
	}
	var rt http.RoundTripper = transport
	if opts.WrapTransport != nil {
		rt = opts.WrapTransport(rt)
	}
	cfg.HTTPClient = &http.Client{Transport: rt}
	b := &S3{opts: opts, transport: transport, closed: make(chan struct{})}
	client := s3.NewFromConfig(cfg, func(o *s3.Options) {
		if opts.Endpoint != "" {
			o.BaseEndpoint = aws.String(opts.Endpoint)
		}
		o.UsePathStyle = opts.PathStyle
		o.APIOptions = append(o.APIOptions, b.countAttempts)
		if cfg.RequestChecksumCalculation != aws.RequestChecksumCalculationWhenRequired {
			o.APIOptions = append(o.APIOptions, unsignedPayload)
		}
	})
	tm := transfermanager.New(client, func(o *transfermanager.Options) {
		o.PartSizeBytes = opts.PartSize
		// Bodies that do not seek come here, and it buffers up to its
		// threshold before deciding: a part, not MultipartThreshold.
		o.MultipartUploadThreshold = min(opts.PartSize, opts.MultipartThreshold)
		o.Concurrency = opts.Concurrency
		o.FailTimeout = opts.RequestTimeout // abort a failed multipart upload even after ctx ends
		o.RequestChecksumCalculation = cfg.RequestChecksumCalculation
	})
	b.client, b.tm = client, tm
	if cfg.RequestChecksumCalculation != aws.RequestChecksumCalculationWhenRequired {
		b.checksum = types.ChecksumAlgorithmCrc32
	}
	return b, nil
}

// unsignedPayload signs request bodies as UNSIGNED-PAYLOAD, as the SDK
// does over HTTPS: bodies carry a CRC checksum the store verifies, so over
// plain HTTP (a local MinIO) the SHA-256 the signature would otherwise
// hash every body with is CPU spent for nothing.
func unsignedPayload(stack *smithymw.Stack) error {
	return stack.Finalize.Add(smithymw.FinalizeMiddlewareFunc("shale:UnsignedPayload",
		func(ctx context.Context, in smithymw.FinalizeInput, next smithymw.FinalizeHandler) (smithymw.FinalizeOutput, smithymw.Metadata, error) {
			return next.HandleFinalize(v4.SetPayloadHash(ctx, "UNSIGNED-PAYLOAD"), in)
		}), smithymw.Before)
}

func (b *S3) countRequests(m *Metrics) bool {
	b.metrics.Store(m)
	return true
}

// countAttempts counts each attempt of a call (it sits below the
// retryer) whose request the store answered, by the call's operation: a
// store bills the requests it receives, not the calls that made them.
// An attempt whose connection failed before an answer has, from the SDK,
// a placeholder response of status 0, and is not counted.
func (b *S3) countAttempts(stack *smithymw.Stack) error {
	return stack.Deserialize.Add(smithymw.DeserializeMiddlewareFunc("shale:CountRequests",
		func(ctx context.Context, in smithymw.DeserializeInput, next smithymw.DeserializeHandler) (smithymw.DeserializeOutput, smithymw.Metadata, error) {
			out, md, err := next.HandleDeserialize(ctx, in)
			if m := b.metrics.Load(); m != nil {
				if resp, ok := out.RawResponse.(*smithyhttp.Response); ok && resp != nil && resp.Response != nil && resp.StatusCode != 0 {
					op := smithymw.GetOperationName(ctx)
					class := S3RequestClass(op)
					m.s3Requests.WithLabelValues(op, class).Inc()
					m.countTopicRequest(ctx, class)
				}
			}
			return out, md, err
		}), smithymw.After)
}

// Client is the underlying SDK client (benchmarks and tools).
func (b *S3) Client() *s3.Client { return b.client }

// BucketName is the S3 bucket's name.
func (b *S3) BucketName() string { return b.opts.Bucket }

// CreateBucket creates the bucket when it does not exist yet; a bucket
// this account already owns is no error, so several brokers may call it
// at once. It is for S3-compatible stores a deployment starts empty (a
// MinIO in docker compose); on AWS the bucket is made beforehand.
func (b *S3) CreateBucket(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, b.opts.RequestTimeout)
	defer cancel()
	if _, err := b.client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(b.opts.Bucket)}); err == nil {
		return nil
	}
	in := &s3.CreateBucketInput{Bucket: aws.String(b.opts.Bucket)}
	if r := b.client.Options().Region; r != "" && r != "us-east-1" {
		in.CreateBucketConfiguration = &types.CreateBucketConfiguration{LocationConstraint: types.BucketLocationConstraint(r)}
	}
	_, err := b.client.CreateBucket(ctx, in)
	var owned *types.BucketAlreadyOwnedByYou
	if err == nil || errors.As(err, &owned) {
		return nil
	}
	return fmt.Errorf("objectstore: s3 create bucket %s: %w", b.opts.Bucket, err)
}

// s3Err maps an SDK error onto the package's sentinels, keeping it
// wrapped for errors.As.
func s3Err(op, key string, err error) error {
	if err == nil {
		return nil
	}
	code, status := "", 0
	var ae smithy.APIError
	if errors.As(err, &ae) {
		code = ae.ErrorCode()
	}
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		status = re.HTTPStatusCode()
	}
	switch {
	case code == "NoSuchBucket" || code == "NoSuchUpload":
		return fmt.Errorf("objectstore: s3 %s %s: %w", op, key, err)
	case code == "NoSuchKey" || code == "NotFound" || status == http.StatusNotFound:
		return fmt.Errorf("%w: s3 %s %s: %w", ErrNotFound, op, key, err)
	case code == "PreconditionFailed" || status == http.StatusPreconditionFailed:
		return fmt.Errorf("%w: s3 %s %s: %w", ErrPreconditionFailed, op, key, err)
	case code == "InvalidRange" || status == http.StatusRequestedRangeNotSatisfiable:
		return fmt.Errorf("%w: s3 %s %s: %w", ErrInvalidRange, op, key, err)
	}
	return fmt.Errorf("objectstore: s3 %s %s: %w", op, key, err)
}

func newPutID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func (b *S3) Put(ctx context.Context, key string, r io.Reader, size int64, opts PutOptions) (Attrs, error) {
	if err := CheckKey(key); err != nil {
		return Attrs{}, err
	}
	if size < 0 {
		return Attrs{}, fmt.Errorf("objectstore: put %s: negative size", key)
	}
	if err := ctx.Err(); err != nil {
		return Attrs{}, err
	}
	caller := ctx
	ctx, cancel := context.WithTimeout(ctx, b.opts.RequestTimeout+time.Duration(float64(size)/float64(b.opts.MinThroughput)*float64(time.Second)))
	defer cancel()
	putID := newPutID()
	var ifNoneMatch, ifMatch *string
	switch {
	case opts.IfNoneMatch:
		ifNoneMatch = aws.String("*")
	case opts.IfMatch != "":
		ifMatch = aws.String(opts.IfMatch)
	}
	var etag string
	var err error
	if rs, ok := seekableBody(r, size); ok && size < b.opts.MultipartThreshold {
		// One PUT streaming the body: the transfer manager would
		// first copy it into a buffer grown as it reads (most of the
		// CPU an upload of a segment file took). The SDK rewinds it
		// for a retry.
		var out *s3.PutObjectOutput
		out, err = b.client.PutObject(ctx, &s3.PutObjectInput{
			Bucket: aws.String(b.opts.Bucket), Key: aws.String(key), Body: rs, ContentLength: aws.Int64(size),
			Metadata: map[string]string{putIDMeta: putID}, IfNoneMatch: ifNoneMatch, IfMatch: ifMatch,
		})
		if err == nil {
			etag = aws.ToString(out.ETag)
		}
	} else if ra, base, ok := readerAtBody(r, size); ok {
		// A multipart upload whose parts are read straight from the
		// body (a segment file): no part is copied into a buffer, and
		// a part's retry reads it again.
		etag, err = b.putMultipart(ctx, key, ra, base, size, putID, ifNoneMatch, ifMatch)
	} else {
		var out *transfermanager.UploadObjectOutput
		out, err = b.tm.UploadObject(ctx, &transfermanager.UploadObjectInput{
			Bucket: aws.String(b.opts.Bucket), Key: aws.String(key), Body: newExactReader(ctx, key, r, size),
			Metadata: map[string]string{putIDMeta: putID}, IfNoneMatch: ifNoneMatch, IfMatch: ifMatch,
		})
		if err == nil {
			etag = aws.ToString(out.ETag)
		}
	}
	if err == nil {
		return Attrs{Key: key, Size: size, ETag: etag, LastModified: time.Now()}, nil
	}
	// An attempt may have succeeded and lost its response: its retry
	// then fails its condition against the object it wrote, or (for a
	// multipart upload's completion) finds the upload gone; a timeout
	// may also come after the store committed. Look before failing
	// (unless the caller gave up: then the outcome stays unknown).
	// A conditional put that finds another put's object its condition
	// does not hold for (any, for a create; one of another ETag, for
	// If-Match) has failed that condition, whatever the error said: a
	// store that refuses the condition before reading the body (MinIO,
	// once its answer to Expect: 100-continue comes after the client's
	// wait) closes the connection while the body is still being sent, and
	// the client sees a reset, not the 412.
	var other *Attrs
	if caller.Err() == nil {
		a, mine, found := b.wroteIt(caller, key, putID)
		if mine {
			return a, nil
		}
		if found {
			other = &a
		}
	}
	err = s3Err("put", key, err)
	if other != nil && (opts.IfNoneMatch || opts.IfMatch != "" && other.ETag != opts.IfMatch) && !errors.Is(err, ErrPreconditionFailed) {
		err = fmt.Errorf("%w: s3 put %s: the key holds another put's object (ETag %s): %w", ErrPreconditionFailed, key, other.ETag, err)
	}
	if opts.IfMatch != "" && errors.Is(err, ErrNotFound) {
		// S3 answers If-Match on a missing key with 404.
		err = fmt.Errorf("%w: %w", ErrPreconditionFailed, err)
	}
	return Attrs{}, err
}

// seekableBody returns r as an io.ReadSeeker when it is one holding
// exactly size bytes from where it stands.
func seekableBody(r io.Reader, size int64) (io.ReadSeeker, bool) {
	rs, ok := r.(io.ReadSeeker)
	if !ok {
		return nil, false
	}
	at, err := rs.Seek(0, io.SeekCurrent)
	if err != nil {
		return nil, false
	}
	end, err := rs.Seek(0, io.SeekEnd)
	if _, serr := rs.Seek(at, io.SeekStart); err != nil || serr != nil || end-at != size {
		return nil, false
	}
	return rs, true
}

// readerAtBody returns r as an io.ReaderAt and the offset it stands at,
// when it is a seekable reader holding exactly size bytes from there that
// also reads at offsets.
func readerAtBody(r io.Reader, size int64) (io.ReaderAt, int64, bool) {
	ra, ok := r.(io.ReaderAt)
	if !ok {
		return nil, 0, false
	}
	rs, ok := seekableBody(r, size)
	if !ok {
		return nil, 0, false
	}
	at, err := rs.Seek(0, io.SeekCurrent)
	if err != nil {
		return nil, 0, false
	}
	return ra, at, true
}

// putMultipart uploads size bytes of ra from base as a multipart upload
// (of partSize), Concurrency of them in flight, each PUT from a section
// of ra (memory stays bounded by the HTTP buffers, whatever the size).
// The condition goes on the completion, the only call of an upload that
// takes one. A failed upload is aborted, even after ctx ends (for
// CleanupGrace then: a store that hangs must not hold up a shutdown).
func (b *S3) putMultipart(ctx context.Context, key string, ra io.ReaderAt, base, size int64, putID string, ifNoneMatch, ifMatch *string) (string, error) {
	created, err := b.client.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{
		Bucket: aws.String(b.opts.Bucket), Key: aws.String(key),
		Metadata: map[string]string{putIDMeta: putID}, ChecksumAlgorithm: b.checksum,
	})
	if err != nil {
		return "", err
	}
	uploadID := created.UploadId
	abort := func() {
		actx, cancel := CleanupContext(ctx, b.opts.RequestTimeout)
		defer cancel()
		_, _ = b.client.AbortMultipartUpload(actx, &s3.AbortMultipartUploadInput{Bucket: aws.String(b.opts.Bucket), Key: aws.String(key), UploadId: uploadID})
	}
	ps := b.opts.partSize(size)
	n := int((size + ps - 1) / ps)
	parts := make([]types.CompletedPart, n)
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	slots := make(chan struct{}, b.opts.Concurrency)
	for i := 0; i < n && pctx.Err() == nil; i++ {
		select {
		case slots <- struct{}{}:
		case <-pctx.Done():
			continue
		}
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			defer func() { <-slots }()
			off := int64(i) * ps
			l := min(ps, size-off)
			num := aws.Int32(int32(i + 1))
			out, err := b.client.UploadPart(pctx, &s3.UploadPartInput{
				Bucket: aws.String(b.opts.Bucket), Key: aws.String(key), UploadId: uploadID, PartNumber: num,
				Body: io.NewSectionReader(ra, base+off, l), ContentLength: aws.Int64(l), ChecksumAlgorithm: b.checksum,
			})
			if err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = fmt.Errorf("part %d: %w", i+1, err)
				}
				mu.Unlock()
				cancel()
				return
			}
			parts[i] = types.CompletedPart{PartNumber: num, ETag: out.ETag, ChecksumCRC32: out.ChecksumCRC32,
				ChecksumCRC32C: out.ChecksumCRC32C, ChecksumCRC64NVME: out.ChecksumCRC64NVME, ChecksumSHA1: out.ChecksumSHA1, ChecksumSHA256: out.ChecksumSHA256}
		}(i)
	}
	wg.Wait()
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	if firstErr != nil {
		abort()
		return "", firstErr
	}
	out, err := b.client.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
		Bucket: aws.String(b.opts.Bucket), Key: aws.String(key), UploadId: uploadID,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: parts}, IfNoneMatch: ifNoneMatch, IfMatch: ifMatch,
	})
	if err != nil {
		// A completion that took and lost its answer leaves nothing
		// to abort (the caller checks what the key holds).
		abort()
		return "", err
	}
	return aws.ToString(out.ETag), nil
}

// wroteIt reports whether key holds the version the put with putID wrote
// (mine), or another object (found), and its attributes (one attempt,
// while the caller waits: a store that cannot answer leaves the put
// failed, which is the indeterminate outcome callers are told to re-read
// after).
func (b *S3) wroteIt(caller context.Context, key, putID string) (a Attrs, mine, found bool) {
	ctx, cancel := context.WithTimeout(caller, b.opts.AttemptTimeout)
	defer cancel()
	out, err := b.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(b.opts.Bucket), Key: aws.String(key)},
		func(o *s3.Options) { o.RetryMaxAttempts = 1 })
	if err != nil {
		return Attrs{}, false, false
	}
	return headAttrs(key, out), out.Metadata[putIDMeta] == putID, true
}

func headAttrs(key string, out *s3.HeadObjectOutput) Attrs {
	return Attrs{Key: key, Size: aws.ToInt64(out.ContentLength), ETag: aws.ToString(out.ETag), LastModified: aws.ToTime(out.LastModified)}
}

func (b *S3) Get(ctx context.Context, key string, off, length int64) (io.ReadCloser, error) {
	if err := CheckKey(key); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if off < 0 {
		return nil, fmt.Errorf("%w: %s at %d", ErrInvalidRange, key, off)
	}
	if length == 0 {
		return b.emptyRange(ctx, key, off)
	}
	body, size, etag, err := b.get(ctx, key, off, length, "")
	if err != nil {
		if errors.Is(err, ErrInvalidRange) && off == 0 {
			// S3 refuses any range of an empty object.
			return b.emptyRange(ctx, key, off)
		}
		return nil, err
	}
	if size < 0 || etag == "" {
		return body, nil
	}
	return &resumingBody{b: b, ctx: ctx, key: key, off: off, size: size, etag: etag, body: body}, nil
}

// get sends one GET of the range (ifMatch, when set, the ETag the object
// must still have) and returns its body, the body's length (-1 when the
// response does not say) and the object's ETag.
func (b *S3) get(ctx context.Context, key string, off, length int64, ifMatch string) (*stallReader, int64, string, error) {
	in := &s3.GetObjectInput{Bucket: aws.String(b.opts.Bucket), Key: aws.String(key)}
	if ifMatch != "" {
		in.IfMatch = aws.String(ifMatch)
	}
	if length > math.MaxInt64-off {
		length = -1 // to the end; off+length would overflow
	}
	switch {
	case length > 0:
		in.Range = aws.String("bytes=" + strconv.FormatInt(off, 10) + "-" + strconv.FormatInt(off+length-1, 10))
	case off > 0:
		in.Range = aws.String("bytes=" + strconv.FormatInt(off, 10) + "-")
	}
	// The request's context outlives this call (it carries the body);
	// a timer bounds the wait for the response, then the watchdog the
	// gaps between the body's bytes.
	reqCtx, cancel := context.WithCancel(ctx)
	var gb *gatedBody
	if g := gateOf(ctx); g != nil {
		gb = &gatedBody{g: g}
		reqCtx = gb.trace(reqCtx)
	}
	timer := time.AfterFunc(b.opts.RequestTimeout, cancel)
	out, err := b.client.GetObject(reqCtx, in)
	if !timer.Stop() && err == nil {
		err = context.DeadlineExceeded
		out.Body.Close()
	}
	if err != nil {
		cancel()
		return nil, 0, "", s3Err("get", key, err)
	}
	s := newStallReader(out.Body, cancel, b.opts.StallTimeout, key)
	s.gate = gb
	size := int64(-1)
	if out.ContentLength != nil {
		size = *out.ContentLength
	}
	return s, size, aws.ToString(out.ETag), nil
}

// maxGetResumes bounds the GETs a body's read sends after its first to
// resume it (see resumingBody).
const maxGetResumes = 3

// resumingBody is a GET's body that, when the connection ends before the
// body does (the store closed it early, or reset it: an unexpected EOF or
// ECONNRESET mid-body), goes on with a GET of the rest of the range,
// conditional on the object's ETag, at most maxGetResumes times. A store
// that drops a long transfer now and then (S3 resets some, MinIO closes
// a response whose reader it finds too slow) then costs a request, not
// the read. A stalled body (no byte for the stall timeout) is not
// resumed: the store is stuck, and the caller decides. What was read is
// never read again: the rest starts where the bytes handed out end.
type resumingBody struct {
	b       *S3
	ctx     context.Context
	key     string
	off     int64  // the range's first byte
	size    int64  // the range's length, as the first response said
	etag    string // the object's, as the first response said
	body    *stallReader
	read    int64 // bytes handed out so far
	resumes int
	broken  error // the error that ended the current body, nil if none
	failed  error // set once resuming failed: every later read's answer
}

func (r *resumingBody) Read(p []byte) (int, error) {
	for {
		if r.failed != nil {
			return 0, r.failed
		}
		if r.broken != nil {
			if err := r.resume(); err != nil {
				r.failed = err
				return 0, err
			}
		}
		n, err := r.body.Read(p)
		r.read += int64(n)
		if err == nil || err == io.EOF || !resumable(err) || r.read >= r.size {
			return n, err
		}
		r.broken = err
		if n > 0 {
			return n, nil // the rest at the next read
		}
	}
}

// resume replaces the broken body with a GET of the rest of the range.
func (r *resumingBody) resume() error {
	broken := r.broken
	if r.resumes >= maxGetResumes || r.ctx.Err() != nil {
		return broken
	}
	r.body.Close()
	r.resumes++
	if m := r.b.metrics.Load(); m != nil {
		m.getResumes.Inc()
	}
	body, size, _, err := r.b.get(r.ctx, r.key, r.off+r.read, r.size-r.read, r.etag)
	if err != nil {
		return fmt.Errorf("%w (resuming the body at byte %d after: %v)", err, r.read, broken)
	}
	r.body, r.broken = body, nil
	if size != r.size-r.read {
		return fmt.Errorf("objectstore: s3 get %s: resumed at byte %d, the store sent %d bytes of the %d left", r.key, r.read, size, r.size-r.read)
	}
	return nil
}

func (r *resumingBody) Close() error { return r.body.Close() }

// resumable reports whether a body's read error is a connection that
// ended early, which a GET of the rest may get past.
func resumable(err error) bool {
	return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)
}

// emptyRange answers a Get whose answer holds no bytes, after checking
// the object exists and the range starts inside it (or at 0).
func (b *S3) emptyRange(ctx context.Context, key string, off int64) (io.ReadCloser, error) {
	a, err := b.Head(ctx, key)
	if err != nil {
		return nil, err
	}
	if off > a.Size || (off == a.Size && a.Size > 0) {
		return nil, fmt.Errorf("%w: %s at %d", ErrInvalidRange, key, off)
	}
	return io.NopCloser(eofReader{}), nil
}

type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }

// stallReader cancels a body's request when no byte arrives for the
// stall timeout, so a stuck connection fails the read instead of
// hanging it. With a gate, the body's reads go through it (see Gate).
type stallReader struct {
	body    io.ReadCloser
	gate    *gatedBody // nil: none
	cancel  context.CancelFunc
	timer   *time.Timer
	timeout time.Duration
	key     string
	mu      sync.Mutex
	stalled bool
}

func newStallReader(body io.ReadCloser, cancel context.CancelFunc, timeout time.Duration, key string) *stallReader {
	s := &stallReader{body: body, cancel: cancel, timeout: timeout, key: key}
	s.timer = time.AfterFunc(timeout, func() {
		s.mu.Lock()
		s.stalled = true
		s.mu.Unlock()
		cancel()
	})
	return s
}

func (s *stallReader) Read(p []byte) (int, error) {
	n, err := s.gate.read(s.body, p)
	if n > 0 {
		s.timer.Reset(s.timeout)
	}
	if err != nil && err != io.EOF {
		s.mu.Lock()
		stalled := s.stalled
		s.mu.Unlock()
		if stalled {
			return n, fmt.Errorf("objectstore: s3 get %s: no data for %v: %w", s.key, s.timeout, context.DeadlineExceeded)
		}
		return n, fmt.Errorf("objectstore: s3 get %s: %w", s.key, err)
	}
	return n, err
}

func (s *stallReader) Close() error {
	s.timer.Stop()
	err := s.body.Close()
	s.cancel()
	return err
}

func (b *S3) Head(ctx context.Context, key string) (Attrs, error) {
	if err := CheckKey(key); err != nil {
		return Attrs{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, b.opts.RequestTimeout)
	defer cancel()
	out, err := b.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(b.opts.Bucket), Key: aws.String(key)})
	if err != nil {
		return Attrs{}, s3Err("head", key, err)
	}
	return headAttrs(key, out), nil
}

func (b *S3) List(ctx context.Context, prefix string, fn func(Attrs) error) error {
	return b.ListAfter(ctx, prefix, "", fn)
}

func (b *S3) ListAfter(ctx context.Context, prefix, after string, fn func(Attrs) error) error {
	in := &s3.ListObjectsV2Input{
		Bucket:  aws.String(b.opts.Bucket),
		Prefix:  aws.String(prefix),
		MaxKeys: aws.Int32(b.opts.ListPageSize),
	}
	if after != "" {
		in.StartAfter = aws.String(after)
	}
	p := s3.NewListObjectsV2Paginator(b.client, in)
	for p.HasMorePages() {
		pctx, cancel := context.WithTimeout(ctx, b.opts.RequestTimeout)
		page, err := p.NextPage(pctx)
		cancel()
		if err != nil {
			return s3Err("list", prefix, err)
		}
		for _, o := range page.Contents {
			a := Attrs{Key: aws.ToString(o.Key), Size: aws.ToInt64(o.Size), ETag: aws.ToString(o.ETag), LastModified: aws.ToTime(o.LastModified)}
			if err := fn(a); err != nil {
				return err
			}
		}
	}
	return nil
}

func (b *S3) ListDirs(ctx context.Context, prefix string, fn func(string) error) error {
	p := s3.NewListObjectsV2Paginator(b.client, &s3.ListObjectsV2Input{
		Bucket:    aws.String(b.opts.Bucket),
		Prefix:    aws.String(prefix),
		Delimiter: aws.String("/"),
		MaxKeys:   aws.Int32(b.opts.ListPageSize),
	})
	for p.HasMorePages() {
		pctx, cancel := context.WithTimeout(ctx, b.opts.RequestTimeout)
		page, err := p.NextPage(pctx)
		cancel()
		if err != nil {
			return s3Err("list", prefix, err)
		}
		for _, cp := range page.CommonPrefixes {
			if err := fn(aws.ToString(cp.Prefix)); err != nil {
				return err
			}
		}
	}
	return nil
}

func (b *S3) Delete(ctx context.Context, key string) error {
	if err := CheckKey(key); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, b.opts.RequestTimeout)
	defer cancel()
	_, err := b.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(b.opts.Bucket), Key: aws.String(key)})
	if err = s3Err("delete", key, err); errors.Is(err, ErrNotFound) {
		return nil
	}
	return err
}

// Batch deletes: S3's limit on the keys of a DeleteObjects request, the
// requests DeleteMany sends at once, and the single deletes at once of a
// store without DeleteObjects.
const (
	maxBatchDelete       = 1000
	batchDeleteInFlight  = 4
	singleDeleteInFlight = 8
)

// DeleteMany sends the keys CheckKey accepts in DeleteObjects requests of
// up to 1,000 keys, batchDeleteInFlight at once, each request bounded by
// RequestTimeout and retried as the other calls are (the keys a request
// names are deleted whatever it finds, so a retry after a lost response
// is harmless). Quiet, the response names only the keys that failed; a
// NoSuchKey among them is a key already gone, and those that failed with
// a transient error (SlowDown, InternalError, ...) are sent again, in
// requests of their own, with the backoff and up to the attempts of the
// other calls' retries (see deleteBatch).
//
// Some S3-compatible stores want a Content-MD5 header on DeleteObjects,
// where the SDK sends a CRC32 checksum of the body: the first answer that
// asks for it turns the bucket to sending the MD5 of each request's body
// too, from that request on. Others have no DeleteObjects: GCS's XML API
// answers NotImplemented, others MethodNotAllowed or 501. The first such
// answer (or one asking for the header to a request that had it) turns
// the bucket to single Deletes, singleDeleteInFlight at once, for the
// request's keys and every later call's.
func (b *S3) DeleteMany(ctx context.Context, keys []string) ([]string, error) {
	keys = distinct(keys)
	errs := make([]error, len(keys))
	var valid []string
	var at []int // at[j] is valid[j]'s index in keys
	for i, k := range keys {
		if err := CheckKey(k); err != nil {
			errs[i] = err
			continue
		}
		valid = append(valid, k)
		at = append(at, i)
	}
	slots := make(chan struct{}, batchDeleteInFlight)
	var wg sync.WaitGroup
	for lo := 0; lo < len(valid); lo += maxBatchDelete {
		hi := min(lo+maxBatchDelete, len(valid))
		slots <- struct{}{}
		if err := ctx.Err(); err != nil {
			<-slots
			for _, i := range at[lo:] {
				errs[i] = err
			}
			break
		}
		wg.Go(func() {
			defer func() { <-slots }()
			for j, err := range b.deleteBatch(ctx, valid[lo:hi]) {
				errs[at[lo+j]] = err
			}
		})
	}
	wg.Wait()
	return failedKeys(keys, errs)
}

// deleteBatch deletes up to maxBatchDelete valid keys in one DeleteObjects
// request (or one by one, see DeleteMany) and returns each key's error at
// its index (nil: deleted). The keys the response names with an error S3
// documents as transient (see transientDeleteError) go again in a
// DeleteObjects request of their own, after the backoff and up to the
// attempts of the bucket's retryer (MaxBackoff, MaxAttempts), while ctx
// lasts; those that still fail keep their last error.
func (b *S3) deleteBatch(ctx context.Context, keys []string) []error {
	errs := make([]error, len(keys))
	at := make([]int, len(keys)) // at[j] is keys[j]'s index in errs
	for i := range at {
		at[i] = i
	}
	retryer := b.client.Options().Retryer
	for attempt := 1; ; attempt++ {
		out, batched, err := b.deleteObjects(ctx, keys)
		if !batched {
			for j, err := range deleteEach(ctx, keys, singleDeleteInFlight, b.Delete) {
				errs[at[j]] = err
			}
			return errs
		}
		if err != nil {
			err = fmt.Errorf("objectstore: s3 delete %d keys from %s: %w", len(keys), keys[0], err)
			for _, i := range at {
				errs[i] = err
			}
			return errs
		}
		if len(out.Errors) == 0 {
			return errs
		}
		index := make(map[string]int, len(keys))
		for j, k := range keys {
			index[k] = j
		}
		var again []string
		var againAt []int
		var backoffErr error // a SlowDown's, if any: the retryer backs off longer from throttling
		for _, e := range out.Errors {
			key, code := aws.ToString(e.Key), aws.ToString(e.Code)
			j, ok := index[key]
			if !ok || code == "NoSuchKey" {
				continue
			}
			errs[at[j]] = fmt.Errorf("objectstore: s3 delete %s: %w", key, &smithy.GenericAPIError{Code: code, Message: aws.ToString(e.Message)})
			if transientDeleteError(code) {
				again, againAt = append(again, key), append(againAt, at[j])
				if backoffErr == nil || code == "SlowDown" {
					backoffErr = errs[at[j]]
				}
			}
		}
		if len(again) == 0 || attempt >= retryer.MaxAttempts() {
			return errs
		}
		delay, err := retryer.RetryDelay(attempt, backoffErr)
		if err != nil || !sleep(ctx, delay) {
			return errs
		}
		for _, i := range againAt {
			errs[i] = nil
		}
		keys, at = again, againAt
	}
}

// deleteObjects sends keys in a DeleteObjects request, bounded by
// RequestTimeout, the way the bucket's batchDelete says; a request the
// store refuses that way goes again the next way (see DeleteMany). batched
// is false, and nothing more is sent, once the way is singleDeletes.
func (b *S3) deleteObjects(ctx context.Context, keys []string) (out *s3.DeleteObjectsOutput, batched bool, err error) {
	objects := make([]types.ObjectIdentifier, len(keys))
	for i, k := range keys {
		objects[i] = types.ObjectIdentifier{Key: aws.String(k)}
	}
	in := &s3.DeleteObjectsInput{
		Bucket: aws.String(b.opts.Bucket),
		Delete: &types.Delete{Objects: objects, Quiet: aws.Bool(true)},
	}
	for {
		how := b.batchDelete.Load()
		if how == singleDeletes {
			return nil, false, nil
		}
		var optFns []func(*s3.Options)
		if how == batchDeleteMD5 {
			optFns = append(optFns, withContentMD5)
		}
		rctx, cancel := context.WithTimeout(ctx, b.opts.RequestTimeout)
		out, err = b.client.DeleteObjects(rctx, in, optFns...)
		cancel()
		next, refused := refusesBatchDelete(how, err)
		if !refused {
			return out, true, err
		}
		b.batchDelete.CompareAndSwap(how, next)
	}
}

// withContentMD5 has a request carry a Content-MD5 header, the MD5 of its
// body (smithy's middleware; the SDK sends a CRC32 checksum in its place).
func withContentMD5(o *s3.Options) {
	o.APIOptions = append(o.APIOptions, smithyhttp.AddContentChecksumMiddleware)
}

// transientDeleteError reports whether the error code a DeleteObjects
// response gives a key is one S3 documents as transient (an error to try
// the request again after: throttling, an internal error or timeout, a
// conflicting operation in progress), as opposed to a refusal
// (AccessDenied) that another try would only repeat.
func transientDeleteError(code string) bool {
	switch code {
	case "SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout", "OperationAborted":
		return true
	}
	return false
}

// sleep waits for d, or until ctx ends (then it returns false).
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// refusesBatchDelete reports whether err is a store's refusal of a
// DeleteObjects request sent the way how says, and the way to send it
// next (see DeleteMany): with a Content-MD5 header if the store asked for
// one (MissingContentMD5, or an InvalidRequest that names the header) and
// it had none, else singleDeletes, for a store that does not implement
// DeleteObjects (NotImplemented, MethodNotAllowed, 501) or refused the
// header too.
func refusesBatchDelete(how int32, err error) (next int32, refused bool) {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		code := ae.ErrorCode()
		if code == "InvalidRequest" && strings.Contains(ae.ErrorMessage(), "Content-MD5") {
			// Some stores ask for the header so: "Missing required
			// header for this request: Content-MD5".
			code = "MissingContentMD5"
		}
		switch code {
		case "MissingContentMD5":
			if how == batchDeleteCRC32 {
				return batchDeleteMD5, true
			}
			return singleDeletes, true
		case "NotImplemented", "MethodNotAllowed":
			return singleDeletes, true
		}
	}
	var re *awshttp.ResponseError
	if errors.As(err, &re) && re.HTTPStatusCode() == http.StatusNotImplemented {
		return singleDeletes, true
	}
	return how, false
}

// Close closes idle connections; calls in flight finish.
func (b *S3) Close() error {
	b.closeOnce.Do(func() { close(b.closed) })
	b.transport.CloseIdleConnections()
	return nil
}

// createLater calls CreateBucket until it succeeds, the store refuses it
// (an answer, not an outage), or the bucket is closed: every second at
// first, then less often, up to every 30 s.
func (b *S3) createLater(log *slog.Logger) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-b.closed:
			cancel()
		case <-ctx.Done(): // created, or refused
		}
	}()
	for wait := time.Second; ; wait = min(2*wait, 30*time.Second) {
		t := time.NewTimer(wait)
		select {
		case <-b.closed:
			t.Stop()
			return
		case <-t.C:
		}
		err := b.CreateBucket(ctx)
		switch {
		case err == nil:
			log.Info("object store reachable; bucket ready", "bucket", b.opts.Bucket)
			return
		case ctx.Err() != nil:
			return
		case !Unreachable(err):
			log.Error("object store refused to create the bucket", "bucket", b.opts.Bucket, "err", err)
			return
		}
	}
}

// Unreachable reports whether err is an S3 call's failure to get an answer
// from the store (refused or lost connections, timeouts) or an answer
// that the store is unavailable (HTTP 5xx): an outage to wait out, not a
// refusal.
func Unreachable(err error) bool {
	if err == nil {
		return false
	}
	// The SDK wraps a request that got no response in a ResponseError
	// too, of status 0.
	var re *awshttp.ResponseError
	if errors.As(err, &re) && re.HTTPStatusCode() != 0 {
		return re.HTTPStatusCode() >= 500
	}
	var ae smithy.APIError
	return !errors.As(err, &ae)
}
