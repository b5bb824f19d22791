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
	CodeBackendLost      = 9005 // member connection lost during a statement that is safe to run again
	CodePoolTimeout      = 9006 // every backend connection of the member busy for pool_timeout
	CodeSessionState     = 9007 // session state could not be replayed on the chosen member
	CodeNoLease          = 9008 // write held for write_hold_timeout: the proxy lost the control plane
	CodeChanging         = 9009 // write held for write_hold_timeout: a primary change did not finish
	// CodeOutcomeUnknown: a statement that may have changed data ended
	// without an answer the proxy may pass on (connection lost after it was
	// sent, a failover, the write lease lost). Its SQLSTATE is HY000, never
	// 08xxx: drivers and frameworks retry 08xxx as transient, and retrying a
	// COMMIT that did apply duplicates the transaction.
	CodeOutcomeUnknown = 9010
	// CodeTxnLost: the session's open transaction (and its locks, temporary
	// tables, session variables) was rolled back with its connection. SQLSTATE
	// 40001, as for a deadlock: frameworks retry the whole transaction.
	CodeTxnLost = 9011
)

// errorTable is the one table mapping what went wrong inside the proxy to
// what the client sees and to the kind label of dbrouter_errors_total. An
// error wrapping several targets gets the first that matches, so the
// verdicts about a statement's outcome come before the causes they wrap.
var errorTable = []struct {
	target error
	code   uint16
	state  string
	kind   string
}{
	{errOutcomeUnknown, CodeOutcomeUnknown, "HY000", "outcome_unknown"},
	{errTxnLost, CodeTxnLost, "40001", "transaction_lost"},
	{router.ErrNoPrimary, CodeNoPrimary, "HY000", "no_primary"},
	{router.ErrWritableConflict, CodeWritableConflict, "HY000", "writable_conflict"},
	{router.ErrNoReplica, CodeNoReplica, "HY000", "no_replica"},
	{router.ErrNoLease, CodeNoLease, "HY000", "no_lease"},
	{router.ErrChanging, CodeChanging, "HY000", "changing"},
	{errBackendDown, CodeBackendDown, "08S01", "backend_down"},
	{errBackendLost, CodeBackendLost, "08S01", "backend_lost"},
	{errPoolTimeout, CodePoolTimeout, "HY000", "pool_timeout"},
	{errSessionState, CodeSessionState, "HY000", "session_state"},
	{ErrPacketTooLarge, CodePacketTooLarge, "08S01", "packet_too_large"},
	{errMalformedHandshake, CodeMalformedPacket, "HY000", "malformed_handshake"},
	{ErrSequence, CodeMalformedPacket, "HY000", "packet_out_of_order"},
}

// otherKind labels errors the table does not know (a bug: the table test
// lists every sentinel).
const otherKind = "other"

var (
	errBackendDown  = errors.New("member unreachable")
	errBackendLost  = errors.New("member connection lost")
	errPoolTimeout  = errors.New("no free backend connection")
	errSessionState = errors.New("session state replay failed")
	// errOutcomeUnknown and errTxnLost are verdicts about a statement, wrapped
	// with the reason (see session.lost).
	errOutcomeUnknown = errors.New("outcome unknown")
	errTxnLost        = errors.New("transaction lost")
)

// lookupError finds err's row in errorTable (-1: none).
func lookupError(err error) int {
	for i, e := range errorTable {
		if errors.Is(err, e.target) {
			return i
		}
	}
	return -1
}

// toServerError turns a proxy-side error into the ERR packet a client gets.
// The message always starts with "dbrouter: cluster NAME:" so an operator can
// tell the proxy's errors from the database's.
func toServerError(cluster string, err error) *ServerError {
	var se *ServerError
	if errors.As(err, &se) {
		return se
	}
	msg := fmt.Sprintf("dbrouter: cluster %s: %v", cluster, err)
	if i := lookupError(err); i >= 0 {
		return &ServerError{Code: errorTable[i].code, State: errorTable[i].state, Message: msg}
	}
	return &ServerError{Code: CodeBackendLost, State: "HY000", Message: msg}
}
