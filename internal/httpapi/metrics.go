package httpapi

import (
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mulchat_http_requests_total",
			Help: "HTTP requests by route pattern and status code.",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "mulchat_http_request_duration_seconds",
			Help:    "HTTP request latency by route pattern.",
			Buckets: prometheus.DefBuckets,
		}, []string{"route"}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// instrument records count and latency labelled with the route pattern (never
// the raw path, which would give unbounded label values) and logs the request
// at debug level. Nothing from headers or bodies is logged.
func (s *Server) instrument(pattern string, h http.Handler) http.Handler {
	// The route's series, looked up once rather than hashed from their
	// labels on every request: its latency, and its count per status code.
	duration := s.metrics.duration.WithLabelValues(pattern)
	var counts sync.Map // status code → prometheus.Counter
	count := func(status int) prometheus.Counter {
		if c, ok := counts.Load(status); ok {
			return c.(prometheus.Counter)
		}
		c, _ := counts.LoadOrStore(status, s.metrics.requests.WithLabelValues(pattern, strconv.Itoa(status)))
		return c.(prometheus.Counter)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w}
		defer func() {
			if v := recover(); v != nil {
				// A panic must not leak its value (which could hold input) to
				// the client; log it as an internal error and answer 500.
				s.logger.Error("panic in handler", slog.String("route", pattern), slog.Any("panic", v))
				if rec.status == 0 {
					writeJSON(rec, http.StatusInternalServerError, errorBody{Error: errorDetail{Code: "internal", Message: "internal error"}})
				}
			}
			d := time.Since(start)
			st := rec.status
			if st == 0 {
				st = http.StatusOK
			}
			count(st).Inc()
			duration.Observe(d.Seconds())
			if s.logger.Enabled(r.Context(), slog.LevelDebug) { // spares building the record's fields
				s.logger.Debug("http request", slog.String("method", r.Method), slog.String("route", pattern),
					slog.Int("status", st), slog.Duration("duration", d))
			}
		}()
		h.ServeHTTP(rec, r)
	})
}
