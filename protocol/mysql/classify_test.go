package mysql

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		sql          string
		kind         Kind
		pin          Pin
		hint         Hint
		readsSession bool
	}{
		{"SELECT 1", KindRead, 0, HintNone, false},
		{"  select c from t where id = 1", KindRead, 0, HintNone, false},
		{"(SELECT 1) UNION (SELECT 2)", KindRead, 0, HintNone, false},
		{"WITH x AS (SELECT 1) SELECT * FROM x", KindRead, 0, HintNone, false},
		{"SHOW TABLES", KindRead, 0, HintNone, false},
		{"SHOW WARNINGS", KindRead, 0, HintNone, true},
		{"DESCRIBE t", KindRead, 0, HintNone, false},
		{"EXPLAIN SELECT 1", KindRead, 0, HintNone, false},
		{"ANALYZE SELECT 1", KindWrite, 0, HintNone, false},
		{"EXPLAIN ANALYZE SELECT 1", KindWrite, 0, HintNone, false},
		{"SELECT REPLACE(name, 'a', 'b'), INSERT('abc', 1, 1, 'x') FROM t", KindRead, 0, HintNone, false},
		{"SELECT * FROM t FOR UPDATE", KindWrite, 0, HintNone, false},
		{"SELECT * FROM t LOCK IN SHARE MODE", KindWrite, 0, HintNone, false},
		{"SELECT * FROM t FOR SHARE", KindWrite, 0, HintNone, false},
		{"SELECT a INTO @x FROM t", KindWrite, PinUserVar, HintNone, true},
		{"SELECT a FROM t INTO @x, @y", KindWrite, PinUserVar, HintNone, true},
		{"SELECT a FROM t INTO OUTFILE '/tmp/x'", KindWrite, 0, HintNone, false},
		{"SELECT @x := 1", KindWrite, PinUserVar, HintNone, true},
		{"SELECT @x", KindRead, 0, HintNone, true},
		{"SELECT @@server_id", KindRead, 0, HintNone, false},
		{"SELECT @@warning_count", KindRead, 0, HintNone, true},
		{"SELECT LAST_INSERT_ID()", KindRead, 0, HintNone, true},
		{"select found_rows()", KindRead, 0, HintNone, true},
		{"SELECT GET_LOCK('a', 1)", KindWrite, PinUserLock, HintNone, false},
		{"SELECT NEXTVAL(s)", KindWrite, 0, HintNone, true},
		{"SELECT NEXT VALUE FOR s", KindWrite, 0, HintNone, true},
		{"SELECT 'FOR UPDATE', `insert` FROM t", KindRead, 0, HintNone, false},
		{"SELECT 1 -- FOR UPDATE\n", KindRead, 0, HintNone, false},
		{"SELECT 1 # INTO @x", KindRead, 0, HintNone, false},
		{"SELECT /*!50000 1 FOR UPDATE */", KindWrite, 0, HintNone, false},
		{"INSERT INTO t VALUES (1)", KindWrite, 0, HintNone, false},
		{"UPDATE t SET a = 1", KindWrite, 0, HintNone, false},
		{"BEGIN", KindWrite, 0, HintNone, false},
		{"CALL p()", KindWrite, 0, HintNone, false},
		{"FROBNICATE everything", KindWrite, 0, HintNone, false},
		{"", KindRead, 0, HintNone, false},
		{"SET NAMES utf8mb4", KindSet, 0, HintNone, false},
		{"SET SESSION sql_mode = 'ANSI'", KindSet, 0, HintNone, false},
		{"SET @@session.time_zone = '+00:00'", KindSet, 0, HintNone, false},
		{"SET autocommit = 0", KindSet, 0, HintNone, false},
		{"SET GLOBAL max_connections = 10", KindWrite, 0, HintNone, false},
		{"SET @@global.max_connections = 10", KindWrite, 0, HintNone, false},
		// Literal user variables are replayed like SET state; values
		// computed by the server (queries, functions, other variables)
		// pin the session.
		{"SET @x = 1", KindSet, 0, HintNone, false},
		{"SET @x := -1.5e-3", KindSet, 0, HintNone, false},
		{"set @X = 'it''s', @y = \"two\", @z = NULL", KindSet, 0, HintNone, false},
		{"SET @a = TRUE, @b = false, @c = 0x1F, @d = X'0A', @e = _utf8mb4'x', @f = N'y'", KindSet, 0, HintNone, false},
		{"SET @a = 1, sql_mode = 'ANSI'", KindSet, 0, HintNone, false},
		{"SET @`odd name` = 2", KindSet, 0, HintNone, false},
		{"SET @x = (SELECT 1)", KindSet, PinUserVar, HintNone, true},
		{"SET @x = (SELECT MAX(id) FROM t)", KindSet, PinUserVar, HintNone, true},
		{"SET @x = NOW()", KindSet, PinUserVar, HintNone, true},
		{"SET @x = CURRENT_TIMESTAMP", KindSet, PinUserVar, HintNone, true},
		{"SET @x = @y", KindSet, PinUserVar, HintNone, true},
		{"SET @x = @@server_id", KindSet, PinUserVar, HintNone, true},
		{"SET @x = 1 + @y", KindSet, PinUserVar, HintNone, true},
		{"SET @x = 'a' COLLATE utf8mb4_bin", KindSet, PinUserVar, HintNone, true},
		{"SET @x = 1, @y = LAST_INSERT_ID()", KindSet, PinUserVar, HintNone, true},
		{"SET @x", KindSet, PinUserVar, HintNone, true},
		{"SET sql_mode = @x", KindSet, PinUserVar, HintNone, true},
		{"SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", KindWrite, PinNextTxn, HintNone, false},
		{"SET PASSWORD = PASSWORD('x')", KindWrite, 0, HintNone, false},
		{"USE app", KindUse, 0, HintNone, false},
		{"LOCK TABLES t READ", KindWrite, PinLockTables, HintNone, false},
		{"UNLOCK TABLES", KindUnlockTables, 0, HintNone, false},
		{"FLUSH TABLES WITH READ LOCK", KindWrite, PinLockTables, HintNone, false},
		{"CREATE TEMPORARY TABLE x (a int)", KindWrite, PinTempTable, HintNone, false},
		{"CREATE OR REPLACE TEMPORARY TABLE x (a int)", KindWrite, PinTempTable, HintNone, false},
		{"CREATE TABLE x (a int)", KindWrite, 0, HintNone, false},
		{"PREPARE s FROM 'SELECT 1'", KindWrite, PinSQLPrepare, HintNone, false},
		{"HANDLER t OPEN", KindWrite, PinHandler, HintNone, false},
		{"SELECT /* dbrouter:primary */ 1", KindRead, 0, HintPrimary, false},
		{"/* dbrouter:replica */ SELECT 1", KindRead, 0, HintReplica, false},
		{"SELECT 1 /* DBROUTER:REPLICA */", KindRead, 0, HintReplica, false},
		{"SELECT 1; SELECT 2", KindRead, 0, HintNone, false},
		{"SELECT 1; DELETE FROM t", KindWrite, 0, HintNone, false},
		{"SELECT 1;", KindRead, 0, HintNone, false},
		{"SELECT 1; SET NAMES latin1", KindWrite, PinUnknown, HintNone, false},
		{"SELECT 'unterminated", KindRead, 0, HintNone, false},
	}
	for _, tt := range tests {
		c := Classify([]byte(tt.sql))
		if c.Kind != tt.kind || c.Pin != tt.pin || c.Hint != tt.hint || c.ReadsSession != tt.readsSession {
			t.Errorf("Classify(%q) = %+v (pin %s), want kind %d pin %s hint %d readsSession %v", tt.sql, c, c.Pin, tt.kind, tt.pin, tt.hint, tt.readsSession)
		}
	}
}

func TestSetKey(t *testing.T) {
	tests := map[string]string{
		"SET SESSION sql_mode = 'A'":     "sql_mode",
		"set @@session.SQL_MODE='B'":     "sql_mode",
		"SET @@sql_mode = 'C'":           "sql_mode",
		"SET NAMES utf8mb4":              "names",
		"SET CHARACTER SET latin1":       "names",
		"SET a = 1, b = 2":               "",
		"SET time_zone = CONCAT('+', 1)": "time_zone",
		"SET @Tenant = 5":                "@tenant",
		"set @tenant := 'x'":             "@tenant",
		"SET @a = 1, @b = 2":             "",
	}
	for in, want := range tests {
		if got := SetKey([]byte(in)); got != want {
			t.Errorf("SetKey(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestUseTarget(t *testing.T) {
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"USE app", "app", true},
		{"use `my``db`", "my`db", true},
		{"USE", "", false},
	}
	for _, tt := range tests {
		got, ok := UseTarget([]byte(tt.in))
		if got != tt.want || ok != tt.ok {
			t.Errorf("UseTarget(%q) = %q, %v", tt.in, got, ok)
		}
	}
}

func TestKillTarget(t *testing.T) {
	tests := []struct {
		in    string
		id    uint32
		query bool
		ok    bool
	}{
		{"KILL 1073741825", 1073741825, false, true},
		{"kill connection 7", 7, false, true},
		{"KILL QUERY 7", 7, true, true},
		{"KILL HARD QUERY 7;", 7, true, true},
		{"KILL SOFT CONNECTION /* c */ 7", 7, false, true},
		{"/* dbrouter:primary */ KILL 7", 7, false, true},
		{"KILL QUERY ID 7", 0, false, false}, // a query id, not a session
		{"KILL USER app", 0, false, false},
		{"KILL 7; SELECT 1", 0, false, false},
		{"KILL 4294967296", 0, false, false}, // over 32 bits
		{"KILL -1", 0, false, false},
		{"KILL", 0, false, false},
		{"SELECT 7", 0, false, false},
		{"KILLS 7", 0, false, false},
	}
	for _, tt := range tests {
		id, query, ok := KillTarget([]byte(tt.in))
		if id != tt.id || query != tt.query || ok != tt.ok {
			t.Errorf("KillTarget(%q) = %d, %v, %v; want %d, %v, %v", tt.in, id, query, ok, tt.id, tt.query, tt.ok)
		}
	}
}

func BenchmarkClassifyPointSelect(b *testing.B) {
	q := []byte("SELECT c FROM sbtest1 WHERE id=4242")
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if Classify(q).Kind != KindRead {
			b.Fatal("misclassified")
		}
	}
}

// TestErrorTableIsDocumented: docs/routing.md lists every code the proxy
// produces itself.
func TestErrorTableIsDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/routing.md")
	if err != nil {
		t.Fatal(err)
	}
	codes := []uint16{CodeAccessDenied, CodeUnknownCommand, CodeNoSuchThread, CodeKillDenied,
		CodePacketTooLarge, CodeUnknownStmt, CodeMalformedPacket, CodeConnectionKilled, CodeTLSRequired,
		CodeNoPrimary, CodeWritableConflict, CodeNoReplica, CodeBackendDown, CodeBackendLost, CodePoolTimeout,
		CodeSessionState, CodeNoLease, CodeChanging, CodeOutcomeUnknown, CodeTxnLost}
	for _, c := range kindCodes {
		codes = append(codes, c.code)
	}
	for _, code := range codes {
		if !strings.Contains(string(doc), fmt.Sprintf("\n| %d |", code)) {
			t.Errorf("docs/routing.md has no row for error %d", code)
		}
	}
}
