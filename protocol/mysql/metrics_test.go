package mysql

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/dbrouter/dbrouter/proxy"
)

// TestMetricsOfTwoClustersOnOneRegistry: two proxies (two clusters in one
// routerd) share a registry, and each exports its own series. Before, the
// second proxy's vectors failed to register and the error was dropped:
// its queries, errors and causal reads were never exported.
func TestMetricsOfTwoClustersOnOneRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	for _, name := range []string{"shop", "blog"} {
		p, err := New(Config{Cluster: name, Members: []Member{{Name: "db1", Addr: "127.0.0.1:1"}}}, fixedRouter{}, zap.NewNop(), reg)
		if err != nil {
			t.Fatal(err)
		}
		p.metrics.Queries(0, false).Inc()
		p.metrics.CountError(proxy.ErrPoolTimeout)
		p.metrics.CausalWaited.Inc()
		p.pools[0].countPins(PinTxn, 1)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"dbrouter_queries_total", "dbrouter_errors_total", "dbrouter_causal_reads_total",
		"dbrouter_client_sessions", "dbrouter_backend_connections", "dbrouter_pinned_sessions", "dbrouter_query_duration_seconds"} {
		clusters := map[string]float64{}
		for _, mf := range mfs {
			if mf.GetName() != name {
				continue
			}
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == "cluster" {
						clusters[l.GetValue()] += m.GetCounter().GetValue() + m.GetGauge().GetValue()
					}
				}
			}
		}
		for _, c := range []string{"shop", "blog"} {
			v, ok := clusters[c]
			if !ok {
				t.Errorf("%s has no series of cluster %s (has %v)", name, c, clusters)
			}
			if strings.HasSuffix(name, "_total") && v != 1 || name == "dbrouter_pinned_sessions" && v != 1 {
				t.Errorf("%s{cluster=%s} = %v, want 1", name, c, v)
			}
		}
	}
}

// TestMetricsRegistrationConflictIsAnError: a collector the registry
// refuses is an error of New, never ignored.
func TestMetricsRegistrationConflictIsAnError(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dbrouter_queries_total", Help: "something else"}, []string{"other"}))
	_, err := New(Config{Cluster: "shop", Members: []Member{{Name: "db1", Addr: "127.0.0.1:1"}}}, fixedRouter{}, zap.NewNop(), reg)
	if err == nil || !strings.Contains(err.Error(), "dbrouter_queries_total") {
		t.Fatalf("New with a conflicting dbrouter_queries_total: %v, want an error naming it", err)
	}
}
