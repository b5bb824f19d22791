package mysql

import (
	"errors"
	"fmt"
)

// What a client is told when a statement ends without an answer from its
// member. A statement that may have changed data and was sent cannot be
// reported as failed (it may have committed) nor as done (the proxy has
// no acknowledgement it may pass on): it is "outcome unknown", with a
// SQLSTATE drivers do not retry blindly.

// lost turns the failure of a statement that was sent on bc (err wraps
// errBackendLost) into what the client is told.
func (s *session) lost(bc *backendConn, c Class, kind respKind, err error) error {
	if !errors.Is(err, errBackendLost) || c.Kind == KindRead || kind == respPrepare {
		return err
	}
	if e := bc.epoch.Load(); e != 0 && !s.p.router.Current(e) {
		// The proxy reset the connection when the epoch ended (or the
		// member went away as it did): either way the failover ended it.
		return outcomeUnknown(s.epochEnded(bc, e))
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
