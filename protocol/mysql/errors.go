package mysql

import (
	"errors"
	"fmt"

	"github.com/dbrouter/dbrouter/router"
)

// The proxy's own error codes. Errors from a member reach the client unchanged;
// errors of the proxy itself use exactly these codes, which docs/routing.md
// lists. Where a standard code means the same thing it is reused, so client
// libraries' retry logic keeps working.
const (
	CodeAccessDenied     = 1045 // ER_ACCESS_DENIED_ERROR
	CodeUnknownCommand   = 1047 // ER_UNKNOWN_COM_ERROR
	CodeNoSuchThread     = 1094 // ER_NO_SUCH_THREAD: KILL of an unknown session id
	CodeKillDenied       = 1095 // ER_KILL_DENIED_ERROR: KILL of another user's session
	CodePacketTooLarge   = 1153 // ER_NET_PACKET_TOO_LARGE
	CodeUnknownStmt      = 1243 // ER_UNKNOWN_STMT_HANDLER
	CodeMalformedPacket  = 1835 // ER_MALFORMED_PACKET
	CodeConnectionKilled = 1927 // ER_CONNECTION_KILLED: the session killed itself
	CodeTLSRequired      = 3159 // ER_SECURE_TRANSPORT_REQUIRED
	CodeNoPrimary        = 9001 // no eligible primary for a write
	CodeWritableConflict = 9002 // more than one writable member
	CodeNoReplica        = 9003 // read refused: no eligible replica and reads_without_replica=fail
	CodeBackendDown      = 9004 // could not connect to the chosen member
	CodeBackendLost      = 9005 // member connection lost during the statement
	CodePoolTimeout      = 9006 // every backend connection of the member busy for pool_timeout
	CodeSessionState     = 9007 // session state could not be replayed on the chosen member
	CodeNoLease          = 9008 // write held for write_hold_timeout: the proxy lost the control plane
	CodeChanging         = 9009 // write held for write_hold_timeout: a primary change did not finish
	CodeAckFenced        = 9010 // the primary changed while the statement ran: outcome unknown, not acknowledged
)

// errorTable maps what went wrong inside the proxy to what the client sees.
var errorTable = []struct {
	target error
	code   uint16
	state  string
}{
	{router.ErrNoPrimary, CodeNoPrimary, "HY000"},
	{router.ErrWritableConflict, CodeWritableConflict, "HY000"},
	{router.ErrNoReplica, CodeNoReplica, "HY000"},
	{router.ErrNoLease, CodeNoLease, "HY000"},
	{router.ErrChanging, CodeChanging, "HY000"},
	{errBackendDown, CodeBackendDown, "08S01"},
	{errBackendLost, CodeBackendLost, "08S01"},
	{errPoolTimeout, CodePoolTimeout, "HY000"},
	{errSessionState, CodeSessionState, "HY000"},
	{errAckFenced, CodeAckFenced, "HY000"},
	{ErrPacketTooLarge, CodePacketTooLarge, "08S01"},
}

var (
	errBackendDown  = errors.New("member unreachable")
	errBackendLost  = errors.New("member connection lost")
	errPoolTimeout  = errors.New("no free backend connection")
	errSessionState = errors.New("session state replay failed")
	errAckFenced    = errors.New("the primary changed, or this proxy lost its write lease, while the statement ran: it may or may not have been applied, and is not acknowledged")
)

// toServerError turns a proxy-side error into the ERR packet a client gets.
// The message always starts with "dbrouter: cluster NAME:" so an operator can
// tell the proxy's errors from the database's.
func toServerError(cluster string, err error) *ServerError {
	var se *ServerError
	if errors.As(err, &se) {
		return se
	}
	msg := fmt.Sprintf("dbrouter: cluster %s: %v", cluster, err)
	for _, e := range errorTable {
		if errors.Is(err, e.target) {
			return &ServerError{Code: e.code, State: e.state, Message: msg}
		}
	}
	return &ServerError{Code: CodeBackendLost, State: "HY000", Message: msg}
}
