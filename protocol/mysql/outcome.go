package mysql

import (
	"errors"
	"fmt"

	"github.com/dbrouter/dbrouter/proxy"
)

// lossVerdict decides for a statement of class c (response kind) that a
// session with pins pin had sent (or, sent false, had not yet sent: its
// connection failed before) when the connection was lost (proxy.Loss says
// why each verdict). Its client is told 9005 (retryable), 9011
// (transaction lost, SQLSTATE 40001) or 9010 (outcome unknown, HY000).
func lossVerdict(c Class, kind respKind, pin Pin, sent bool) proxy.Verdict {
	return proxy.Loss{
		Ran:      sent && kind != respPrepare, // a prepare runs nothing
		Safe:     c.Kind == KindRead || c.Kind == KindSet || c.Kind == KindUse,
		KeepsTxn: c.KeepsTxn,
		InTxn:    pin&PinTxn != 0,
		// Locks, temporary tables, user variables...: state a lost
		// connection takes with it, as it takes a transaction.
		State:        pin&^(PinTxn|PinNoAutocommit) != 0,
		NoAutocommit: pin&PinNoAutocommit != 0,
	}.Verdict()
}

// lost turns the loss of bc's connection (err wraps proxy.ErrBackendLost) during
// a statement of class c into what the client is told. pin is the
// session's pins when the statement started; sent, whether the statement
// had gone out.
func (s *session) lost(bc *backendConn, c Class, kind respKind, pin Pin, sent bool, err error) error {
	if !errors.Is(err, proxy.ErrBackendLost) {
		return err
	}
	e := bc.Epoch.Load()
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
	case proxy.VerdictTxnLost:
		return fmt.Errorf("%w: %s: the server rolled back the session's open transaction, with its locks, temporary tables and user variables, and nothing of it was committed; the session goes on: retry the whole transaction", proxy.ErrTxnLost, why)
	case proxy.VerdictUnknown:
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
	return fmt.Errorf("%w: %s: it may or may not have been applied, and is not acknowledged", proxy.ErrOutcomeUnknown, why)
}

// memberError is what the client is told about err on bc's member. A
// verdict about the statement (outcome unknown, transaction lost) leads the
// message, which names the member itself.
func (s *session) memberError(bc *backendConn, err error) *ServerError {
	if !errors.Is(err, proxy.ErrOutcomeUnknown) && !errors.Is(err, proxy.ErrTxnLost) {
		err = fmt.Errorf("member %s: %w", bc.pool.name, err)
	}
	return toServerError(s.p.cfg.Cluster, err)
}
