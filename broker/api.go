package broker

import (
	"github.com/twmb/franz-go/pkg/kmsg"
)

// api is one Kafka API the broker serves: the version range it advertises in
// ApiVersions and its handler. Each handler lives in a file named after its
// API key (00_produce.go, 01_fetch.go, ...), so the directory listing is the
// protocol coverage table.
type api struct {
	min, max int16
	handle   func(b *Broker, r *request, req kmsg.Request) kmsg.Response
}

// apis maps API keys to their handlers. A key or version missing here is
// absent from ApiVersions, and a request for it closes the connection
// (ApiVersions excepted: an unknown version gets UNSUPPORTED_VERSION).
var apis = map[int16]api{}

// handler adapts a typed handler to the table. A handler returns the
// response, or nil when it will answer later through r.respond (long-poll
// fetch, acks=all produce, JoinGroup waiting for the rebalance).
func handler[R kmsg.Request](key kmsg.Key, min, max int16, fn func(b *Broker, r *request, req R) kmsg.Response) {
	apis[int16(key)] = api{min: min, max: max, handle: func(b *Broker, r *request, req kmsg.Request) kmsg.Response {
		return fn(b, r, req.(R))
	}}
}
