package proxy

import "errors"

// MayRetry decides whether a statement whose member failed may run again
// on another member: only a read (running it again changes nothing), of a
// session that keeps nothing on its connection (not pinned), that failed
// because its member refused the connection or lost it (the caller also
// knows that no byte of an answer reached the client), and only once
// (attempt 0): a member that fails every statement costs a client one
// more round trip, never a loop.
func MayRetry(err error, attempt int, read, pinned bool) bool {
	return attempt == 0 && read && !pinned && (errors.Is(err, ErrBackendLost) || errors.Is(err, ErrBackendDown))
}

// Verdict is what a statement whose member connection was lost may have
// done, and so what its client is told. A statement that may have changed
// data and was sent can be reported neither as failed (it may have
// committed) nor as done (the proxy has no acknowledgement it may pass
// on): its outcome is unknown, with a code drivers do not retry blindly.
// One that could not have committed anything because a transaction was
// open took the transaction with it: that is known, and retrying the
// transaction is the remedy. Only what did nothing that survives, or
// nothing at all, may simply run again.
type Verdict uint8

const (
	VerdictRetryable Verdict = iota // nothing of it survives: ErrBackendLost
	VerdictTxnLost                  // the session's transaction (or other server-side state) was rolled back with the connection: ErrTxnLost
	VerdictUnknown                  // it may have committed: ErrOutcomeUnknown
)

// Loss is what a session knew of a statement when its member connection
// was lost. Each protocol fills it from its own classification of the
// statement and of the session's state.
type Loss struct {
	// Ran: the statement had been sent and is one that runs (a MySQL
	// prepare, say, runs nothing). One that did not run took nothing
	// with it but the session's state.
	Ran bool
	// Safe: running it changes nothing that outlives the connection: a
	// read, or session state the proxy replays on the next connection.
	Safe bool
	// KeepsTxn: it leaves an open transaction open (it does not commit
	// one, explicitly or implicitly).
	KeepsTxn bool
	// InTxn: the session had a transaction open.
	InTxn bool
	// State: the session kept other server-side state on the connection
	// (locks, temporary tables, variables...), which a lost connection
	// takes with it as it takes a transaction.
	State bool
	// NoAutocommit: autocommit was off, so a statement that changes data
	// began a transaction rather than committing.
	NoAutocommit bool
}

// Verdict decides what the lost statement may have done.
func (l Loss) Verdict() Verdict {
	switch {
	case !l.Ran:
		if l.InTxn || l.State {
			return VerdictTxnLost
		}
		return VerdictRetryable
	case l.InTxn && l.KeepsTxn:
		return VerdictTxnLost
	case l.InTxn:
		return VerdictUnknown // a commit, or a statement that commits implicitly
	case l.Safe && l.State:
		return VerdictTxnLost
	case l.Safe:
		return VerdictRetryable
	case l.NoAutocommit && l.KeepsTxn:
		return VerdictTxnLost // it began a transaction, which never committed
	}
	return VerdictUnknown
}
