package prom

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestRegisterSharesExistingCollector(t *testing.T) {
	reg := prometheus.NewRegistry()
	opts := prometheus.CounterOpts{Name: "mulchat_test_total", Help: "test"}
	first := prometheus.NewCounter(opts)
	if err := Register(reg, &first); err != nil {
		t.Fatal(err)
	}
	second := prometheus.NewCounter(opts)
	orig := second
	if err := Register(reg, &second); err != nil {
		t.Fatal(err)
	}
	if second == orig || second != first {
		t.Fatal("second registration did not take the existing collector")
	}
	second.Inc()
	if got := testCounterValue(t, reg); got != 1 {
		t.Fatalf("shared counter = %v, want 1", got)
	}

	// A different type under the same name is an error, not a silent swap.
	clash := prometheus.NewGauge(prometheus.GaugeOpts{Name: "mulchat_test_total", Help: "test"})
	if err := Register(reg, &clash); err == nil {
		t.Fatal("registering a gauge over a counter succeeded")
	}
	if err := Register[prometheus.Counter](nil, &first); err != nil {
		t.Fatalf("nil registry: %v", err)
	}
}

func testCounterValue(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "mulchat_test_total" {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatal("counter not gathered")
	return 0
}
