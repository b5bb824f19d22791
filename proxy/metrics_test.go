package proxy

import (
	"errors"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// fakePool is a member's connections as the metrics read them.
type fakePool struct {
	name     string
	stats    ConnStats
	inflight int64
	pinned   []int
}

func (f *fakePool) Member() string   { return f.name }
func (f *fakePool) Stats() ConnStats { return f.stats }
func (f *fakePool) InFlight() int64  { return f.inflight }
func (f *fakePool) Pinned(r int) int { return f.pinned[r] }

var testReasons = []string{"transaction", "temporary_table"}

func newTestMetrics(t *testing.T, reg prometheus.Registerer, cluster string) *Metrics {
	t.Helper()
	pools := []PoolStats{
		&fakePool{name: "db1", stats: ConnStats{Open: 3, Idle: 1}, inflight: 2, pinned: []int{1, 0}},
		&fakePool{name: "db2", stats: ConnStats{Open: 1}, pinned: []int{0, 1}},
	}
	m, err := NewMetrics(reg, cluster, pools, testReasons)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestMetricNamesAndLabelsNeverChange: the names and labels are a
// contract with dashboards and docs/admin.md.
func TestMetricNamesAndLabelsNeverChange(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := newTestMetrics(t, reg, "shop")
	m.Queries(0, false).Inc()
	m.Queries(1, true).Inc()
	m.CountError(errors.New("no kind"))
	m.CountError(ErrPoolTimeout)
	m.Duration(RouteReplica, StmtRead).Observe(0.001)
	want := map[string][]string{
		"dbrouter_queries_total":                {"cluster", "member", "route"},
		"dbrouter_errors_total":                 {"cluster", "kind"},
		"dbrouter_causal_reads_total":           {"cluster", "result"},
		"dbrouter_query_duration_seconds":       {"cluster", "kind", "route"},
		"dbrouter_client_sessions":              {"cluster"},
		"dbrouter_auth_failures_total":          {"cluster"},
		"dbrouter_client_protocol_errors_total": {"cluster"},
		"dbrouter_backend_connections":          {"cluster", "member", "state"},
		"dbrouter_backend_inflight":             {"cluster", "member"},
		"dbrouter_pinned_sessions":              {"cluster", "reason"},
	}
	doc, err := os.ReadFile("../docs/admin.md")
	if err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	values := map[string]map[string]bool{} // label name -> values seen
	for _, mf := range mfs {
		labels, ok := want[mf.GetName()]
		if !ok {
			t.Errorf("unexpected metric %s", mf.GetName())
			continue
		}
		delete(want, mf.GetName())
		if !strings.Contains(string(doc), "`"+mf.GetName()+"`") {
			t.Errorf("%s is not in docs/admin.md", mf.GetName())
		}
		for _, s := range mf.GetMetric() {
			var got []string
			for _, l := range s.GetLabel() {
				got = append(got, l.GetName())
				if values[mf.GetName()+"/"+l.GetName()] == nil {
					values[mf.GetName()+"/"+l.GetName()] = map[string]bool{}
				}
				values[mf.GetName()+"/"+l.GetName()][l.GetValue()] = true
			}
			slices.Sort(got)
			if !slices.Equal(got, labels) {
				t.Errorf("%s has labels %v, want %v", mf.GetName(), got, labels)
			}
		}
	}
	for name := range want {
		t.Errorf("%s is not exported", name)
	}
	for key, vals := range map[string][]string{
		"dbrouter_errors_total/kind": {"other", "outcome_unknown", "transaction_lost", "no_primary", "writable_conflict", "no_replica",
			"backend_down", "backend_lost", "pool_timeout", "session_state", "no_lease", "changing", "packet_too_large",
			"malformed_handshake", "packet_out_of_order"},
		"dbrouter_queries_total/route":                  {"routed", "pinned"},
		"dbrouter_query_duration_seconds/route":         {"primary", "replica", "pinned"},
		"dbrouter_query_duration_seconds/kind":          {"read", "write", "other"},
		"dbrouter_causal_reads_total/result":            {"waited", "primary"},
		"dbrouter_backend_connections/state":            {"open", "idle"},
		"dbrouter_pinned_sessions/reason":               testReasons,
		"dbrouter_backend_connections/member":           {"db1", "db2"},
		"dbrouter_queries_total/member":                 {"db1", "db2"},
		"dbrouter_backend_inflight/member":              {"db1", "db2"},
		"dbrouter_client_protocol_errors_total/cluster": {"shop"},
	} {
		if len(values[key]) != len(vals) {
			t.Errorf("%s: values %v, want %v", key, values[key], vals)
		}
		for _, v := range vals {
			if !values[key][v] {
				t.Errorf("%s: no series %q (has %v)", key, v, values[key])
			}
		}
	}
}

// TestMetricsOfTwoClustersOnOneRegistry: two proxies (two clusters in one
// routerd) share a registry, and each exports its own series, read from
// its own pools. Before, the second proxy's vectors failed to register
// and the error was dropped: its queries, errors and causal reads were
// never exported.
func TestMetricsOfTwoClustersOnOneRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	for _, name := range []string{"shop", "blog"} {
		m := newTestMetrics(t, reg, name)
		m.Queries(0, false).Inc()
		m.Errors(KindPoolTimeout).Inc()
		m.CausalWaited.Inc()
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{
		"dbrouter_queries_total": 1, "dbrouter_errors_total": 1, "dbrouter_causal_reads_total": 1,
		"dbrouter_backend_connections": 3 + 1 + 1, "dbrouter_backend_inflight": 2, "dbrouter_pinned_sessions": 2,
		"dbrouter_client_sessions": 0,
	}
	for _, mf := range mfs {
		w, ok := want[mf.GetName()]
		if !ok {
			continue
		}
		clusters := map[string]float64{}
		for _, s := range mf.GetMetric() {
			for _, l := range s.GetLabel() {
				if l.GetName() == "cluster" {
					clusters[l.GetValue()] += s.GetCounter().GetValue() + s.GetGauge().GetValue()
				}
			}
		}
		for _, c := range []string{"shop", "blog"} {
			if v, ok := clusters[c]; !ok || v != w {
				t.Errorf("%s{cluster=%s} = %v (present %v), want %v", mf.GetName(), c, v, ok, w)
			}
		}
	}
}

// TestMetricsRegistrationConflictIsAnError: a collector the registry
// refuses is an error, never ignored.
func TestMetricsRegistrationConflictIsAnError(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dbrouter_queries_total", Help: "something else"}, []string{"other"}))
	_, err := NewMetrics(reg, "shop", nil, nil)
	if err == nil || !strings.Contains(err.Error(), "dbrouter_queries_total") {
		t.Fatalf("a conflicting dbrouter_queries_total: %v, want an error naming it", err)
	}
	reg = prometheus.NewRegistry()
	newTestMetrics(t, reg, "shop")
	if _, err := NewMetrics(reg, "shop", nil, nil); err == nil {
		t.Fatal("a second proxy of the same cluster on one registry: no error")
	}
}
