package admin

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/dbrouter/dbrouter/raftfsm"
	"github.com/dbrouter/dbrouter/topology"
)

// TestHealthChecks: /primary and /replica answer 200 only for the member
// that may take writes / serve reads, from the snapshot alone or, with a
// control plane, from its state and this node's standing.
func TestHealthChecks(t *testing.T) {
	snap := func(conflict bool) *topology.Snapshot {
		s := &topology.Snapshot{Cluster: "app", Primary: 0, Members: []topology.Member{
			{Name: "db1", Reachable: true, Role: topology.RolePrimary, Lag: -1},
			{Name: "db2", Reachable: true, ReadOnly: true, Role: topology.RoleReplica, Eligible: true, Lag: 40 * time.Millisecond},
			{Name: "db3", Role: topology.RoleUnknown, Lag: -1, ProbeError: "connection refused"},
		}}
		if conflict {
			s.Conflict = []string{"db1", "db2"}
		}
		return s
	}
	serving := &raftfsm.Cluster{Name: "app", Epoch: 4, Phase: raftfsm.PhaseServing, Primary: "db1", Members: map[string]raftfsm.MemberState{}}
	switching := &raftfsm.Cluster{Name: "app", Epoch: 4, Phase: raftfsm.PhaseSwitching, Primary: "db1", Members: map[string]raftfsm.MemberState{}}
	moved := &raftfsm.Cluster{Name: "app", Epoch: 5, Phase: raftfsm.PhaseServing, Primary: "db2", Members: map[string]raftfsm.MemberState{}}
	fenced := &raftfsm.Cluster{Name: "app", Epoch: 4, Phase: raftfsm.PhaseServing, Primary: "db1", Members: map[string]raftfsm.MemberState{"db2": {Fenced: true}}}
	noLease := &ControlStatus{Node: "p1", Role: "proxy", Leader: "a1", LeaseOK: false}
	leased := &ControlStatus{Node: "p1", Role: "proxy", Leader: "a1", LeaseOK: true}
	noLeader := &ControlStatus{Node: "a1", Role: "arbiter"}

	for _, tc := range []struct {
		name     string
		conflict bool
		fsm      *raftfsm.Cluster // nil: no control plane
		ov       *ControlStatus
		method   string
		path     string
		code     int
		reason   string // substring of the answer
	}{
		{"standalone primary", false, nil, nil, "GET", "/primary?member=db1", 200, "primary"},
		{"standalone replica is not primary", false, nil, nil, "GET", "/primary?member=db2", 503, "the primary is db1"},
		{"standalone conflict", true, nil, nil, "GET", "/primary?member=db1", 503, "several members are writable"},
		{"replica", false, nil, nil, "GET", "/replica?member=db2", 200, "eligible replica"},
		{"replica under lag", false, nil, nil, "GET", "/replica?cluster=app&member=db2&lag=100", 200, ""},
		{"replica over lag", false, nil, nil, "GET", "/replica?member=db2&lag=10", 503, "40 ms behind, over lag=10"},
		{"primary is no replica", false, nil, nil, "GET", "/replica?member=db1", 503, "the primary"},
		{"unreachable replica", false, nil, nil, "GET", "/replica?member=db3", 503, "connection refused"},
		{"HEAD", false, nil, nil, "HEAD", "/primary?member=db1", 200, ""},
		{"OPTIONS (HAProxy's default)", false, nil, nil, "OPTIONS", "/primary?member=db2", 503, ""},
		{"POST", false, nil, nil, "POST", "/primary?member=db1", 405, ""},
		{"unknown member", false, nil, nil, "GET", "/primary?member=db9", 404, "no member"},
		{"unknown cluster", false, nil, nil, "GET", "/primary?cluster=x&member=db1", 404, "no cluster"},
		{"bad lag", false, nil, nil, "GET", "/replica?member=db2&lag=soon", 400, "milliseconds"},
		{"control: epoch primary", false, serving, nil, "GET", "/primary?member=db1", 200, "epoch 4"},
		{"control: mid-switchover", false, switching, nil, "GET", "/primary?member=db1", 503, "writes are held"},
		{"control: the epoch moved on, the snapshot lags", false, moved, nil, "GET", "/primary?member=db1", 503, "the primary of epoch 5 is db2"},
		{"control: new primary before the probes see it", false, moved, nil, "GET", "/primary?member=db2", 200, ""},
		{"control: the old primary is no replica yet", false, moved, nil, "GET", "/replica?member=db2", 503, "the primary"},
		{"control: fenced replica", false, fenced, nil, "GET", "/replica?member=db2", 503, "fenced"},
		{"control: proxy without lease", false, serving, noLease, "GET", "/primary?member=db1", 503, "no write lease"},
		{"control: proxy with lease", false, serving, leased, "GET", "/primary?member=db1", 200, ""},
		{"control: no leader known", false, serving, noLeader, "GET", "/replica?member=db2", 503, "no Raft leader"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := snap(tc.conflict)
			c := Cluster{Name: "app", Kind: "mariadb", Snapshot: func() *topology.Snapshot { return s }}
			var ctl Control
			if tc.fsm != nil {
				c.State = func() *raftfsm.Cluster { return tc.fsm }
				ctl = &fakeControl{ov: tc.ov}
			}
			rec := httptest.NewRecorder()
			New([]Cluster{c}, ctl, prometheus.NewRegistry(), zap.NewNop()).Handler().ServeHTTP(rec, httptest.NewRequest(tc.method, tc.path, nil))
			if rec.Code != tc.code {
				t.Fatalf("%s %s: %d %s, want %d", tc.method, tc.path, rec.Code, rec.Body, tc.code)
			}
			if tc.reason != "" && !strings.Contains(rec.Body.String(), tc.reason) {
				t.Fatalf("%s %s: answer %s, want it to say %q", tc.method, tc.path, rec.Body, tc.reason)
			}
			if tc.code == 200 || tc.code == 503 {
				var a HealthAnswer
				if tc.method != "HEAD" {
					if err := json.Unmarshal(rec.Body.Bytes(), &a); err != nil || a.OK != (tc.code == 200) || a.Cluster != "app" {
						t.Fatalf("answer %s: %+v %v", rec.Body, a, err)
					}
				}
			}
		})
	}
	// Several clusters: cluster= is required.
	s := snap(false)
	cs := []Cluster{{Name: "a", Snapshot: func() *topology.Snapshot { return s }}, {Name: "b", Snapshot: func() *topology.Snapshot { return s }}}
	rec := httptest.NewRecorder()
	New(cs, nil, prometheus.NewRegistry(), zap.NewNop()).Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/primary?member=db1", nil))
	if rec.Code != http.StatusNotFound || !strings.Contains(rec.Body.String(), "cluster= is required") {
		t.Fatalf("two clusters, no cluster=: %d %s", rec.Code, rec.Body)
	}
}

// TestAccessOptions: with a token, reads need it (or the cluster secret's
// signature) while load balancers' checks stay open; pprof only when on.
func TestAccessOptions(t *testing.T) {
	s := &topology.Snapshot{Cluster: "app", Primary: 0, Members: []topology.Member{{Name: "db1", Reachable: true, Role: topology.RolePrimary, Lag: -1}}}
	c := Cluster{Name: "app", Snapshot: func() *topology.Snapshot { return s }, State: func() *raftfsm.Cluster {
		return &raftfsm.Cluster{Name: "app", Epoch: 1, Phase: raftfsm.PhaseServing, Primary: "db1"}
	}}
	fc := &fakeControl{}
	token := "tok-0123456789abcdef"
	for _, tc := range []struct {
		opts  Options
		path  string
		auth  string // "", "token", "wrong", "signed"
		code  int
		error string
	}{
		{Options{}, "/status", "", 200, ""},
		{Options{}, "/debug/pprof/", "", 404, ""},
		{Options{Pprof: true}, "/debug/pprof/", "", 200, ""},
		{Options{Token: []byte(token)}, "/status", "", 401, "requires a token"},
		{Options{Token: []byte(token)}, "/status", "wrong", 401, ""},
		{Options{Token: []byte(token)}, "/status", "token", 200, ""},
		{Options{Token: []byte(token)}, "/status", "signed", 200, ""},
		{Options{Token: []byte(token)}, "/metrics", "", 401, ""},
		{Options{Token: []byte(token)}, "/metrics", "token", 200, ""},
		{Options{Token: []byte(token)}, "/v1/raft/members", "", 401, ""},
		{Options{Token: []byte(token)}, "/v1/clusters/app/history", "", 401, ""},
		{Options{Token: []byte(token), Pprof: true}, "/debug/pprof/", "", 401, ""},
		{Options{Token: []byte(token), Pprof: true}, "/debug/pprof/", "token", 200, ""},
		{Options{Token: []byte(token)}, "/healthz", "", 200, ""},
		{Options{Token: []byte(token)}, "/primary?member=db1", "", 200, ""},
		{Options{Token: []byte(token)}, "/replica?member=db1", "", 503, ""},
	} {
		srv := httptest.NewServer(New([]Cluster{c}, fc, prometheus.NewRegistry(), zap.NewNop()).Configure(tc.opts).Handler())
		addr := strings.TrimPrefix(srv.URL, "http://")
		cl := &Client{Addr: addr}
		switch tc.auth {
		case "token":
			cl.Token = token
		case "wrong":
			cl.Token = "not-the-token-at-all"
		case "signed":
			cl.Secret = fc.Secret()
		}
		err := cl.Do(context.Background(), "GET", tc.path, nil, nil)
		srv.Close()
		code := 200
		var ae *APIError
		if errors.As(err, &ae) {
			code = ae.Status
		} else if err != nil {
			t.Fatalf("%+v %s: %v", tc.opts, tc.path, err)
		}
		if code != tc.code || (tc.error != "" && !strings.Contains(ae.Message, tc.error)) {
			t.Errorf("pprof=%v token=%v GET %s (%s): %d %v, want %d", tc.opts.Pprof, len(tc.opts.Token) > 0, tc.path, tc.auth, code, err, tc.code)
		}
	}
}
