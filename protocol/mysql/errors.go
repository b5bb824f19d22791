package mysql

import (
	"errors"
	"fmt"

	"github.com/dbrouter/dbrouter/proxy"
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

// kindCodes is the one table mapping what went wrong inside the proxy
// (its proxy.Kind, also the kind label of dbrouter_errors_total) to what
// a MySQL client sees. Every kind has a row (TestEveryErrorKindHasACode);
// KindOther, an error no kind covers, is told as a lost connection.
var kindCodes = [proxy.NumKinds]struct {
	code  uint16
	state string
}{
	proxy.KindOther:              {CodeBackendLost, "HY000"},
	proxy.KindOutcomeUnknown:     {CodeOutcomeUnknown, "HY000"},
	proxy.KindTxnLost:            {CodeTxnLost, "40001"},
	proxy.KindNoPrimary:          {CodeNoPrimary, "HY000"},
	proxy.KindWritableConflict:   {CodeWritableConflict, "HY000"},
	proxy.KindNoReplica:          {CodeNoReplica, "HY000"},
	proxy.KindNoLease:            {CodeNoLease, "HY000"},
	proxy.KindChanging:           {CodeChanging, "HY000"},
	proxy.KindBackendDown:        {CodeBackendDown, "08S01"},
	proxy.KindBackendLost:        {CodeBackendLost, "08S01"},
	proxy.KindPoolTimeout:        {CodePoolTimeout, "HY000"},
	proxy.KindSessionState:       {CodeSessionState, "HY000"},
	proxy.KindPacketTooLarge:     {CodePacketTooLarge, "08S01"},
	proxy.KindMalformedHandshake: {CodeMalformedPacket, "HY000"},
	proxy.KindPacketOutOfOrder:   {CodeMalformedPacket, "HY000"},
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
	c := kindCodes[proxy.KindOf(err)]
	return &ServerError{Code: c.code, State: c.state, Message: msg}
}
