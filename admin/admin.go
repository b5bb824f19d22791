// Package admin owns routerd's HTTP admin API: /status (the documented JSON
// that routerctl and scripts read), /metrics (Prometheus) and /healthz.
package admin

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/dbrouter/dbrouter/proxy"
	"github.com/dbrouter/dbrouter/raftfsm"
	"github.com/dbrouter/dbrouter/topology"
)

// Cluster is what the admin API shows of one cluster.
type Cluster struct {
	Name     string
	Kind     string
	Listen   string
	Snapshot func() *topology.Snapshot
	// Proxy is the cluster's client-facing proxy (nil on an arbiter): its
	// sessions and backend connections are shown.
	Proxy proxy.Server
	// State is the control plane's state of the cluster (nil without one).
	State func() *raftfsm.Cluster
	// Failover bounds how long a failover can take with this deployment's
	// settings (0: unknown, no control plane): the durability checks
	// compare rpl_semi_sync_master_timeout with it.
	Failover time.Duration
	// Warnings, when set, adds a flavour's own durability warnings
	// (topology/mongo's for a replica set) to the snapshot's.
	Warnings func(*topology.Snapshot) []topology.Warning
	// Describe, when set, gives a flavour's replication position of a
	// member (a replica set's last write optime) and a note about it (why
	// the set does not count it): MariaDB's are in the GTID fields.
	Describe func(topology.Member) (position, note string)
}

// Status is the JSON of GET /status. Its shape is a stable contract
// (docs/admin.md): fields are only ever added.
type Status struct {
	Control  *ControlStatus  `json:"control,omitempty"`
	Clusters []ClusterStatus `json:"clusters"`
}

// ClusterStatus is one cluster.
type ClusterStatus struct {
	Name     string   `json:"name"`
	Kind     string   `json:"kind"`
	Listen   string   `json:"listen"`
	Epoch    uint64   `json:"epoch"`
	Phase    string   `json:"phase"`
	Primary  string   `json:"primary"`
	Conflict []string `json:"conflict,omitempty"`
	// SemiSync is the primary's semi-sync state: "on", or "off (fell back
	// to async)" when writes acknowledged now may be lost in a failover.
	SemiSync string `json:"semi_sync,omitempty"`
	// Warnings are settings that weaken the no-lost-write promise
	// (topology.DurabilityWarnings).
	Warnings []topology.Warning `json:"warnings,omitempty"`
	Sessions int                `json:"client_sessions"`
	Taken    time.Time          `json:"observed_at"`
	Members  []MemberStatus     `json:"members"`
}

// MemberStatus is one member.
type MemberStatus struct {
	Name           string  `json:"name"`
	Addr           string  `json:"addr"`
	Site           string  `json:"site,omitempty"`
	Role           string  `json:"role"`
	Healthy        bool    `json:"healthy"`
	Reachable      bool    `json:"reachable"`
	ReadOnly       bool    `json:"read_only"`
	LagMs          int64   `json:"lag_ms"`
	RTTMs          float64 `json:"rtt_ms"`
	IORunning      bool    `json:"io_running"`
	SQLRunning     bool    `json:"sql_running"`
	GTIDCurrentPos string  `json:"gtid_current_pos"`
	GTIDBinlogPos  string  `json:"gtid_binlog_pos"`
	GTIDSlavePos   string  `json:"gtid_slave_pos"`
	SemiSync       string  `json:"semi_sync,omitempty"`
	Error          string  `json:"error,omitempty"`
	ConnsOpen      int     `json:"backend_connections"`
	ConnsIdle      int     `json:"backend_connections_idle"`
	Maintenance    bool    `json:"maintenance,omitempty"`
	Fenced         bool    `json:"fenced,omitempty"`
	// Errant lists transactions this member has that the primary lacks.
	Errant string `json:"errant,omitempty"`
	// Position is a flavour's replication position when it has no GTIDs
	// (a replica set member's last write: "term:seconds.increment").
	Position string `json:"position,omitempty"`
}

// BuildStatus assembles the status document.
func BuildStatus(clusters []Cluster, control Control) Status {
	st := Status{Clusters: []ClusterStatus{}}
	if control != nil {
		o := control.Overview()
		st.Control = &o
	}
	for _, c := range clusters {
		s := c.Snapshot()
		cs := ClusterStatus{Name: c.Name, Kind: c.Kind, Listen: c.Listen, Phase: "serving", Primary: s.PrimaryName(), Conflict: s.Conflict, Taken: s.Taken,
			Warnings: topology.DurabilityWarnings(s, c.Failover)}
		if c.Warnings != nil {
			cs.Warnings = append(cs.Warnings, c.Warnings(s)...)
		}
		var fsm *raftfsm.Cluster
		if c.State != nil {
			fsm = c.State()
			cs.Phase, cs.Primary = "unknown", ""
			if fsm != nil {
				cs.Epoch, cs.Phase, cs.Primary = fsm.Epoch, string(fsm.Phase), fsm.Primary
			}
		}
		var conns map[string]proxy.ConnStats
		if c.Proxy != nil {
			cs.Sessions = c.Proxy.Sessions()
			conns = c.Proxy.MemberConns()
		}
		for i, m := range s.Members {
			ms := MemberStatus{Name: m.Name, Addr: m.Addr, Site: m.Site, Role: string(m.Role), Reachable: m.Reachable, ReadOnly: m.ReadOnly,
				LagMs: -1, RTTMs: float64(m.RTT.Microseconds()) / 1000, IORunning: m.IORunning, SQLRunning: m.SQLRunning,
				GTIDCurrentPos: m.GTIDCurrentPos, GTIDBinlogPos: m.GTIDBinlogPos, GTIDSlavePos: m.GTIDSlavePos}
			if m.Lag >= 0 {
				ms.LagMs = m.Lag.Milliseconds()
			}
			ms.Healthy = m.Eligible || (i == s.Primary)
			if m.Role == topology.RolePrimary && m.SemiSyncOn {
				ms.SemiSync = "off (fell back to async)"
				if m.SemiSyncActive {
					ms.SemiSync = "on"
				}
			}
			if m.Name == cs.Primary {
				cs.SemiSync = ms.SemiSync
				// Semi-sync is MariaDB's: a replica set's durability is its
				// write concern (its warnings say so).
				if !m.SemiSyncOn && m.Reachable && c.Kind != "mongodb" {
					cs.SemiSync = "disabled"
				}
			}
			if fsm != nil {
				fm := fsm.Members[m.Name]
				ms.Maintenance, ms.Fenced, ms.Errant = fm.Maintenance, fm.Fenced, fm.Errant
				ms.Healthy = ms.Healthy && !fm.Fenced
			}
			ms.Error = m.ProbeError
			if ms.Error == "" {
				ms.Error = m.ReplError
			}
			if c.Describe != nil {
				var note string
				ms.Position, note = c.Describe(m)
				if ms.Error == "" {
					ms.Error = note
				}
			}
			if cc, ok := conns[m.Name]; ok {
				ms.ConnsOpen, ms.ConnsIdle = cc.Open, cc.Idle
			}
			cs.Members = append(cs.Members, ms)
		}
		st.Clusters = append(st.Clusters, cs)
	}
	sort.Slice(st.Clusters, func(i, j int) bool { return st.Clusters[i].Name < st.Clusters[j].Name })
	return st
}

// Server is the admin HTTP server.
type Server struct {
	clusters []Cluster
	control  Control
	gather   prometheus.Gatherer
	log      *zap.Logger
	// replays refuses a signed request used twice (auth.go).
	replays Replays
	opts    Options
}

// New returns an admin server; control is nil on a standalone proxy.
func New(clusters []Cluster, control Control, g prometheus.Gatherer, log *zap.Logger) *Server {
	return &Server{clusters: clusters, control: control, gather: g, log: log.Named("admin")}
}

// Handler returns the HTTP routes.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /status", s.reader(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(BuildStatus(s.clusters, s.control))
	})))
	if s.control != nil {
		s.controlRoutes(mux)
	}
	// Load balancers' checks stay open: they say only up or down.
	s.healthRoutes(mux)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.Handle("GET /metrics", s.reader(promhttp.HandlerFor(s.gather, promhttp.HandlerOpts{})))
	// Profiles, for measuring before optimising: only when admin.pprof
	// is on, as a profile shows code paths, memory and timing to anyone
	// who reaches the port.
	if s.opts.Pprof {
		mux.Handle("GET /debug/pprof/", s.reader(http.HandlerFunc(pprof.Index)))
		mux.Handle("GET /debug/pprof/profile", s.reader(http.HandlerFunc(pprof.Profile)))
	}
	return mux
}

// Options are the admin API's access settings (config admin.pprof,
// admin.token).
type Options struct {
	// Pprof serves /debug/pprof/ (off: 404).
	Pprof bool
	// Token, when set, is required (Authorization: Bearer TOKEN) by
	// /status, /metrics, the control plane's GET routes and pprof; a
	// request signed with the cluster secret passes too. /healthz,
	// /primary and /replica stay open for load balancers.
	Token []byte
}

// Configure sets the access options; call it before Handler or Serve.
func (s *Server) Configure(o Options) *Server {
	s.opts = o
	return s
}

// reader guards a read-only route with the token, when one is configured.
func (s *Server) reader(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(s.opts.Token) == 0 {
			h.ServeHTTP(w, r)
			return
		}
		if tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok && subtle.ConstantTimeCompare([]byte(tok), s.opts.Token) == 1 {
			h.ServeHTTP(w, r)
			return
		}
		if r.Header.Get(AuthHeader) != "" && s.control != nil {
			body, err := s.signed(r)
			if err != nil {
				writeError(w, err)
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
			h.ServeHTTP(w, r)
			return
		}
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "this admin API requires a token (admin.token): send Authorization: Bearer TOKEN (routerctl --token-file)"})
	})
}

// Serve serves on ln until ctx ends.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	err := srv.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		<-done
		return nil
	}
	return err
}
