package mysql

import (
	"strings"
	"testing"

	"github.com/dbrouter/dbrouter/proxy"
	"github.com/dbrouter/dbrouter/proxy/proxytest"
)

// ownSentinels are the errors this package declares with a kind
// (proxy.NewError), by name. TestEveryErrorKindHasACode finds every
// package-level error in the source and requires it here or in neverSent,
// so an error cannot reach clients without a kind, hence a code.
var ownSentinels = map[string]error{
	"ErrPacketTooLarge":     ErrPacketTooLarge,
	"errMalformedHandshake": errMalformedHandshake,
	"ErrSequence":           ErrSequence,
}

// neverSent are sentinels that steer control flow and never become an ERR
// packet: there is no client left to tell, or the client was already told.
var neverSent = map[string]string{
	"errClientGone": "the client is gone",
	"errQuit":       "the client quit",
	"errHandled":    "the error was already written",
}

// TestEveryErrorKindHasACode: every proxy.Kind has a MySQL code and
// SQLSTATE, and every error this package declares either has a kind or
// never reaches a client. A kind added to the proxy package fails here
// until it gets a row in kindCodes.
func TestEveryErrorKindHasACode(t *testing.T) {
	for _, k := range proxy.Kinds() {
		c := kindCodes[k]
		if c.code == 0 || len(c.state) != 5 {
			t.Errorf("kind %s has no MySQL code and SQLSTATE in kindCodes", k)
		}
	}
	if len(proxy.Kinds()) != len(kindCodes) {
		t.Errorf("%d kinds, %d rows in kindCodes", len(proxy.Kinds()), len(kindCodes))
	}
	proxytest.CheckDeclaredErrors(t, ".", ownSentinels, neverSent, func(err error) bool { return proxy.KindOf(err) != proxy.KindOther })
	if strings.HasPrefix(kindCodes[proxy.KindOutcomeUnknown].state, "08") {
		t.Errorf("outcome unknown with SQLSTATE %s: drivers retry 08xxx as transient", kindCodes[proxy.KindOutcomeUnknown].state)
	}
}
