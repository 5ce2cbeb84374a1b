package objectstore

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// OpenOptions are the settings a URL does not carry.
type OpenOptions struct {
	// S3 holds the defaults of s3:// buckets (timeouts, retries, part
	// size); the URL's bucket and query parameters override them.
	S3 S3Options
	// Logger tells of a create_bucket that waits for the store (nil:
	// slog's default).
	Logger *slog.Logger
}

// createWait bounds Open's wait for the store's answers to create_bucket
// (the request timeout, 30s by default, is for calls that need their
// answer).
const createWait = 3 * time.Second

// Open opens the bucket a URL names:
//
//	s3://BUCKET[/PREFIX][?endpoint=URL&region=R&path_style=true|false
//	     &request_checksum=when_supported|when_required
//	     &response_checksum=when_supported|when_required&part_size=BYTES
//	     &multipart_threshold=BYTES&create_bucket=true|false]
//	file:///ABSOLUTE/PATH
//	mem://
//
// S3 credentials come from the standard AWS chain (AWS_ACCESS_KEY_ID and
// AWS_SECRET_ACCESS_KEY, shared config files, instance roles), never from
// the URL. path_style defaults to true when an endpoint is given (MinIO
// and most S3-compatible stores), false for AWS. An s3:// prefix puts
// every key under PREFIX/. create_bucket=true creates the bucket when it
// is missing (a fresh MinIO); by default a missing bucket is an error of
// the first upload. A store that cannot be reached (no answer, or a 5xx)
// does not fail create_bucket: the bucket is created in the background as
// soon as the store answers, as a broker's uploads wait for it too. An
// answer refusing it (credentials, a bad name) fails Open. Open waits
// createWait at most for the store's answers: a store that hangs
// (accepts connections, answers nothing) must not hold up a broker's
// start, which needs no bucket to take produce.
func Open(ctx context.Context, rawURL string, opts OpenOptions) (Bucket, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("objectstore: open %q: %w", rawURL, err)
	}
	switch u.Scheme {
	case "mem":
		if u.Host != "" || u.Path != "" || u.RawQuery != "" {
			return nil, fmt.Errorf("objectstore: open %q: mem:// takes nothing after it", rawURL)
		}
		return NewMem(), nil
	case "file":
		if u.Host != "" || !filepath.IsAbs(u.Path) || u.RawQuery != "" {
			return nil, fmt.Errorf("objectstore: open %q: want file:///ABSOLUTE/PATH", rawURL)
		}
		return NewFS(u.Path)
	case "s3":
		o := opts.S3
		o.Bucket = u.Host
		q := u.Query()
		pathStyle, create := "", false
		for k, vs := range q {
			v := vs[len(vs)-1]
			switch k {
			case "endpoint":
				o.Endpoint = v
			case "region":
				o.Region = v
			case "path_style":
				pathStyle = v
			case "request_checksum":
				o.RequestChecksumCalculation = v
			case "response_checksum":
				o.ResponseChecksumValidation = v
			case "part_size":
				n, err := strconv.ParseInt(v, 10, 64)
				if err != nil {
					return nil, fmt.Errorf("objectstore: open %q: part_size: %w", rawURL, err)
				}
				o.PartSize = n
			case "multipart_threshold":
				// Bodies from this size go in parts (S3Options):
				// for partitions whose segments one PUT stream
				// cannot upload as fast as they fill.
				n, err := strconv.ParseInt(v, 10, 64)
				if err != nil {
					return nil, fmt.Errorf("objectstore: open %q: multipart_threshold: %w", rawURL, err)
				}
				o.MultipartThreshold = n
			case "create_bucket":
				if create, err = strconv.ParseBool(v); err != nil {
					return nil, fmt.Errorf("objectstore: open %q: create_bucket=%q: want true or false", rawURL, v)
				}
			default:
				return nil, fmt.Errorf("objectstore: open %q: unknown parameter %q", rawURL, k)
			}
		}
		switch pathStyle {
		case "":
			o.PathStyle = o.Endpoint != ""
		case "true", "false":
			o.PathStyle = pathStyle == "true"
		default:
			return nil, fmt.Errorf("objectstore: open %q: path_style=%q: want true or false", rawURL, pathStyle)
		}
		b, err := NewS3(ctx, o)
		if err != nil {
			return nil, err
		}
		if create {
			cctx, cancel := context.WithTimeout(ctx, createWait)
			err := b.CreateBucket(cctx)
			cancel()
			if err != nil {
				if !Unreachable(err) {
					b.Close()
					return nil, err
				}
				log := opts.Logger
				if log == nil {
					log = slog.Default()
				}
				log.Warn("object store not reachable; creating the bucket once it is", "bucket", o.Bucket, "err", err)
				go b.createLater(log)
			}
		}
		return WithPrefix(b, strings.TrimSuffix(strings.TrimPrefix(u.Path, "/"), "/"))
	}
	return nil, fmt.Errorf("objectstore: open %q: unknown scheme (want s3, file or mem)", rawURL)
}
