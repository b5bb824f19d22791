// Package proxy owns what every protocol's client-facing proxy shares and
// that is not bytes on the wire: the kinds of error the proxy itself
// returns (each protocol maps every kind to its own codes), the decision
// whether a failed statement may run again, the per-cluster metrics, the
// member connection pool, and the Server lifecycle routerd drives.
// protocol/mysql (and protocol/mongo) keep only their wire format and
// their session semantics; this package knows no protocol.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// Server is one cluster's client-facing proxy, whatever its protocol: what
// daemon runs and the admin API reports on.
//
// There is no Shutdown: Serve's ctx ending is the shutdown (it stops
// accepting, closes every session, waits for them and closes idle member
// connections before it returns), so every owner stops a Server the way
// it stops everything else it runs, and there is one stop path to test.
type Server interface {
	// Serve accepts clients on ln until ctx ends, then closes every
	// session and waits for them.
	Serve(ctx context.Context, ln net.Listener) error
	// Sessions is the number of connected clients.
	Sessions() int
	// MemberConns reports the backend connections of each member, by
	// member name.
	MemberConns() map[string]ConnStats
}

// ConnStats counts one member's backend connections.
type ConnStats struct {
	Open int // open connections, idle or in use
	Idle int // open connections no session is using
}

// Accept returns the next client connection on ln. A temporary failure
// (a Timeout error: out of file descriptors, say) is retried with a
// backoff from 5 ms to 1 s, as net/http does, rather than ending the
// listener; the wait ends early when ctx does. After ctx ended it returns
// ctx's error, so a caller can tell its own stop from a broken listener.
func Accept(ctx context.Context, ln net.Listener) (net.Conn, error) {
	var delay time.Duration
	for {
		nc, err := ln.Accept()
		if err == nil {
			return nc, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			return nil, fmt.Errorf("accept on %s: %w", ln.Addr(), err)
		}
		delay = min(max(delay*2, 5*time.Millisecond), time.Second)
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
}

// WaitOrCut is a graceful stop's wait: it returns when wg's sessions have
// all ended, or, after timeout, calls cut (which must make the remaining
// ones end: close their sockets, cancel their statements) and then waits
// for them. It reports whether the sessions ended by themselves.
func WaitOrCut(wg *sync.WaitGroup, timeout time.Duration, cut func()) bool {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		cut()
		<-done
		return false
	}
}
