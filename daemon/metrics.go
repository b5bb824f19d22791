package daemon

import (
	"runtime/debug"
	"sort"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dbrouter/dbrouter/raftfsm"
)

// Version is the module version and VCS revision routerd was built from,
// as the Go toolchain recorded them: "v1.2.3 0123456789ab+modified go1.24".
func Version() (version, revision, goVersion string) {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown", "", ""
	}
	version, goVersion = bi.Main.Version, bi.GoVersion
	var modified string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			revision = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				modified = "+modified"
			}
		}
	}
	if len(revision) > 12 {
		revision = revision[:12]
	}
	if revision != "" {
		revision += modified
	}
	return version, revision, goVersion
}

func buildInfo() prometheus.Collector {
	v, rev, gov := Version()
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "dbrouter_build_info", Help: "1, labelled with the version, VCS revision and Go version routerd was built from.",
		ConstLabels: prometheus.Labels{"version": v, "revision": rev, "go_version": gov}})
	g.Set(1)
	return g
}

// controlMetrics exports the control plane's state at scrape time, read
// from the replicated state (the same on every node) and this node's Raft
// and lease standing. Their names are a contract (docs/admin.md).
type controlMetrics struct {
	c *control

	leader, term, applied, leaseOK, leaseAge *prometheus.Desc
	epoch, phase, decisions, duration        *prometheus.Desc
	primary                                  *prometheus.Desc
}

func newControlMetrics(c *control) *controlMetrics {
	return &controlMetrics{c: c,
		leader:    prometheus.NewDesc("dbrouter_control_leader", "1 when this node is the Raft leader; 0 when another is; -1 when no leader is known.", nil, nil),
		term:      prometheus.NewDesc("dbrouter_control_term", "This node's Raft term.", nil, nil),
		applied:   prometheus.NewDesc("dbrouter_control_applied_index", "The last Raft log index this node applied.", nil, nil),
		leaseOK:   prometheus.NewDesc("dbrouter_lease_ok", "On a proxy: 1 while it holds a write lease.", nil, nil),
		leaseAge:  prometheus.NewDesc("dbrouter_lease_age_seconds", "On a proxy: how long ago its lease was last renewed (-1: never).", nil, nil),
		primary:   prometheus.NewDesc("dbrouter_primary", "1 for the member the control plane names the cluster's primary (one series per cluster: the member label changes with the primary).", []string{"cluster", "member"}, nil),
		epoch:     prometheus.NewDesc("dbrouter_epoch", "The cluster's epoch: it grows with every change of primary.", []string{"cluster"}, nil),
		phase:     prometheus.NewDesc("dbrouter_phase", "1 for the cluster's phase (serving, switching, failing_over), 0 for the others.", []string{"cluster", "phase"}, nil),
		decisions: prometheus.NewDesc("dbrouter_decisions_total", "Decisions recorded since the group began, by kind (failover_begin, failover_done, switchover_begin, switchover_done, switchover_aborted, member, note, bootstrap).", []string{"cluster", "kind"}, nil),
		duration:  prometheus.NewDesc("dbrouter_change_duration_seconds", "How long the last change with this result took, from its begin (switchover_done, failover_done, switchover_aborted).", []string{"cluster", "result"}, nil),
	}
}

func (m *controlMetrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.leader, m.term, m.applied, m.leaseOK, m.leaseAge, m.epoch, m.phase, m.decisions, m.duration, m.primary} {
		ch <- d
	}
}

var phases = []raftfsm.Phase{raftfsm.PhaseServing, raftfsm.PhaseSwitching, raftfsm.PhaseFailingOver}

func (m *controlMetrics) Collect(ch chan<- prometheus.Metric) {
	n := m.c.node
	leader, _ := n.Leader()
	l := 0.0
	switch leader {
	case "":
		l = -1
	case m.c.cfg.Name:
		l = 1
	}
	st := n.State()
	ch <- prometheus.MustNewConstMetric(m.leader, prometheus.GaugeValue, l)
	ch <- prometheus.MustNewConstMetric(m.term, prometheus.GaugeValue, float64(n.Term()))
	ch <- prometheus.MustNewConstMetric(m.applied, prometheus.GaugeValue, float64(st.Index))
	if m.c.cfg.Role == "proxy" {
		ok, age := n.Lease()
		ch <- prometheus.MustNewConstMetric(m.leaseOK, prometheus.GaugeValue, b2f(ok))
		a := -1.0
		if age >= 0 {
			a = age.Seconds()
		}
		ch <- prometheus.MustNewConstMetric(m.leaseAge, prometheus.GaugeValue, a)
	}
	names := make([]string, 0, len(st.Clusters))
	for name := range st.Clusters {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		cl := st.Clusters[name]
		ch <- prometheus.MustNewConstMetric(m.epoch, prometheus.GaugeValue, float64(cl.Epoch), name)
		if cl.Primary != "" {
			ch <- prometheus.MustNewConstMetric(m.primary, prometheus.GaugeValue, 1, name, cl.Primary)
		}
		for _, p := range phases {
			ch <- prometheus.MustNewConstMetric(m.phase, prometheus.GaugeValue, b2f(cl.Phase == p), name, string(p))
		}
		for kind, c := range cl.Decisions {
			ch <- prometheus.MustNewConstMetric(m.decisions, prometheus.CounterValue, float64(c), name, kind)
		}
		for result, d := range cl.Durations {
			ch <- prometheus.MustNewConstMetric(m.duration, prometheus.GaugeValue, d.Seconds(), name, result)
		}
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
