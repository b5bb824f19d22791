package mariadb_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/dbrouter/dbrouter/chaos"
	"github.com/dbrouter/dbrouter/topology/mariadb"
)

// awkward are passwords with every character that breaks naive quoting or
// redaction.
var awkward = []string{
	"plain",
	"it's",
	`back\slash`,
	`trailing\`,
	`\'`,
	"a,b, MASTER_USE_GTID=no",
	`'; DROP TABLE x; --`,
	"MASTER_PASSWORD='nested'",
	`"double" and 'single'`,
	"ünïcödé ✓ tab\there",
}

func TestRedactHidesAnyPassword(t *testing.T) {
	for _, pw := range awkward {
		stmt := fmt.Sprintf("CHANGE MASTER TO MASTER_USER='repl', MASTER_PASSWORD='%s', MASTER_USE_GTID=slave_pos", mariadb.SQLQuote(pw))
		want := "CHANGE MASTER TO MASTER_USER='repl', MASTER_PASSWORD=<secret>, MASTER_USE_GTID=slave_pos"
		if got := mariadb.Redact(stmt); got != want {
			t.Errorf("password %q: redacted to %q", pw, got)
		}
		if got := mariadb.Redact(fmt.Sprintf("CHANGE MASTER TO MASTER_PASSWORD='%s", mariadb.SQLQuote(pw))); strings.Contains(got, pw) {
			t.Errorf("password %q: unterminated literal redacted to %q", pw, got)
		}
	}
}

// TestRepointWithAnyPasswordUnderAnySQLMode: the replication account's
// password reaches CHANGE MASTER intact whatever characters it holds and
// whatever the member's global sql_mode (a backslash is an escape by
// default and a plain character under NO_BACKSLASH_ESCAPES).
func TestRepointWithAnyPasswordUnderAnySQLMode(t *testing.T) {
	c := chaos.StartT(t, chaos.Options{Members: 2})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	db1, db2 := c.Members[0], c.Members[1]
	root1, err := db1.DB()
	if err != nil {
		t.Fatal(err)
	}
	defer root1.Close()
	root2, err := db2.DB()
	if err != nil {
		t.Fatal(err)
	}
	defer root2.Close()
	for i, mode := range []string{"", "NO_BACKSLASH_ESCAPES,ANSI_QUOTES"} {
		if _, err := root2.ExecContext(ctx, "SET GLOBAL sql_mode = ?", mode); err != nil {
			t.Fatal(err)
		}
		for j, pw := range []string{awkward[1], awkward[2], awkward[3], awkward[4], awkward[6], awkward[9]} {
			user := fmt.Sprintf("odd%d_%d", i, j)
			// Bound parameters: the test's own quoting cannot be what
			// makes it pass.
			for _, q := range []string{"CREATE USER '" + user + "'@'%'", "GRANT REPLICATION SLAVE ON *.* TO '" + user + "'@'%'"} {
				if _, err := root1.ExecContext(ctx, q); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := root1.ExecContext(ctx, "SET PASSWORD FOR '"+user+"'@'%' = PASSWORD(?)", pw); err != nil {
				t.Fatal(err)
			}
			a := actionsFor()
			a.ReplUser, a.ReplPassword = user, pw
			if err := a.Repoint(ctx, db2.Addr(), db1.Addr()); err != nil {
				t.Fatalf("sql_mode %q, password %q: %v", mode, pw, err)
			}
			var st mariadb.ServerState
			err := chaos.Poll(ctx, 10*time.Second, func() (bool, error) {
				var err error
				st, err = a.Position(ctx, db2.Addr())
				return err == nil && st.IORunning && st.LastIOErr == 0, err
			})
			if err != nil {
				t.Fatalf("sql_mode %q, password %q: replica never connected (IO error %d %s): %v", mode, pw, st.LastIOErr, st.LastErr, err)
			}
		}
	}
}
