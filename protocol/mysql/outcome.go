package mysql

import (
	"errors"
	"fmt"
)

// What a client is told when a statement ends without an answer from its
// member. A statement that may have changed data and was sent can be
// reported neither as failed (it may have committed) nor as done (the proxy
// has no acknowledgement it may pass on): its outcome is unknown, with a
// SQLSTATE drivers do not retry blindly. One that could not have committed
// anything because a transaction was open took the transaction with it:
// that is known, and retrying the transaction is the remedy. Only what did
// nothing that survives, or nothing at all, is the plain, retryable 9005.

// verdict is what a statement whose connection was lost may have done.
type verdict uint8

const (
	verdictRetryable verdict = iota // nothing of it survives: 9005
	verdictTxnLost                  // the session's transaction (or other server-side state) was rolled back with the connection: 9011
	verdictUnknown                  // it may have committed: 9010
)

// lossVerdict decides for a statement of class c (response kind) that a
// session with pins pin had sent (or, sent false, had not yet sent: its
// connection failed before) when the connection was lost.
func lossVerdict(c Class, kind respKind, pin Pin, sent bool) verdict {
	inTxn := pin&PinTxn != 0
	// Locks, temporary tables, user variables...: state a lost connection
	// takes with it, as it takes a transaction.
	state := pin&^(PinTxn|PinNoAutocommit) != 0
	safe := c.Kind == KindRead || c.Kind == KindSet || c.Kind == KindUse || kind == respPrepare
	switch {
	case !sent || kind == respPrepare:
		if inTxn || state {
			return verdictTxnLost
		}
		return verdictRetryable
	case inTxn && c.KeepsTxn:
		return verdictTxnLost
	case inTxn:
		return verdictUnknown // COMMIT, or a statement that commits implicitly
	case safe && state:
		return verdictTxnLost
	case safe:
		return verdictRetryable
	case pin&PinNoAutocommit != 0 && c.KeepsTxn:
		return verdictTxnLost // it began a transaction, which never committed
	}
	return verdictUnknown
}

// lost turns the loss of bc's connection (err wraps errBackendLost) during
// a statement of class c into what the client is told. pin is the
// session's pins when the statement started; sent, whether the statement
// had gone out.
func (s *session) lost(bc *backendConn, c Class, kind respKind, pin Pin, sent bool, err error) error {
	if !errors.Is(err, errBackendLost) {
		return err
	}
	e := bc.epoch.Load()
	ended := e != 0 && !s.p.router.Current(e)
	moved, changing := s.p.router.Moved(e)
	why := fmt.Sprintf("the connection to %s was lost", bc.pool.name)
	switch {
	case ended:
		why = s.epochEnded(bc, e)
	case moved || changing:
		why += " (the primary is being or was changed: a switchover fences the old primary after drain_timeout, rolling back transactions still open on it)"
	}
	switch lossVerdict(c, kind, pin, sent) {
	case verdictTxnLost:
		return fmt.Errorf("%w: %s: the server rolled back the session's open transaction, with its locks, temporary tables and user variables, and nothing of it was committed; the session goes on: retry the whole transaction", errTxnLost, why)
	case verdictUnknown:
		if !ended {
			why = fmt.Sprintf("the connection to the primary %s was lost after the statement was sent", bc.pool.name)
		}
		return outcomeUnknown(why)
	}
	if ended || moved || changing {
		return fmt.Errorf("%w: %s", err, why)
	}
	return err
}

// epochEnded says why a statement routed to bc's member at epoch may no
// longer be acknowledged.
func (s *session) epochEnded(bc *backendConn, epoch uint64) string {
	if moved, changing := s.p.router.Moved(epoch); moved || changing {
		return fmt.Sprintf("the primary %s failed over while the statement ran on it (routed at epoch %d)", bc.pool.name, epoch)
	}
	return fmt.Sprintf("this proxy lost its write lease while the statement ran on %s (routed at epoch %d)", bc.pool.name, epoch)
}

func outcomeUnknown(why string) error {
	return fmt.Errorf("%w: %s: it may or may not have been applied, and is not acknowledged", errOutcomeUnknown, why)
}

// memberError is what the client is told about err on bc's member. A
// verdict about the statement (outcome unknown, transaction lost) leads the
// message, which names the member itself.
func (s *session) memberError(bc *backendConn, err error) *ServerError {
	if !errors.Is(err, errOutcomeUnknown) && !errors.Is(err, errTxnLost) {
		err = fmt.Errorf("member %s: %w", bc.pool.name, err)
	}
	return toServerError(s.p.cfg.Cluster, err)
}
