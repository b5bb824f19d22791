package mongo

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/dbrouter/dbrouter/protocol/mongo/wire"
	"github.com/dbrouter/dbrouter/proxy"
	"github.com/dbrouter/dbrouter/proxy/proxytest"
)

// ownSentinels are the errors this package declares with a kind
// (proxy.NewError), by name. TestEveryErrorKindHasACode finds every
// package-level error in the source and requires it here or in neverSent,
// so an error cannot reach clients without a kind, hence a code.
var ownSentinels = map[string]error{
	"ErrMessageTooLarge":  ErrMessageTooLarge,
	"ErrMalformedMessage": ErrMalformedMessage,
}

// neverSent are sentinels that never become a client's error reply.
var neverSent = map[string]string{
	"errUnknownUser": "told to the client as AuthenticationFailed, like every SCRAM failure",
	"errRetarget":    "forward routes the write again; never answered",
}

// TestEveryErrorKindHasACode: every proxy.Kind has a Mongo code and
// codeName, and every error this package declares has a kind or never
// reaches a client. A kind added to the proxy package fails here until it
// gets a row in kindCodes (and docs/mongo.md).
func TestEveryErrorKindHasACode(t *testing.T) {
	for _, k := range proxy.Kinds() {
		c := kindCodes[k]
		if c.Code == 0 || c.Name == "" {
			t.Errorf("kind %s has no code in kindCodes", k)
		}
	}
	proxytest.CheckDeclaredErrors(t, ".", ownSentinels, neverSent, func(err error) bool { return proxy.KindOf(err) != proxy.KindOther })
}

// TestProxyCodesAreDistinctAndDocumented: each of the proxy's own codes is
// one number and one name, and docs/mongo.md's table lists it, so every
// client error is one the docs promise.
func TestProxyCodesAreDistinctAndDocumented(t *testing.T) {
	docs := readDoc(t)
	all := []Code{CodeProtocolError, CodeUnauthorized, CodeAuthenticationFailed, CodeNotRoutedYet,
		CodeBadValue, CodeCursorNotFound, CodeNoSuchTransaction, CodeIllegalOperation}
	all = append(all, kindCodes[:]...)
	byCode := map[int32]string{}
	for _, c := range all {
		if n, ok := byCode[c.Code]; ok && n != c.Name {
			t.Errorf("code %d is both %s and %s", c.Code, n, c.Name)
		}
		byCode[c.Code] = c.Name
		if !strings.Contains(docs, fmt.Sprintf("| %d | `%s` |", c.Code, c.Name)) {
			t.Errorf("docs/mongo.md has no row \"| %d | `%s` |\"", c.Code, c.Name)
		}
	}
}

func TestWireErrorsGetTheirCodes(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want Code
	}{
		{&wire.MessageError{Field: "messageLength", Err: wire.ErrTooLarge}, CodeMessageTooLarge},
		{&wire.MessageError{Field: "checksum", Err: wire.ErrChecksum}, CodeProtocolError},
		{&wire.MessageError{Field: "opCode", Err: wire.ErrCompressed}, CodeProtocolError},
		{&wire.MessageError{Field: "opCode", Err: wire.ErrUnknownOpCode}, CodeProtocolError},
	} {
		if got := codeOf(wireError(tc.err)); got != tc.want {
			t.Errorf("%v: code %v, want %v", tc.err, got, tc.want)
		}
	}
}

// readDoc is docs/mongo.md, which promises the codes clients see.
func readDoc(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../../docs/mongo.md")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
