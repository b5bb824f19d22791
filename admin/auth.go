package admin

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// AuthHeader carries "v2:unix-seconds:nonce:hex-hmac" on requests that
// change state or that only the control plane may make, and TargetHeader
// the name of the node the request is for. The MAC covers the method, the
// target node, the path with query, the time, a random nonce and a hash of
// the body, keyed with the cluster secret. A request signed more than
// MaxSkew away from the server's clock is refused; within that window the
// server remembers every nonce it accepted (Replays) and refuses a second
// request with one, and it refuses a request for another node, so a
// captured request can be replayed neither to its node nor to another.
// The target is the node's name (config name, its Raft id), not its
// address, so that requests through a port forward or a proxy still pass.
const (
	AuthHeader   = "X-Dbrouter-Auth"
	TargetHeader = "X-Dbrouter-Target"
)

// MaxSkew is how far a signed request's time may be from the server's.
const MaxSkew = time.Minute

const signVersion = "v2"

// ErrUnauthenticated: the request was not signed with the cluster secret,
// or was a replay.
var ErrUnauthenticated = errors.New("request not signed with the cluster secret")

func requestMAC(secret []byte, method, target, uri string, ts int64, nonce string, body []byte) string {
	sum := sha256.Sum256(body)
	h := hmac.New(sha256.New, secret)
	fmt.Fprintf(h, "%s\n%s\n%q\n%s\n%d\n%s\n%x", signVersion, method, target, uri, ts, nonce, sum)
	return hex.EncodeToString(h.Sum(nil))
}

// Sign sets AuthHeader and TargetHeader on r for body, with a fresh nonce;
// target is the name of the node r is for.
func Sign(r *http.Request, body []byte, secret []byte, target string, now time.Time) {
	var n [16]byte
	if _, err := rand.Read(n[:]); err != nil {
		panic("admin: no randomness for a nonce: " + err.Error()) // crypto/rand does not fail on Linux
	}
	nonce := hex.EncodeToString(n[:])
	ts := now.Unix()
	r.Header.Set(TargetHeader, target)
	r.Header.Set(AuthHeader, signVersion+":"+strconv.FormatInt(ts, 10)+":"+nonce+":"+requestMAC(secret, r.Method, target, r.URL.RequestURI(), ts, nonce, body))
}

// Signature is a verified request's time, nonce and target node.
type Signature struct {
	Time   time.Time
	Nonce  string
	Target string
}

// Verify checks r's signature over body and its time; it does not check
// for replays (Replays does) or the target node (the server does).
func Verify(r *http.Request, body []byte, secret []byte, now time.Time) (Signature, error) {
	v := r.Header.Get(AuthHeader)
	if v == "" {
		return Signature{}, fmt.Errorf("%w: no %s header", ErrUnauthenticated, AuthHeader)
	}
	parts := strings.Split(v, ":")
	if len(parts) != 4 || parts[0] != signVersion {
		return Signature{}, fmt.Errorf("%w: %s is not %s:time:nonce:mac (signed by an older routerctl or routerd? upgrade it)", ErrUnauthenticated, AuthHeader, signVersion)
	}
	ts, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil {
		return Signature{}, fmt.Errorf("%w: bad time %q", ErrUnauthenticated, parts[1])
	}
	nonce := parts[2]
	if len(nonce) < 16 || len(nonce) > 64 {
		return Signature{}, fmt.Errorf("%w: bad nonce", ErrUnauthenticated)
	}
	if d := now.Sub(time.Unix(ts, 0)); d > MaxSkew || d < -MaxSkew {
		return Signature{}, fmt.Errorf("%w: signed %s away from this server's clock (limit %s)", ErrUnauthenticated, d.Round(time.Second), MaxSkew)
	}
	target := r.Header.Get(TargetHeader)
	if !hmac.Equal([]byte(parts[3]), []byte(requestMAC(secret, r.Method, target, r.URL.RequestURI(), ts, nonce, body))) {
		return Signature{}, fmt.Errorf("%w: signature does not match", ErrUnauthenticated)
	}
	return Signature{Time: time.Unix(ts, 0), Nonce: nonce, Target: target}, nil
}

// ErrReplayed: a signed request's nonce was already used.
var ErrReplayed = fmt.Errorf("%w: replayed (its nonce was already used)", ErrUnauthenticated)

// maxNonces bounds the nonces remembered: only holders of the secret can
// add any, but a runaway script must not grow the map without limit.
const maxNonces = 1 << 16

// Replays remembers the nonces of accepted signed requests for as long as
// their time is within MaxSkew, the window in which Verify accepts them.
type Replays struct {
	mu     sync.Mutex
	seen   map[string]time.Time // nonce → when it stops being accepted anyway
	pruned time.Time
}

// Use records sig's nonce, or returns ErrReplayed if it was already used.
func (rp *Replays) Use(sig Signature, now time.Time) error {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	if rp.seen == nil {
		rp.seen = map[string]time.Time{}
	}
	if _, ok := rp.seen[sig.Nonce]; ok {
		return ErrReplayed
	}
	if len(rp.seen) >= 1024 && now.Sub(rp.pruned) > time.Second {
		rp.pruned = now
		for n, until := range rp.seen {
			if now.After(until) {
				delete(rp.seen, n)
			}
		}
	}
	if len(rp.seen) >= maxNonces {
		return fmt.Errorf("%w: more than %d signed requests in %s; try again shortly", ErrUnauthenticated, maxNonces, 2*MaxSkew)
	}
	rp.seen[sig.Nonce] = sig.Time.Add(MaxSkew + time.Second)
	return nil
}

// Client calls an admin API, signing every request when it holds the secret.
type Client struct {
	Addr   string
	Secret []byte
	// Node is the name of the node at Addr, which signed requests are for;
	// empty: asked of the node (GET /v1/node) before the first one.
	Node string
	// Token is sent as a bearer token (admin.token) when set.
	Token string
	HTTP  *http.Client

	mu sync.Mutex // guards Node once learnt
}

// NodeAnswer is the JSON of GET /v1/node: the name signed requests to this
// node must be for.
type NodeAnswer struct {
	Node string `json:"node"`
}

// target returns the name of the node at Addr, asking it once.
func (c *Client) target(ctx context.Context) (string, error) {
	c.mu.Lock()
	n := c.Node
	c.mu.Unlock()
	if n != "" {
		return n, nil
	}
	var a NodeAnswer
	if err := (&Client{Addr: c.Addr, HTTP: c.HTTP}).Do(ctx, "GET", "/v1/node", nil, &a); err != nil {
		return "", fmt.Errorf("ask %s for its node name: %w", c.Addr, err)
	}
	if a.Node == "" {
		return "", fmt.Errorf("%s did not say its node name", c.Addr)
	}
	c.mu.Lock()
	c.Node = a.Node
	c.mu.Unlock()
	return a.Node, nil
}

// APIError is an error answer of the admin API.
type APIError struct {
	Status  int
	Message string
	// Leader, on a 421 from a node that does not lead, names the one that
	// does (its admin address), so callers can retry there.
	Leader string
}

func (e *APIError) Error() string { return e.Message }

// Do sends in (JSON; nil for none) and decodes the answer into out (nil to
// discard).
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return err
		}
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+c.Addr+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	if len(c.Secret) > 0 {
		target, err := c.target(ctx)
		if err != nil {
			return err
		}
		Sign(req, body, c.Secret, target, time.Now())
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("%s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error  string `json:"error"`
			Leader string `json:"leader"`
		}
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error = fmt.Sprintf("%s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(b)))
		}
		return &APIError{Status: resp.StatusCode, Message: e.Error, Leader: e.Leader}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%s %s: decode answer: %w", method, path, err)
	}
	return nil
}
