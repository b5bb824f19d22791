package chaos

import (
	"context"
	"database/sql"
	"fmt"
	"testing"
	"time"
)

func serverID(t *testing.T, db *sql.DB) int {
	t.Helper()
	var id int
	if err := db.QueryRow("SELECT @@server_id").Scan(&id); err != nil {
		t.Fatal(err)
	}
	return id
}

func TestClusterReplicatesWithGTIDAndSemiSync(t *testing.T) {
	start := time.Now()
	c := StartT(t, Options{Members: 3})
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("three members took %v to come up, want < 20s", d)
	}
	ctx := context.Background()
	p, err := c.Members[0].DB()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	var semi string
	if err := p.QueryRow("SELECT @@rpl_semi_sync_master_enabled").Scan(&semi); err != nil || semi != "1" {
		t.Fatalf("semi-sync on primary = %q, %v", semi, err)
	}
	if _, err := p.Exec("CREATE TABLE app.t (id INT PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Exec("INSERT INTO app.t VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	var yes int
	var name string
	if err := p.QueryRow("SHOW STATUS LIKE 'Rpl_semi_sync_master_yes_tx'").Scan(&name, &yes); err != nil || yes < 1 {
		t.Fatalf("semi-sync acknowledged transactions = %d, %v", yes, err)
	}
	for i, m := range c.Members[1:] {
		db, err := m.DB()
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if got := serverID(t, db); got != i+2 {
			t.Errorf("%s server_id = %d", m.Name, got)
		}
		err = Poll(ctx, 10*time.Second, func() (bool, error) {
			var n int
			err := db.QueryRow("SELECT COUNT(*) FROM app.t").Scan(&n)
			return err == nil && n == 1, nil
		})
		if err != nil {
			t.Fatalf("%s never received the row: %v", m.Name, err)
		}
		var ro int
		if err := db.QueryRow("SELECT @@read_only").Scan(&ro); err != nil || ro != 1 {
			t.Errorf("%s read_only = %d, %v", m.Name, ro, err)
		}
	}
}

func TestMemberKillPauseRestart(t *testing.T) {
	c := StartT(t, Options{Members: 2})
	ctx := context.Background()
	r := c.Members[1]
	if err := r.Pause(); err != nil {
		t.Fatal(err)
	}
	db, _ := r.DB()
	defer db.Close()
	qctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	err := db.PingContext(qctx)
	cancel()
	if err == nil {
		t.Fatal("a paused server answered a ping")
	}
	if err := r.Resume(); err != nil {
		t.Fatal(err)
	}
	if err := Poll(ctx, 5*time.Second, func() (bool, error) { return db.PingContext(ctx) == nil, nil }); err != nil {
		t.Fatalf("resumed server does not answer: %v", err)
	}
	if err := r.Kill(); err != nil {
		t.Fatal(err)
	}
	if r.Running() {
		t.Fatal("killed member still running")
	}
	if err := r.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.WaitReplicating(ctx); err != nil {
		t.Fatalf("replication after restart: %v", err)
	}
	if got := serverID(t, db); got != 2 {
		t.Fatal(fmt.Sprint("server id after restart ", got))
	}
}

func TestLinkAddsLatencyAndCuts(t *testing.T) {
	c := StartT(t, Options{Members: 1})
	l, err := NewLink(t.Name(), c.Members[0].Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	db, err := sql.Open("mysql", fmt.Sprintf("%s:%s@tcp(%s)/?timeout=2s", AdminUser, AdminPassword, l.Addr))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.SetMaxIdleConns(0)
	rtt := func() time.Duration {
		start := time.Now()
		if serverID(t, db) != 1 {
			t.Fatal("wrong server behind the link")
		}
		return time.Since(start)
	}
	base := rtt()
	if err := l.SetLatency(10 * time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if slow := rtt(); slow < base+20*time.Millisecond {
		t.Fatalf("with 10ms each way a connect+query took %v (without: %v)", slow, base)
	}
	l.Cut()
	if err := db.Ping(); err == nil {
		t.Fatal("ping through a cut link succeeded")
	}
	if err := l.Restore(); err != nil {
		t.Fatal(err)
	}
	if err := l.SetLatency(0); err != nil {
		t.Fatal(err)
	}
	if err := db.Ping(); err != nil {
		t.Fatalf("after restore: %v", err)
	}
}
