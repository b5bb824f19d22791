package mariadb_test

import (
	"context"
	"database/sql"
	"testing"
	"time"

	"github.com/dbrouter/dbrouter/chaos"
	"github.com/dbrouter/dbrouter/topology/mariadb"
)

func actionsFor() *mariadb.Actions {
	return &mariadb.Actions{User: chaos.AdminUser, Password: chaos.AdminPassword, ReplUser: chaos.ReplUser, ReplPassword: chaos.ReplPassword, Timeout: 3 * time.Second}
}

func gtidSet(t *testing.T, s string) mariadb.GTIDSet {
	t.Helper()
	g, err := mariadb.ParseGTIDSet(mariadb.MariaDB, s)
	if err != nil {
		t.Fatalf("parse %q: %v", s, err)
	}
	return g
}

func appDB(t *testing.T, m *chaos.Member) *sql.DB {
	t.Helper()
	db, err := m.AppDB()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func count(t *testing.T, ctx context.Context, m *chaos.Member) int {
	t.Helper()
	var n int
	if err := appDB(t, m).QueryRowContext(ctx, "SELECT COUNT(*) FROM app.t").Scan(&n); err != nil {
		t.Fatalf("%s: %v", m.Name, err)
	}
	return n
}

// TestFailoverStepsOnRealServers drives the admin actions of an unplanned
// failover by hand: kill -9 the primary, promote the most advanced replica,
// repoint the other, and let the old primary rejoin (clean) — then make it
// diverge and see the errant transaction reported.
func TestFailoverStepsOnRealServers(t *testing.T) {
	c := chaos.StartT(t, chaos.Options{Members: 3})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	a := actionsFor()
	db1, db2, db3 := c.Members[0], c.Members[1], c.Members[2]

	app := appDB(t, db1)
	if _, err := app.ExecContext(ctx, "CREATE TABLE t (id INT PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 20; i++ {
		if _, err := app.ExecContext(ctx, "INSERT INTO t VALUES (?)", i); err != nil {
			t.Fatal(err)
		}
	}
	// Fencing the primary refuses the app user's writes.
	if err := a.Fence(ctx, db1.Addr()); err != nil {
		t.Fatal(err)
	}
	if _, err := app.ExecContext(ctx, "INSERT INTO t VALUES (100)"); err == nil {
		t.Fatal("fenced primary accepted a write")
	}
	if err := db1.Kill(); err != nil {
		t.Fatal(err)
	}

	var sets []mariadb.GTIDSet
	var ios []string
	for _, m := range []*chaos.Member{db2, db3} {
		p, err := a.Position(ctx, m.Addr())
		if err != nil {
			t.Fatal(err)
		}
		g, err := mariadb.ParseGTIDSet(mariadb.MariaDB, p.IOPos)
		if err != nil {
			t.Fatal(err)
		}
		sets = append(sets, g)
		ios = append(ios, p.IOPos)
	}
	i := mariadb.MostAdvanced(sets)
	if i < 0 {
		t.Fatalf("no most advanced replica among %v", ios)
	}
	cand, other := []*chaos.Member{db2, db3}[i], []*chaos.Member{db2, db3}[1-i]
	if err := a.WaitApplied(ctx, cand.Addr(), ios[i], 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := a.Detach(ctx, cand.Addr()); err != nil {
		t.Fatal(err)
	}
	if _, err := appDB(t, cand).ExecContext(ctx, "INSERT INTO t VALUES (21)"); err == nil {
		t.Fatal("detached candidate took a write before it was opened")
	}
	if err := a.Open(ctx, cand.Addr()); err != nil {
		t.Fatal(err)
	}
	if err := a.Repoint(ctx, other.Addr(), cand.Addr()); err != nil {
		t.Fatal(err)
	}
	if _, err := appDB(t, cand).ExecContext(ctx, "INSERT INTO t VALUES (21)"); err != nil {
		t.Fatal(err)
	}
	waitCount := func(m *chaos.Member, want int) {
		t.Helper()
		if err := chaos.Poll(ctx, 15*time.Second, func() (bool, error) { return count(t, ctx, m) == want, nil }); err != nil {
			t.Fatalf("%s never had %d rows: %v", m.Name, want, err)
		}
	}
	waitCount(other, 21)

	// The old primary returns: read-only (it starts that way), nothing the new
	// primary lacks, so it rejoins as a replica and catches up.
	if err := db1.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	old, err := a.Position(ctx, db1.Addr())
	if err != nil {
		t.Fatal(err)
	}
	if !old.ReadOnly {
		t.Fatal("restarted old primary is writable")
	}
	np, err := a.Position(ctx, cand.Addr())
	if err != nil {
		t.Fatal(err)
	}
	errant := gtidSet(t, old.BinlogPos).Subtract(gtidSet(t, np.BinlogPos))
	if !errant.Empty() {
		t.Fatalf("clean old primary reported errant %s (old %s, new %s)", errant, old.BinlogPos, np.BinlogPos)
	}
	if err := a.Repoint(ctx, db1.Addr(), cand.Addr()); err != nil {
		t.Fatal(err)
	}
	waitCount(db1, 21)

	// Now a write on db1 behind the primary's back (admin bypasses
	// read_only): db1 has a transaction the primary lacks.
	if err := a.Detach(ctx, db1.Addr()); err != nil {
		t.Fatal(err)
	}
	adm, err := db1.DB()
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	if _, err := adm.ExecContext(ctx, "INSERT INTO app.t VALUES (999)"); err != nil {
		t.Fatal(err)
	}
	old, err = a.Position(ctx, db1.Addr())
	if err != nil {
		t.Fatal(err)
	}
	np, err = a.Position(ctx, cand.Addr())
	if err != nil {
		t.Fatal(err)
	}
	errant = gtidSet(t, old.BinlogPos).Subtract(gtidSet(t, np.BinlogPos))
	if errant.Count() != 1 {
		t.Fatalf("errant %q, want one transaction (old %s, new %s)", errant, old.BinlogPos, np.BinlogPos)
	}
}

func TestActiveTransactionsAndKill(t *testing.T) {
	c := chaos.StartT(t, chaos.Options{Members: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a := actionsFor()
	db := appDB(t, c.Members[0])
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, q := range []string{"CREATE TABLE t (id INT PRIMARY KEY)", "BEGIN", "INSERT INTO t VALUES (1)"} {
		if _, err := conn.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	n, err := a.ActiveTransactions(ctx, c.Members[0].Addr())
	if err != nil || n != 1 {
		t.Fatalf("active transactions %d, %v; want 1", n, err)
	}
	if err := a.Fence(ctx, c.Members[0].Addr()); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(ctx, "COMMIT"); err == nil {
		t.Fatal("a session on the fenced member committed")
	}
	n, err = a.ActiveTransactions(ctx, c.Members[0].Addr())
	if err != nil || n != 0 {
		t.Fatalf("after fence: active transactions %d, %v; want 0", n, err)
	}
}
