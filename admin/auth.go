package admin

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// AuthHeader carries "unix-seconds:hex-hmac" on requests that change state
// or that only the control plane may make. The MAC covers the method, the
// path with query, the time and a hash of the body, keyed with the cluster
// secret; a request signed more than MaxSkew away from the server's clock is
// refused, which bounds replays to that window.
const AuthHeader = "X-Dbrouter-Auth"

// MaxSkew is how far a signed request's time may be from the server's.
const MaxSkew = time.Minute

// ErrUnauthenticated: the request was not signed with the cluster secret.
var ErrUnauthenticated = errors.New("request not signed with the cluster secret")

func requestMAC(secret []byte, method, uri string, ts int64, body []byte) string {
	sum := sha256.Sum256(body)
	h := hmac.New(sha256.New, secret)
	fmt.Fprintf(h, "%s\n%s\n%d\n%x", method, uri, ts, sum)
	return hex.EncodeToString(h.Sum(nil))
}

// Sign sets AuthHeader on r for body.
func Sign(r *http.Request, body []byte, secret []byte, now time.Time) {
	ts := now.Unix()
	r.Header.Set(AuthHeader, strconv.FormatInt(ts, 10)+":"+requestMAC(secret, r.Method, r.URL.RequestURI(), ts, body))
}

// Verify checks r's signature over body.
func Verify(r *http.Request, body []byte, secret []byte, now time.Time) error {
	v := r.Header.Get(AuthHeader)
	tsStr, mac, ok := strings.Cut(v, ":")
	if v == "" || !ok {
		return fmt.Errorf("%w: no %s header", ErrUnauthenticated, AuthHeader)
	}
	ts, err := strconv.ParseInt(tsStr, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: bad time %q", ErrUnauthenticated, tsStr)
	}
	if d := now.Sub(time.Unix(ts, 0)); d > MaxSkew || d < -MaxSkew {
		return fmt.Errorf("%w: signed %s away from this server's clock (limit %s)", ErrUnauthenticated, d.Round(time.Second), MaxSkew)
	}
	if !hmac.Equal([]byte(mac), []byte(requestMAC(secret, r.Method, r.URL.RequestURI(), ts, body))) {
		return fmt.Errorf("%w: signature does not match", ErrUnauthenticated)
	}
	return nil
}

// Client calls an admin API, signing every request when it holds the secret.
type Client struct {
	Addr   string
	Secret []byte
	HTTP   *http.Client
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
	if len(c.Secret) > 0 {
		Sign(req, body, c.Secret, time.Now())
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
