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
	"net"
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
