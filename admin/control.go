package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/dbrouter/dbrouter/arbiter"
	"github.com/dbrouter/dbrouter/raftfsm"
)

// Control is what the admin API needs of the control plane; nil on a
// standalone proxy. Operations that must run on the Raft leader are
// forwarded there by the implementation.
type Control interface {
	Secret() []byte
	// Node is this node's name: what signed requests must be for.
	Node() string
	Overview() ControlStatus
	Members() ([]raftfsm.Server, error)
	Join(ctx context.Context, req JoinRequest) error
	// AddArbiter adds a voter to the running group; Remove takes any node
	// (arbiter or proxy) out of it.
	AddArbiter(ctx context.Context, req JoinRequest) error
	Remove(ctx context.Context, id string) error
	Lease(ctx context.Context, proxy string, applied uint64) (LeaseAnswer, error)
	Observe(cluster string) (arbiter.Observation, error)
	Promote(ctx context.Context, cluster, member string, timeout time.Duration) error
	Maintenance(ctx context.Context, cluster, member string, on bool) error
}

// ControlStatus is the control plane part of /status.
type ControlStatus struct {
	Node   string `json:"node"`
	Role   string `json:"role"`
	Leader string `json:"leader"`
	Term   uint64 `json:"term"`
	// Applied is the last log index this node applied.
	Applied uint64 `json:"applied_index"`
	// LeaseOK and LeaseAgeMs: on a proxy, whether it may route writes and
	// how old its lease is (-1: never had one).
	LeaseOK      bool          `json:"lease_ok"`
	LeaseAgeMs   int64         `json:"lease_age_ms"`
	Incompatible string        `json:"incompatible,omitempty"`
	Proxies      []ProxyStatus `json:"proxies"`
}

// ProxyStatus is one proxy of the group.
type ProxyStatus struct {
	ID    string `json:"id"`
	Site  string `json:"site,omitempty"`
	Admin string `json:"admin,omitempty"`
	// LeaseAgeMs is how long ago the proxy last renewed its lease with the
	// leader (-1: not known to this node; only the leader knows).
	LeaseAgeMs int64 `json:"lease_age_ms"`
}

// JoinRequest asks the leader to add a proxy as a non-voter.
type JoinRequest struct {
	ID    string `json:"id"`
	Raft  string `json:"raft"`
	Admin string `json:"admin,omitempty"`
	Site  string `json:"site,omitempty"`
}

// LeaseRequest is a proxy's lease renewal: Applied is the last log index it
// has applied, which tells the leader the proxy holds writes for every change
// up to there.
type LeaseRequest struct {
	Proxy   string `json:"proxy"`
	Applied uint64 `json:"applied"`
}

// LeaseAnswer is the leader's half of a lease renewal.
type LeaseAnswer struct {
	Index  uint64 `json:"index"`
	Leader string `json:"leader"`
}

// PromoteRequest is the body of POST /v1/clusters/{name}/promote.
type PromoteRequest struct {
	Member  string `json:"member"`
	Timeout string `json:"timeout,omitempty"`
}

// RemoveRequest is the body of POST /v1/raft/remove.
type RemoveRequest struct {
	ID string `json:"id"`
}

// MaintenanceRequest is the body of POST /v1/clusters/{name}/maintenance.
type MaintenanceRequest struct {
	Member string `json:"member"`
	On     bool   `json:"on"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// writeError maps an error to a status code callers can branch on: 401 not
// signed, 404 unknown cluster, 409 refused, 421 not the leader (with the
// leader's name), 503 no leader or quorum, 400 bad request, 500 otherwise.
func writeError(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	body := map[string]string{"error": err.Error()}
	var nl *raftfsm.ErrNotLeader
	var bad *badRequest
	var fwd *APIError
	switch {
	case errors.As(err, &fwd):
		// An answer forwarded from the leader keeps its status.
		code = fwd.Status
		if fwd.Leader != "" {
			body["leader"] = fwd.Leader
		}
	case errors.Is(err, ErrUnauthenticated):
		code = http.StatusUnauthorized
	case errors.As(err, &bad):
		code = http.StatusBadRequest
	case errors.Is(err, raftfsm.ErrUnknownCluster), errors.Is(err, arbiter.ErrNotReady):
		code = http.StatusNotFound
	case errors.Is(err, arbiter.ErrRefused), errors.Is(err, raftfsm.ErrStaleEpoch), errors.Is(err, raftfsm.ErrPhase),
		errors.Is(err, raftfsm.ErrInvalid), errors.Is(err, raftfsm.ErrUnknownMember):
		code = http.StatusConflict
	case errors.As(err, &nl):
		code = http.StatusServiceUnavailable
		if nl.LeaderID != "" {
			code = http.StatusMisdirectedRequest
			body["leader"] = nl.LeaderID
		}
	}
	writeJSON(w, code, body)
}

type badRequest struct{ msg string }

func (b *badRequest) Error() string { return b.msg }

// signed reads the body and checks its signature.
func (s *Server) signed(r *http.Request) ([]byte, error) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		return nil, &badRequest{"read body: " + err.Error()}
	}
	now := time.Now()
	sig, err := Verify(r, body, s.control.Secret(), now)
	if err != nil {
		return nil, err
	}
	if node := s.control.Node(); sig.Target != node {
		return nil, fmt.Errorf("%w: signed for node %q, this is %q", ErrUnauthenticated, sig.Target, node)
	}
	if err := s.replays.Use(sig, now); err != nil {
		return nil, err
	}
	return body, nil
}

// signedJSON serves a signed POST whose body is a Req: check names what is
// wrong with it ("" when nothing), do carries it out and returns the answer.
func signedJSON[Req any](s *Server, check func(*Req) string, do func(*http.Request, *Req) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req Req
		body, err := s.signed(r)
		if err == nil {
			err = decode(body, &req)
		}
		if err == nil {
			if msg := check(&req); msg != "" {
				err = &badRequest{msg}
			}
		}
		var ans any
		if err == nil {
			ans, err = do(r, &req)
		}
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, ans)
	}
}

func decode(body []byte, v any) error {
	if len(body) == 0 {
		return &badRequest{"empty body: a JSON object is required"}
	}
	if err := json.Unmarshal(body, v); err != nil {
		return &badRequest{"body: " + err.Error()}
	}
	return nil
}

func (s *Server) controlRoutes(mux *http.ServeMux) {
	// Open: a client learns which node it reaches (through a port forward,
	// say) before it signs a request for it.
	mux.HandleFunc("GET /v1/node", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, NodeAnswer{Node: s.control.Node()})
	})
	mux.Handle("GET /v1/raft/members", s.reader(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m, err := s.control.Members()
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"servers": m, "leader": s.control.Overview().Leader})
	})))
	mux.HandleFunc("POST /v1/raft/arbiters", signedJSON(s, func(req *JoinRequest) string {
		if req.ID == "" || req.Raft == "" || req.Admin == "" {
			return "adding an arbiter needs id, raft and admin"
		}
		return ""
	}, func(r *http.Request, req *JoinRequest) (any, error) {
		return map[string]string{"added": req.ID}, s.control.AddArbiter(r.Context(), *req)
	}))
	mux.HandleFunc("POST /v1/raft/remove", signedJSON(s, func(req *RemoveRequest) string {
		if req.ID == "" {
			return "remove needs an id"
		}
		return ""
	}, func(r *http.Request, req *RemoveRequest) (any, error) {
		return map[string]string{"removed": req.ID}, s.control.Remove(r.Context(), req.ID)
	}))
	mux.HandleFunc("POST /v1/raft/join", signedJSON(s, func(req *JoinRequest) string {
		if req.ID == "" || req.Raft == "" {
			return "join needs id and raft"
		}
		return ""
	}, func(r *http.Request, req *JoinRequest) (any, error) {
		return map[string]string{"joined": req.ID}, s.control.Join(r.Context(), *req)
	}))
	mux.HandleFunc("POST /v1/raft/lease", signedJSON(s, func(*LeaseRequest) string { return "" },
		func(r *http.Request, req *LeaseRequest) (any, error) {
			return s.control.Lease(r.Context(), req.Proxy, req.Applied)
		}))
	mux.HandleFunc("POST /v1/observe/{cluster}", func(w http.ResponseWriter, r *http.Request) {
		_, err := s.signed(r)
		var o arbiter.Observation
		if err == nil {
			o, err = s.control.Observe(r.PathValue("cluster"))
		}
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, o)
	})
	mux.HandleFunc("POST /v1/clusters/{cluster}/promote", signedJSON(s, func(req *PromoteRequest) string {
		if req.Timeout != "" {
			if d, err := time.ParseDuration(req.Timeout); err != nil || d <= 0 {
				return "timeout " + req.Timeout + " is not a positive duration"
			}
		}
		if req.Member == "" {
			return "promote needs a member"
		}
		return ""
	}, func(r *http.Request, req *PromoteRequest) (any, error) {
		timeout := 30 * time.Second
		if req.Timeout != "" {
			timeout, _ = time.ParseDuration(req.Timeout) // checked above
		}
		return map[string]string{"primary": req.Member}, s.control.Promote(r.Context(), r.PathValue("cluster"), req.Member, timeout)
	}))
	mux.HandleFunc("POST /v1/clusters/{cluster}/maintenance", signedJSON(s, func(req *MaintenanceRequest) string {
		if req.Member == "" {
			return "maintenance needs a member"
		}
		return ""
	}, func(r *http.Request, req *MaintenanceRequest) (any, error) {
		return req, s.control.Maintenance(r.Context(), r.PathValue("cluster"), req.Member, req.On)
	}))
	mux.Handle("GET /v1/clusters/{cluster}/history", s.reader(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, c := range s.clusters {
			if c.Name == r.PathValue("cluster") && c.State != nil {
				if cl := c.State(); cl != nil {
					writeJSON(w, http.StatusOK, map[string]any{"cluster": cl.Name, "epoch": cl.Epoch, "history": cl.History})
					return
				}
			}
		}
		writeError(w, raftfsm.ErrUnknownCluster)
	})))
}
