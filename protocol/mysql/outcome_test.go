package mysql

import "testing"

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
		want verdict
	}{
		{"autocommit write may have committed", "INSERT INTO t VALUES (1)", respResult, none, true, verdictUnknown},
		{"autocommit DDL may have run", "ALTER TABLE t ADD c INT", respResult, none, true, verdictUnknown},
		{"an unknown statement may have done anything", "FROBNICATE t", respResult, none, true, verdictUnknown},
		{"a CALL may have committed", "CALL p()", respResult, none, true, verdictUnknown},
		{"COMMIT in a transaction is in doubt", "COMMIT", respResult, txn, true, verdictUnknown},
		{"DDL in a transaction commits it implicitly", "CREATE TABLE u (id INT)", respResult, txn, true, verdictUnknown},
		{"BEGIN in a transaction commits it implicitly", "BEGIN", respResult, txn, true, verdictUnknown},
		{"SET autocommit=1 in a transaction commits it", "SET autocommit = 1", respResult, txn, true, verdictUnknown},
		{"a CALL in a transaction may commit it", "CALL p()", respResult, txn, true, verdictUnknown},
		{"a multi-statement that commits", "INSERT INTO t VALUES (1); COMMIT", respResult, txn, true, verdictUnknown},
		{"DML in a transaction: the transaction is lost", "INSERT INTO t VALUES (1)", respResult, txn, true, verdictTxnLost},
		{"a read in a transaction: the transaction is lost", "SELECT * FROM t", respResult, txn, true, verdictTxnLost},
		{"ROLLBACK in a transaction: rolled back either way", "ROLLBACK", respResult, txn, true, verdictTxnLost},
		{"DML-only multi-statement in a transaction", "INSERT INTO t VALUES (1); UPDATE t SET a = 2", respResult, txn, true, verdictTxnLost},
		{"with autocommit=0 a write began a transaction that never committed", "UPDATE t SET a = 1", respResult, noAC, true, verdictTxnLost},
		{"with autocommit=0 COMMIT is in doubt", "COMMIT", respResult, noAC, true, verdictUnknown},
		{"with autocommit=0 a read lost nothing", "SELECT 1", respResult, noAC, true, verdictRetryable},
		{"an autocommit read is safe to run again", "SELECT * FROM t", respResult, none, true, verdictRetryable},
		{"a SET outside a transaction is safe to run again", "SET NAMES utf8mb4", respResult, none, true, verdictRetryable},
		{"a read of a session with temporary tables lost them", "SELECT * FROM tmp", respResult, temps, true, verdictTxnLost},
		{"a write of a session with temporary tables may have committed", "INSERT INTO t VALUES (1)", respResult, temps, true, verdictUnknown},
		{"a prepare runs nothing", "INSERT INTO t VALUES (?)", respPrepare, none, true, verdictRetryable},
		{"a prepare in a transaction: the transaction is lost", "COMMIT", respPrepare, txn, true, verdictTxnLost},
		{"not sent: nothing ran", "INSERT INTO t VALUES (1)", respResult, none, false, verdictRetryable},
		{"not sent in a transaction: the transaction is lost", "COMMIT", respResult, txn, false, verdictTxnLost},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := lossVerdict(Classify([]byte(tc.sql)), tc.kind, tc.pin, tc.sent); got != tc.want {
				t.Fatalf("%q (pins %v, sent %v): verdict %d, want %d", tc.sql, tc.pin, tc.sent, got, tc.want)
			}
		})
	}
}
