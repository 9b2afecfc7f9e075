package tracker

import (
	"errors"

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
	for _, c := range []prometheus.Collector{m.opened, m.closed, m.kicks} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return nil, err
			}
		}
	}
	return m, nil
}
