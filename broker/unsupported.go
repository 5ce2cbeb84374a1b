package broker

import (
	"log/slog"
	"reflect"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// unsupportedVersionResponse answers a request for an API or version the
// broker does not serve with UNSUPPORTED_VERSION where the protocol allows
// it: the version is one the response format is defined for and the
// response has a top-level error code. Otherwise it returns nil and the
// connection is closed (as Kafka does, KIP-896's removed versions
// included).
func unsupportedVersionResponse(h requestHeader) kmsg.Response {
	req := kmsg.RequestForKey(h.key)
	if req == nil || h.version < 0 || h.version > req.MaxVersion() {
		return nil
	}
	resp := req.ResponseKind()
	resp.SetVersion(h.version)
	f := reflect.ValueOf(resp).Elem().FieldByName("ErrorCode")
	if !f.IsValid() || f.Kind() != reflect.Int16 || !f.CanSet() {
		return nil
	}
	f.SetInt(int64(kerr.UnsupportedVersion.Code))
	return resp
}

// rateLimitedLog logs at most one line per interval at Warn, the rest at
// Debug, so that a misbehaving client cannot flood the log but its cause
// can still be found.
type rateLimitedLog struct {
	interval time.Duration
	last     atomic.Int64 // unix ns of the last Warn line
}

func (r *rateLimitedLog) log(l *slog.Logger, msg string, args ...any) {
	now := time.Now().UnixNano()
	last := r.last.Load()
	if now-last >= int64(r.interval) && r.last.CompareAndSwap(last, now) {
		l.Warn(msg, args...)
		return
	}
	l.Debug(msg, args...)
}
