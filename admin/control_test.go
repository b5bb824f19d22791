package admin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/dbrouter/dbrouter/arbiter"
	"github.com/dbrouter/dbrouter/raftfsm"
)

func TestSignVerify(t *testing.T) {
	secret := []byte("0123456789abcdef")
	now := time.Unix(1_800_000_000, 0)
	mk := func(body string) *http.Request {
		return httptest.NewRequest("POST", "/v1/clusters/app/promote?x=1", strings.NewReader(body))
	}
	cases := []struct {
		name   string
		mutate func(r *http.Request) ([]byte, time.Time)
		ok     bool
	}{
		{"valid", func(r *http.Request) ([]byte, time.Time) { return []byte(`{"member":"db2"}`), now }, true},
		{"tampered body", func(r *http.Request) ([]byte, time.Time) { return []byte(`{"member":"db3"}`), now }, false},
		{"other path", func(r *http.Request) ([]byte, time.Time) {
			r.URL.Path = "/v1/clusters/app/maintenance"
			return []byte(`{"member":"db2"}`), now
		}, false},
		{"too old", func(r *http.Request) ([]byte, time.Time) { return []byte(`{"member":"db2"}`), now.Add(2 * MaxSkew) }, false},
		{"target changed", func(r *http.Request) ([]byte, time.Time) {
			r.Header.Set(TargetHeader, "a2")
			return []byte(`{"member":"db2"}`), now
		}, false},
		{"old format (no nonce)", func(r *http.Request) ([]byte, time.Time) {
			v := r.Header.Get(AuthHeader)
			parts := strings.Split(v, ":")
			r.Header.Set(AuthHeader, parts[1]+":"+parts[3])
			return []byte(`{"member":"db2"}`), now
		}, false},
		{"no header", func(r *http.Request) ([]byte, time.Time) {
			r.Header.Del(AuthHeader)
			return []byte(`{"member":"db2"}`), now
		}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := mk(`{"member":"db2"}`)
			Sign(r, []byte(`{"member":"db2"}`), secret, "a1", now)
			body, at := tc.mutate(r)
			_, err := Verify(r, body, secret, at)
			if (err == nil) != tc.ok {
				t.Fatalf("Verify = %v, want ok=%v", err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrUnauthenticated) {
				t.Fatalf("error %v does not wrap ErrUnauthenticated", err)
			}
		})
	}
	r := mk("{}")
	Sign(r, []byte("{}"), []byte("another-secret-16b"), "a1", now)
	if _, err := Verify(r, []byte("{}"), secret, now); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("wrong secret: %v", err)
	}
}

type fakeControl struct {
	promoted string
	err      error
	ov       *ControlStatus // Overview's answer (nil: an arbiter that leads)
	node     string         // Node's answer (default a1)
}

func (f *fakeControl) Node() string {
	if f.node == "" {
		return "a1"
	}
	return f.node
}

func (f *fakeControl) Secret() []byte { return []byte("0123456789abcdef") }
func (f *fakeControl) Overview() ControlStatus {
	if f.ov != nil {
		return *f.ov
	}
	return ControlStatus{Node: "a1", Role: "arbiter", Leader: "a1"}
}
func (f *fakeControl) Members() ([]raftfsm.Server, error) {
	return []raftfsm.Server{{ID: "a1", Voter: true}}, nil
}
func (f *fakeControl) Join(context.Context, JoinRequest) error       { return f.err }
func (f *fakeControl) AddArbiter(context.Context, JoinRequest) error { return f.err }
func (f *fakeControl) Remove(context.Context, string) error          { return f.err }
func (f *fakeControl) Lease(context.Context, string, uint64) (LeaseAnswer, error) {
	return LeaseAnswer{Index: 7}, f.err
}
func (f *fakeControl) Observe(string) (arbiter.Observation, error) {
	return arbiter.Observation{}, f.err
}
func (f *fakeControl) Promote(_ context.Context, _, member string, _ time.Duration) error {
	if f.err == nil {
		f.promoted = member
	}
	return f.err
}
func (f *fakeControl) Maintenance(context.Context, string, string, bool) error { return f.err }

func TestControlRoutesNeedTheSecretAndMapErrors(t *testing.T) {
	fc := &fakeControl{}
	srv := httptest.NewServer(New(nil, fc, prometheus.NewRegistry(), zap.NewNop()).Handler())
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	ctx := context.Background()

	// Unsigned: 401, nothing done.
	err := (&Client{Addr: addr}).Do(ctx, "POST", "/v1/clusters/app/promote", PromoteRequest{Member: "db2"}, nil)
	var ae *APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusUnauthorized || fc.promoted != "" {
		t.Fatalf("unsigned promote: %v (promoted %q)", err, fc.promoted)
	}
	signed := &Client{Addr: addr, Secret: fc.Secret()}
	if err := signed.Do(ctx, "POST", "/v1/clusters/app/promote", PromoteRequest{Member: "db2"}, nil); err != nil || fc.promoted != "db2" {
		t.Fatalf("signed promote: %v (promoted %q)", err, fc.promoted)
	}
	cases := []struct {
		err    error
		status int
	}{
		{fmt.Errorf("%w: db9 is not a member", arbiter.ErrRefused), http.StatusConflict},
		{&raftfsm.ErrNotLeader{LeaderID: "a2"}, http.StatusMisdirectedRequest},
		{&raftfsm.ErrNotLeader{}, http.StatusServiceUnavailable},
		{raftfsm.ErrUnknownCluster, http.StatusNotFound},
	}
	for _, tc := range cases {
		fc.err = tc.err
		err := signed.Do(ctx, "POST", "/v1/clusters/app/promote", PromoteRequest{Member: "db2"}, nil)
		if !errors.As(err, &ae) || ae.Status != tc.status || ae.Message != tc.err.Error() {
			t.Fatalf("%v: got %v (status %d), want %d", tc.err, err, ae.Status, tc.status)
		}
	}
	fc.err = nil
	if err := signed.Do(ctx, "POST", "/v1/clusters/app/promote", PromoteRequest{}, nil); !errors.As(err, &ae) || ae.Status != http.StatusBadRequest {
		t.Fatalf("promote without a member: %v", err)
	}
	if err := signed.Do(ctx, "POST", "/v1/clusters/app/promote", PromoteRequest{Member: "db2", Timeout: "soon"}, nil); !errors.As(err, &ae) || ae.Status != http.StatusBadRequest {
		t.Fatalf("bad timeout: %v", err)
	}
	var st Status
	if err := (&Client{Addr: addr}).Do(ctx, "GET", "/status", nil, &st); err != nil || st.Control == nil || st.Control.Leader != "a1" {
		t.Fatalf("status: %v %+v", err, st.Control)
	}
}

// TestSignedRequestsCannotBeReplayed captures a signed promote and sends it
// again, to the same node and to another: both refused, nothing done.
func TestSignedRequestsCannotBeReplayed(t *testing.T) {
	fa := &fakeControl{node: "a1"}
	srvA := httptest.NewServer(New(nil, fa, prometheus.NewRegistry(), zap.NewNop()).Handler())
	defer srvA.Close()
	fb := &fakeControl{node: "a2"}
	srvB := httptest.NewServer(New(nil, fb, prometheus.NewRegistry(), zap.NewNop()).Handler())
	defer srvB.Close()

	body := []byte(`{"member":"db2"}`)
	captured := httptest.NewRequest("POST", srvA.URL+"/v1/clusters/app/promote", nil)
	Sign(captured, body, fa.Secret(), "a1", time.Now())
	send := func(url string, target string) int {
		t.Helper()
		req, err := http.NewRequest("POST", url+"/v1/clusters/app/promote", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set(AuthHeader, captured.Header.Get(AuthHeader))
		req.Header.Set(TargetHeader, target)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := send(srvA.URL, "a1"); code != http.StatusOK || fa.promoted != "db2" {
		t.Fatalf("first use: status %d, promoted %q", code, fa.promoted)
	}
	fa.promoted = ""
	if code := send(srvA.URL, "a1"); code != http.StatusUnauthorized || fa.promoted != "" {
		t.Fatalf("replay to the same node: status %d, promoted %q", code, fa.promoted)
	}
	// To another node holding the same secret: signed for a1, so a2
	// refuses it, whether the target says a1 (the signed one) or a2 (then
	// the signature does not match).
	for _, target := range []string{"a1", "a2"} {
		if code := send(srvB.URL, target); code != http.StatusUnauthorized || fb.promoted != "" {
			t.Fatalf("replay to another node (target %s): status %d, promoted %q", target, code, fb.promoted)
		}
	}
	// A fresh signature still works; the client learns the node's name
	// itself (GET /v1/node).
	cl := &Client{Addr: strings.TrimPrefix(srvB.URL, "http://"), Secret: fb.Secret()}
	if err := cl.Do(context.Background(), "POST", "/v1/clusters/app/promote", PromoteRequest{Member: "db3"}, nil); err != nil || fb.promoted != "db3" || cl.Node != "a2" {
		t.Fatalf("fresh request: %v, promoted %q, node %q", err, fb.promoted, cl.Node)
	}
}

func TestReplaysForgetExpiredNonces(t *testing.T) {
	var rp Replays
	now := time.Unix(1_800_000_000, 0)
	for i := 0; i < 2000; i++ {
		if err := rp.Use(Signature{Time: now, Nonce: fmt.Sprintf("%032d", i)}, now); err != nil {
			t.Fatal(err)
		}
	}
	if err := rp.Use(Signature{Time: now, Nonce: fmt.Sprintf("%032d", 7)}, now); !errors.Is(err, ErrReplayed) {
		t.Fatalf("reused nonce: %v", err)
	}
	later := now.Add(MaxSkew + 2*time.Second)
	if err := rp.Use(Signature{Time: later, Nonce: "fresh-nonce-0000000000000000"}, later); err != nil {
		t.Fatal(err)
	}
	rp.mu.Lock()
	n := len(rp.seen)
	rp.mu.Unlock()
	if n != 1 {
		t.Fatalf("%d nonces remembered after they all expired, want 1", n)
	}
}
