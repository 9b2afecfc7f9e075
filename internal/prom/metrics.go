// Package prom holds the one Prometheus helper mulchat's packages share:
// registering a collector so that several instances in one process (tests,
// or several routers on one registry) share a single set of collectors
// instead of failing on the second registration.
package prom

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Register registers *c with reg, or, when a collector of the same name and
// type is already registered, replaces *c with that one. A nil reg registers
// nothing.
func Register[C prometheus.Collector](reg prometheus.Registerer, c *C) error {
	if reg == nil {
		return nil
	}
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
