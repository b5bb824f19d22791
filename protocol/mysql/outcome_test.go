package mysql

import (
	"testing"

	"github.com/dbrouter/dbrouter/proxy"
)

func TestLostStatementVerdicts(t *testing.T) {
	const (
		none  = Pin(0)
		txn   = PinTxn
		noAC  = PinNoAutocommit
		temps = PinTempTable
	)
	for _, tc := range []struct {
		name string
		sql  string
		kind respKind
		pin  Pin
		sent bool
		want proxy.Verdict
	}{
		{"autocommit write may have committed", "INSERT INTO t VALUES (1)", respResult, none, true, proxy.VerdictUnknown},
		{"autocommit DDL may have run", "ALTER TABLE t ADD c INT", respResult, none, true, proxy.VerdictUnknown},
		{"an unknown statement may have done anything", "FROBNICATE t", respResult, none, true, proxy.VerdictUnknown},
		{"a CALL may have committed", "CALL p()", respResult, none, true, proxy.VerdictUnknown},
		{"COMMIT in a transaction is in doubt", "COMMIT", respResult, txn, true, proxy.VerdictUnknown},
		{"DDL in a transaction commits it implicitly", "CREATE TABLE u (id INT)", respResult, txn, true, proxy.VerdictUnknown},
		{"BEGIN in a transaction commits it implicitly", "BEGIN", respResult, txn, true, proxy.VerdictUnknown},
		{"SET autocommit=1 in a transaction commits it", "SET autocommit = 1", respResult, txn, true, proxy.VerdictUnknown},
		{"a CALL in a transaction may commit it", "CALL p()", respResult, txn, true, proxy.VerdictUnknown},
		{"a multi-statement that commits", "INSERT INTO t VALUES (1); COMMIT", respResult, txn, true, proxy.VerdictUnknown},
		{"DML in a transaction: the transaction is lost", "INSERT INTO t VALUES (1)", respResult, txn, true, proxy.VerdictTxnLost},
		{"a read in a transaction: the transaction is lost", "SELECT * FROM t", respResult, txn, true, proxy.VerdictTxnLost},
		{"ROLLBACK in a transaction: rolled back either way", "ROLLBACK", respResult, txn, true, proxy.VerdictTxnLost},
		{"DML-only multi-statement in a transaction", "INSERT INTO t VALUES (1); UPDATE t SET a = 2", respResult, txn, true, proxy.VerdictTxnLost},
		{"with autocommit=0 a write began a transaction that never committed", "UPDATE t SET a = 1", respResult, noAC, true, proxy.VerdictTxnLost},
		{"with autocommit=0 COMMIT is in doubt", "COMMIT", respResult, noAC, true, proxy.VerdictUnknown},
		{"with autocommit=0 a read lost nothing", "SELECT 1", respResult, noAC, true, proxy.VerdictRetryable},
		{"an autocommit read is safe to run again", "SELECT * FROM t", respResult, none, true, proxy.VerdictRetryable},
		{"a SET outside a transaction is safe to run again", "SET NAMES utf8mb4", respResult, none, true, proxy.VerdictRetryable},
		{"a read of a session with temporary tables lost them", "SELECT * FROM tmp", respResult, temps, true, proxy.VerdictTxnLost},
		{"a write of a session with temporary tables may have committed", "INSERT INTO t VALUES (1)", respResult, temps, true, proxy.VerdictUnknown},
		{"a prepare runs nothing", "INSERT INTO t VALUES (?)", respPrepare, none, true, proxy.VerdictRetryable},
		{"a prepare in a transaction: the transaction is lost", "COMMIT", respPrepare, txn, true, proxy.VerdictTxnLost},
		{"not sent: nothing ran", "INSERT INTO t VALUES (1)", respResult, none, false, proxy.VerdictRetryable},
		{"not sent in a transaction: the transaction is lost", "COMMIT", respResult, txn, false, proxy.VerdictTxnLost},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := lossVerdict(Classify([]byte(tc.sql)), tc.kind, tc.pin, tc.sent); got != tc.want {
				t.Fatalf("%q (pins %v, sent %v): verdict %d, want %d", tc.sql, tc.pin, tc.sent, got, tc.want)
			}
		})
	}
}
