package main

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/shale-log/shale/broker"
)

// statusServer is the HTTP address's server: /metrics, /healthz, /readyz
// and, with --pprof, /debug/pprof. It answers from the start of the
// process, so that a probe gets 503 and the reason while the broker
// starts (metadata store, log recovery) instead of a connection that hangs.
type statusServer struct {
	srv *http.Server
	// brokers are set once every broker of the process has started.
	brokers atomic.Pointer[[]*broker.Broker]
}

var errStarting = errors.New("starting")

// newRegistry is the process's metrics registry, with Go's runtime and
// process collectors.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// serveStatus serves the HTTP address on ln until close.
func serveStatus(ln net.Listener, reg *prometheus.Registry, withPprof bool) *statusServer {
	s := &statusServer{}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	if withPprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	// /healthz: liveness, the process is alive and not deadlocked (503
	// while its brokers start or stop, or when one's locks stay held);
	// storage and metadata problems are /readyz's, since a restart mends
	// neither.
	mux.HandleFunc("/healthz", s.check(func(r *http.Request, b *broker.Broker) error { return b.Live(r.Context()) }))
	// /readyz: every broker of the process accepts clients, has loaded
	// the metadata and can store data (no partition offline, no disk
	// below its reserve).
	mux.HandleFunc("/readyz", s.check(func(_ *http.Request, b *broker.Broker) error { return b.Ready() }))
	// /v1/tier: tiered storage status of the process's partitions (see
	// shale tier status).
	mux.Handle("GET /v1/tier", tierHandler(func() []*broker.Broker {
		if bs := s.brokers.Load(); bs != nil {
			return *bs
		}
		return nil
	}))
	// /v1/lost-ranges: offsets lost to damaged local segments (see
	// shale topic lost-ranges).
	mux.Handle("GET /v1/lost-ranges", lostRangesHandler(func() []*broker.Broker {
		if bs := s.brokers.Load(); bs != nil {
			return *bs
		}
		return nil
	}))
	// Bounded like the Kafka listener: a request must arrive within 10s
	// and an idle keep-alive connection is closed after two minutes.
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute}
	go s.srv.Serve(ln)
	return s
}

// started makes /healthz and /readyz look at the process's brokers.
func (s *statusServer) started(brokers ...*broker.Broker) { s.brokers.Store(&brokers) }

func (s *statusServer) close() { s.srv.Close() }

func (s *statusServer) check(fn func(*http.Request, *broker.Broker) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		err := errStarting
		if bs := s.brokers.Load(); bs != nil {
			err = nil
			for _, b := range *bs {
				if err = fn(r, b); err != nil {
					break
				}
			}
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	}
}
