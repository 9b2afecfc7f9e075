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
	// A second instance in the same process (tests, several routers on one
	// registry) shares the first one's collectors.
	if err := register(reg, &m.opened); err != nil {
		return nil, err
	}
	if err := register(reg, &m.closed); err != nil {
		return nil, err
	}
	if err := register(reg, &m.kicks); err != nil {
		return nil, err
	}
	return m, nil
}

// register registers *c, or replaces it with the collector already
// registered under the same name.
func register[C prometheus.Collector](reg prometheus.Registerer, c *C) error {
	if err := reg.Register(*c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			return err
		}
		existing, ok := are.ExistingCollector.(C)
		if !ok {
			return err
		}
		*c = existing
	}
	return nil
}
