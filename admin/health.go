package admin

import (
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/dbrouter/dbrouter/raftfsm"
	"github.com/dbrouter/dbrouter/topology"
)

// Load-balancer health checks, as Patroni offers them, for deployments that
// keep HAProxy (or another checker) in front of the members: one check per
// member, answered by any routerd's admin API.
//
//	GET /primary?cluster=C&member=M        200 only while M may take writes
//	GET /replica?cluster=C&member=M&lag=N  200 only while M is an eligible
//	                                       replica at most N ms behind
//
// cluster may be left out on a node with one cluster. Any other answer is
// 503 (404 for an unknown cluster or member, 400 for a bad query), so a
// checker that only looks at the status code does the right thing. HEAD and
// OPTIONS (HAProxy's default check method) answer like GET.
//
// "May take writes" is the control plane's word when there is one: the
// epoch's primary, while the cluster is serving (not mid-switchover or
// failover) and while this node's view is current (a proxy holds its lease,
// an arbiter knows a Raft leader); a node cut off from the arbiters says
// 503 rather than name a primary they may have replaced. Without a control
// plane it is the single writable member the probes see.

// HealthAnswer is the JSON body of /primary and /replica.
type HealthAnswer struct {
	Cluster string `json:"cluster"`
	Member  string `json:"member"`
	OK      bool   `json:"ok"`
	// Reason says why not (or, when OK, what the member is).
	Reason string `json:"reason"`
	LagMs  int64  `json:"lag_ms"`
}

type healthCheck func(c Cluster, s *topology.Snapshot, m topology.Member, fsm *raftfsm.Cluster, q healthQuery) (bool, string)

type healthQuery struct {
	maxLag time.Duration // -1: not asked
}

func (s *Server) healthRoutes(mux *http.ServeMux) {
	mux.HandleFunc("/primary", s.health(s.isWritablePrimary))
	mux.HandleFunc("/replica", s.health(s.isReadableReplica))
}

func (s *Server) health(check healthCheck) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodGet, http.MethodHead, http.MethodOptions:
		default:
			w.Header().Set("Allow", "GET, HEAD, OPTIONS")
			writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": r.Method + " not allowed"})
			return
		}
		q := r.URL.Query()
		ans := HealthAnswer{Cluster: q.Get("cluster"), Member: q.Get("member"), LagMs: -1}
		hq := healthQuery{maxLag: -1}
		if v := q.Get("lag"); v != "" {
			ms, err := strconv.ParseInt(v, 10, 64)
			if err != nil || ms < 0 {
				writeJSON(w, http.StatusBadRequest, map[string]string{"error": fmt.Sprintf("lag=%q: want a number of milliseconds", v)})
				return
			}
			hq.maxLag = time.Duration(ms) * time.Millisecond
		}
		c, ok := s.cluster(ans.Cluster)
		if !ok {
			msg := fmt.Sprintf("no cluster %q here", ans.Cluster)
			if ans.Cluster == "" {
				msg = "cluster= is required on a node with several clusters"
			}
			writeJSON(w, http.StatusNotFound, map[string]string{"error": msg})
			return
		}
		ans.Cluster = c.Name
		snap := c.Snapshot()
		idx := -1
		for i := range snap.Members {
			if snap.Members[i].Name == ans.Member {
				idx = i
			}
		}
		if idx < 0 {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": fmt.Sprintf("cluster %s has no member %q (member= is required)", c.Name, ans.Member)})
			return
		}
		m := snap.Members[idx]
		if m.Lag >= 0 {
			ans.LagMs = m.Lag.Milliseconds()
		}
		var fsm *raftfsm.Cluster
		if c.State != nil {
			if fsm = c.State(); fsm == nil {
				ans.Reason = "the control plane has no state for this cluster yet"
				writeJSON(w, http.StatusServiceUnavailable, ans)
				return
			}
		}
		ans.OK, ans.Reason = check(c, snap, m, fsm, hq)
		code := http.StatusOK
		if !ans.OK {
			code = http.StatusServiceUnavailable
		}
		writeJSON(w, code, ans)
	}
}

func (s *Server) cluster(name string) (Cluster, bool) {
	if name == "" && len(s.clusters) == 1 {
		return s.clusters[0], true
	}
	for _, c := range s.clusters {
		if c.Name == name && name != "" {
			return c, true
		}
	}
	return Cluster{}, false
}

// current says why this node's view of the control plane may be stale
// ("" when it is current).
func (s *Server) current() string {
	if s.control == nil {
		return ""
	}
	o := s.control.Overview()
	switch {
	case o.Role == "proxy" && !o.LeaseOK:
		return "this proxy holds no write lease: its view of the primary may be stale"
	case o.Leader == "":
		return "this node knows no Raft leader: its view of the primary may be stale"
	}
	return ""
}

func (s *Server) isWritablePrimary(c Cluster, snap *topology.Snapshot, m topology.Member, fsm *raftfsm.Cluster, _ healthQuery) (bool, string) {
	if fsm != nil {
		if why := s.current(); why != "" {
			return false, why
		}
		switch {
		case fsm.Phase != raftfsm.PhaseServing:
			return false, fmt.Sprintf("the cluster is %s (epoch %d): writes are held", fsm.Phase, fsm.Epoch)
		case fsm.Primary != m.Name:
			return false, fmt.Sprintf("the primary of epoch %d is %s", fsm.Epoch, fsm.Primary)
		case fsm.Members[m.Name].Fenced:
			return false, "fenced"
		case !m.Reachable:
			return false, "the primary is unreachable from this node"
		}
		return true, fmt.Sprintf("primary of epoch %d", fsm.Epoch)
	}
	switch {
	case len(snap.Conflict) > 0:
		return false, fmt.Sprintf("several members are writable: %v", snap.Conflict)
	case snap.PrimaryName() != m.Name:
		if p := snap.PrimaryName(); p != "" {
			return false, "the primary is " + p
		}
		return false, "no member is primary"
	}
	return true, "primary"
}

func (s *Server) isReadableReplica(c Cluster, snap *topology.Snapshot, m topology.Member, fsm *raftfsm.Cluster, q healthQuery) (bool, string) {
	primary := snap.PrimaryName()
	if fsm != nil {
		if why := s.current(); why != "" {
			return false, why
		}
		primary = fsm.Primary
		st := fsm.Members[m.Name]
		switch {
		case st.Fenced:
			return false, "fenced"
		case st.Maintenance:
			return false, "in maintenance"
		case st.Errant != "":
			return false, "has errant transactions " + st.Errant
		}
	}
	switch {
	case m.Name == primary:
		return false, "the primary"
	case !m.Eligible:
		why := "not eligible for reads"
		if m.ProbeError != "" {
			why += ": " + m.ProbeError
		} else if m.ReplError != "" {
			why += ": " + m.ReplError
		} else if m.Lag < 0 {
			why += ": replication lag unknown"
		} else {
			why += fmt.Sprintf(": %d ms behind (max_replica_lag)", m.Lag.Milliseconds())
		}
		return false, why
	case q.maxLag >= 0 && (m.Lag < 0 || m.Lag > q.maxLag):
		return false, fmt.Sprintf("%d ms behind, over lag=%d", m.Lag.Milliseconds(), q.maxLag.Milliseconds())
	}
	return true, "eligible replica"
}
