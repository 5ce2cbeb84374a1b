package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"net/url"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/twmb/franz-go/pkg/kadm"

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

// brokersUp returns the brokers of the process, nil while they start.
func (s *statusServer) brokersUp() []*broker.Broker {
	if bs := s.brokers.Load(); bs != nil {
		return *bs
	}
	return nil
}

// partitionsDocument is the answer of the per-partition JSON endpoints
// (/v1/tier, /v1/lost-ranges).
type partitionsDocument[P any] struct {
	Partitions []P `json:"partitions"`
}

// partitionsHandler serves a per-partition JSON endpoint: what report
// gives for each broker of the process (nil while they start), for the
// topic the query names (every topic without one).
func partitionsHandler[P any](brokers func() []*broker.Broker, report func(b *broker.Broker, topic string) []P) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		bs := brokers()
		if bs == nil {
			http.Error(w, errStarting.Error(), http.StatusServiceUnavailable)
			return
		}
		topic := r.URL.Query().Get("topic")
		doc := partitionsDocument[P]{Partitions: []P{}}
		for _, b := range bs {
			doc.Partitions = append(doc.Partitions, report(b, topic)...)
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(doc)
	})
}

// askBrokers GETs a per-partition JSON endpoint (path) for topic (every
// topic when empty) from each of addrs, or, with none, from every address
// the brokers advertise. It returns the partitions of those that
// answered, how many answered, and an error naming those that did not.
func askBrokers[P any](ctx context.Context, adm *kadm.Client, addrs []string, path, topic string) ([]P, int, error) {
	var (
		out      []P
		errs     []string
		answered int
		err      error
	)
	if len(addrs) == 0 {
		if addrs, err = advertisedHTTPAddrs(ctx, adm); err != nil {
			errs = append(errs, err.Error())
		}
	}
	hc := &http.Client{}
	for _, addr := range addrs {
		u := "http://" + addr + path
		if topic != "" {
			u += "?topic=" + url.QueryEscape(topic)
		}
		var doc partitionsDocument[P]
		if err := getJSON(ctx, hc, u, &doc); err != nil {
			errs = append(errs, err.Error())
			continue
		}
		answered++
		out = append(out, doc.Partitions...)
	}
	if len(errs) > 0 {
		return out, answered, errors.New(strings.Join(errs, "; "))
	}
	return out, answered, nil
}

func getJSON(ctx context.Context, hc *http.Client, u string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", u, errors.Unwrap(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
		return fmt.Errorf("GET %s: %s: %s", u, resp.Status, strings.TrimSpace(string(body)))
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(v); err != nil {
		return fmt.Errorf("GET %s: %w", u, err)
	}
	return nil
}

// newRegistry is the process's metrics registry, with Go's runtime and
// process collectors. The runtime's scheduler metrics come with the
// default ones: go_sched_latencies_seconds is how long goroutines waited
// runnable for a processor, what a produce beside busy goroutines (a cold
// replay's GETs and fetches) waits in the broker before it runs.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(collectors.WithGoCollectorRuntimeMetrics(collectors.MetricsScheduler)),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// serveStatus serves the HTTP address on ln until close.
func serveStatus(ln net.Listener, reg *prometheus.Registry, withPprof bool) *statusServer {
	s := &statusServer{}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	if withPprof {
		// The mutex and block profiles record nothing unless sampled:
		// one contention event in 100, and blocking of about a
		// millisecond and longer (shorter waits in proportion), cheap
		// enough to leave on where the profiler is served.
		runtime.SetMutexProfileFraction(100)
		runtime.SetBlockProfileRate(int(time.Millisecond))
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
	mux.Handle("GET /v1/tier", partitionsHandler(s.brokersUp, tierReport))
	// /v1/lost-ranges: offsets lost to damaged local segments (see
	// shale topic lost-ranges).
	mux.Handle("GET /v1/lost-ranges", partitionsHandler(s.brokersUp, lostReport))
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
