package tracker

import (
	"github.com/mulchat/mulchat/internal/prom"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	opened prometheus.Counter
	closed *prometheus.CounterVec
	kicks  prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		opened: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mulchat_tracker_sessions_opened_total",
			Help: "Auth session rows written for new NATS connections.",
		}),
		closed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mulchat_tracker_sessions_closed_total",
			Help: "Auth session rows closed, by source (event, reconcile).",
		}, []string{"source"}),
		kicks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mulchat_tracker_kicks_total",
			Help: "Connections kicked.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	// A second instance in the same process (tests, several routers on one
	// registry) shares the first one's collectors.
	if err := prom.Register(reg, &m.opened); err != nil {
		return nil, err
	}
	if err := prom.Register(reg, &m.closed); err != nil {
		return nil, err
	}
	if err := prom.Register(reg, &m.kicks); err != nil {
		return nil, err
	}
	return m, nil
}
