package mongo

import (
	"errors"
	"fmt"

	"github.com/dbrouter/dbrouter/protocol/mongo/wire"
	"github.com/dbrouter/dbrouter/proxy"
)

// Code is a MongoDB error code with its codeName, as a command's error
// reply carries them: drivers branch on the number, people search for the
// name. Errors from a member will reach the client unchanged; errors of the
// proxy itself use exactly the codes below, which docs/mongo.md lists.
type Code struct {
	Code int32
	Name string
}

// Codes the server defines, reused where they mean the same thing so that
// drivers and applications that branch on them keep working.
var (
	CodeProtocolError        = Code{17, "ProtocolError"}
	CodeUnauthorized         = Code{13, "Unauthorized"}
	CodeAuthenticationFailed = Code{18, "AuthenticationFailed"}
)

// The proxy's own codes, in a block (9500–9512) that no server release
// names, with codeNames that start with "Dbrouter" so a log line says who
// answered. None is one a driver treats as "the server changed state" or as
// a network error: a driver seeing one keeps its pool.
var (
	// CodeNotRoutedYet: a command the proxy does not forward to members yet
	// (this release answers only the handshake, authentication and ping).
	CodeNotRoutedYet     = Code{9500, "DbrouterNotRoutedYet"}
	CodeNoPrimary        = Code{9501, "DbrouterNoPrimary"}
	CodeWritableConflict = Code{9502, "DbrouterWritableConflict"}
	CodeNoReplica        = Code{9503, "DbrouterNoReplica"}
	CodeNoLease          = Code{9504, "DbrouterNoLease"}
	CodeChanging         = Code{9505, "DbrouterChanging"}
	CodeBackendDown      = Code{9506, "DbrouterBackendDown"}
	CodeBackendLost      = Code{9507, "DbrouterBackendLost"}
	CodePoolTimeout      = Code{9508, "DbrouterPoolTimeout"}
	CodeSessionState     = Code{9509, "DbrouterSessionState"}
	CodeOutcomeUnknown   = Code{9510, "DbrouterOutcomeUnknown"}
	CodeTxnLost          = Code{9511, "DbrouterTransactionLost"}
	CodeMessageTooLarge  = Code{9512, "DbrouterMessageTooLarge"}
)

// kindCodes is the one table mapping what went wrong inside the proxy (its
// proxy.Kind, also the kind label of dbrouter_errors_total) to what a Mongo
// client sees. Every kind has a row (TestEveryErrorKindHasACode), though
// this release, with no members, raises only the protocol kinds: the table
// is the contract docs/mongo.md states for the rest. KindOther, an error no
// kind covers, is told as a lost member connection, as protocol/mysql does.
var kindCodes = [proxy.NumKinds]Code{
	proxy.KindOther:              CodeBackendLost,
	proxy.KindOutcomeUnknown:     CodeOutcomeUnknown,
	proxy.KindTxnLost:            CodeTxnLost,
	proxy.KindNoPrimary:          CodeNoPrimary,
	proxy.KindWritableConflict:   CodeWritableConflict,
	proxy.KindNoReplica:          CodeNoReplica,
	proxy.KindNoLease:            CodeNoLease,
	proxy.KindChanging:           CodeChanging,
	proxy.KindBackendDown:        CodeBackendDown,
	proxy.KindBackendLost:        CodeBackendLost,
	proxy.KindPoolTimeout:        CodePoolTimeout,
	proxy.KindSessionState:       CodeSessionState,
	proxy.KindPacketTooLarge:     CodeMessageTooLarge,
	proxy.KindMalformedHandshake: CodeProtocolError,
	proxy.KindPacketOutOfOrder:   CodeProtocolError,
}

// The package's own sentinels. A wire-level problem is wrapped in one of
// them (with the *wire.MessageError that says where), so that it has a kind
// and so a code.
var (
	// ErrMessageTooLarge: a message over maxMessageSizeBytes. The stream is
	// out of step after it, so the session ends once the client is told.
	ErrMessageTooLarge = proxy.NewError(proxy.KindPacketTooLarge, "message larger than maxMessageSizeBytes")
	// ErrMalformedMessage: a message the codec refused (bad framing, bad
	// checksum, unknown required flags, OP_COMPRESSED, an unknown opcode).
	ErrMalformedMessage = proxy.NewError(proxy.KindMalformedHandshake, "malformed message")
)

// wireError gives a codec error its sentinel, keeping the codec's detail.
func wireError(err error) error {
	if errors.Is(err, wire.ErrTooLarge) {
		return fmt.Errorf("%w: %w", ErrMessageTooLarge, err)
	}
	return fmt.Errorf("%w: %w", ErrMalformedMessage, err)
}

// codeOf is the code a client gets for a proxy-side error.
func codeOf(err error) Code {
	return kindCodes[proxy.KindOf(err)]
}
