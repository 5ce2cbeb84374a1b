package broker

import (
	"encoding/base64"
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
// can still be found. A Warn line counts the lines demoted since the last
// one ("suppressed").
type rateLimitedLog struct {
	interval   time.Duration
	last       atomic.Int64 // unix ns of the last Warn line
	suppressed atomic.Int64
}

func (r *rateLimitedLog) log(l *slog.Logger, msg string, args ...any) {
	now := time.Now().UnixNano()
	last := r.last.Load()
	if now-last >= int64(r.interval) && r.last.CompareAndSwap(last, now) {
		if n := r.suppressed.Swap(0); n > 0 {
			args = append(args, "suppressed", n)
		}
		l.Warn(msg, args...)
		return
	}
	r.suppressed.Add(1)
	l.Debug(msg, args...)
}

// clientAttrs are the log attributes naming the request's client.
func (r *request) clientAttrs() []any {
	return []any{"client_id", r.header.clientID, "remote", r.conn.nc.RemoteAddr().String()}
}

// topicIDString is a topic id as Kafka prints it.
func topicIDString(id [16]byte) string { return base64.RawURLEncoding.EncodeToString(id[:]) }

// refused leaves a rate-limited line for a request the broker refuses, with
// the client's id and address (the connection's logger has the address).
func (r *request) refused(msg string, args ...any) {
	r.conn.b.refusedLog.log(r.conn.log, msg, append(args, "client_id", r.header.clientID, "api", kmsg.NameForKey(r.header.key))...)
}
