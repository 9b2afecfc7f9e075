package router

import (
	"github.com/mulchat/mulchat/internal/prom"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	sends *prometheus.CounterVec
	// sendsOK and sendsDuplicate are sends' two usual results, looked up
	// once instead of per send.
	sendsOK, sendsDuplicate prometheus.Counter
	sendLatency             prometheus.Histogram
	delivered               prometheus.Counter
	deliveries              prometheus.Counter
	history                 prometheus.Counter
	// dropped counts requests left unanswered on purpose: a reply subject
	// that is not the requester's own inbox, or a subject that names no user.
	dropped *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		sends: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mulchat_router_sends_total",
			Help: "Send requests handled, by result (ok, duplicate, queue_full or an error code).",
		}, []string{"result"}),
		sendLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "mulchat_router_send_seconds",
			Help:    "Time from receiving a send to its stored acknowledgement.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		delivered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mulchat_router_messages_delivered_total",
			Help: "Stored messages fanned out by this instance.",
		}),
		deliveries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mulchat_router_deliveries_total",
			Help: "Per-member deliveries published by this instance.",
		}),
		history: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mulchat_router_history_requests_total",
			Help: "History pages served.",
		}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mulchat_router_requests_dropped_total",
			Help: "Send and API requests dropped without an answer, by reason (bad_reply, bad_subject).",
		}, []string{"reason"}),
	}
	if reg == nil {
		m.cacheLabels()
		return m, nil
	}
	// A second instance in the same process (tests, several routers on one
	// registry) shares the first one's collectors.
	if err := prom.Register(reg, &m.sends); err != nil {
		return nil, err
	}
	if err := prom.Register(reg, &m.sendLatency); err != nil {
		return nil, err
	}
	if err := prom.Register(reg, &m.delivered); err != nil {
		return nil, err
	}
	if err := prom.Register(reg, &m.deliveries); err != nil {
		return nil, err
	}
	if err := prom.Register(reg, &m.history); err != nil {
		return nil, err
	}
	if err := prom.Register(reg, &m.dropped); err != nil {
		return nil, err
	}
	m.cacheLabels()
	return m, nil
}

// cacheLabels looks up the frequent label values of the (registered)
// vectors.
func (m *metrics) cacheLabels() {
	m.sendsOK = m.sends.WithLabelValues("ok")
	m.sendsDuplicate = m.sends.WithLabelValues("duplicate")
}
