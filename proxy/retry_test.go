package proxy

import (
	"errors"
	"fmt"
	"testing"

	"github.com/dbrouter/dbrouter/router"
)

func TestOnlyAnUnpinnedReadThatReachedNoMemberRunsAgainOnce(t *testing.T) {
	lost := fmt.Errorf("member db2: %w: read: EOF", ErrBackendLost)
	down := fmt.Errorf("member db2 (127.0.0.1:1): %w: connection refused", ErrBackendDown)
	for _, tc := range []struct {
		name         string
		err          error
		attempt      int
		read, pinned bool
		want         bool
	}{
		{"a read whose connection was lost", lost, 0, true, false, true},
		{"a read whose member refused the connection", down, 0, true, false, true},
		{"a second failure of the same read", lost, 1, true, false, false},
		{"a write", lost, 0, false, false, false},
		{"a read of a pinned session", lost, 0, true, true, false},
		{"a pool timeout is no failure of the member", fmt.Errorf("%w", ErrPoolTimeout), 0, true, false, false},
		{"no replica: routing failed, no member failed", router.ErrNoReplica, 0, true, false, false},
		{"an error of no kind", errors.New("boom"), 0, true, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := MayRetry(tc.err, tc.attempt, tc.read, tc.pinned); got != tc.want {
				t.Fatalf("MayRetry = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestLostStatementVerdicts(t *testing.T) {
	for _, tc := range []struct {
		name string
		loss Loss
		want Verdict
	}{
		{"not run: nothing happened", Loss{}, VerdictRetryable},
		{"not run in a transaction: the transaction went with the connection", Loss{InTxn: true}, VerdictTxnLost},
		{"not run with other server-side state: it went with the connection", Loss{State: true}, VerdictTxnLost},
		{"an autocommit write may have committed", Loss{Ran: true}, VerdictUnknown},
		{"a commit in a transaction is in doubt", Loss{Ran: true, InTxn: true}, VerdictUnknown},
		{"a statement in a transaction that keeps it open: rolled back", Loss{Ran: true, InTxn: true, KeepsTxn: true}, VerdictTxnLost},
		{"a read in a transaction: rolled back", Loss{Ran: true, Safe: true, InTxn: true, KeepsTxn: true}, VerdictTxnLost},
		{"a read outside a transaction runs again", Loss{Ran: true, Safe: true, KeepsTxn: true}, VerdictRetryable},
		{"a read of a session with state lost the state", Loss{Ran: true, Safe: true, State: true}, VerdictTxnLost},
		{"a write of a session with state may have committed", Loss{Ran: true, State: true, KeepsTxn: true}, VerdictUnknown},
		{"autocommit off: a write began a transaction that never committed", Loss{Ran: true, KeepsTxn: true, NoAutocommit: true}, VerdictTxnLost},
		{"autocommit off: a commit is in doubt", Loss{Ran: true, NoAutocommit: true}, VerdictUnknown},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.loss.Verdict(); got != tc.want {
				t.Fatalf("%+v: verdict %d, want %d", tc.loss, got, tc.want)
			}
		})
	}
}
