package daemon_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dbrouter/dbrouter/chaos/deploy"
)

// Read-your-writes through planned switchovers, with the default probe
// interval: clients each write a row and read it back on the same
// connection, in a loop, while the primary moves db1 → db2 → db3 → db1.
// Every read must see the row its connection's write just acknowledged.
func TestReadYourWritesThroughSwitchovers(t *testing.T) {
	d := deploy.StartT(t, deploy.Options{Proxies: 1, Control: "  cooldown: 1s\n"})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	db := proxyDB(t, d, 0)
	exec(t, db, "CREATE TABLE ryw (id INT PRIMARY KEY, v INT)")
	const clients = 6
	var (
		stop   atomic.Bool
		wg     sync.WaitGroup
		mu     sync.Mutex
		misses []string
		errs   []string
		acked  atomic.Int64
	)
	for c := range clients {
		conn, err := db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer conn.Close()
			for i := 0; i < 100000 && !stop.Load() && ctx.Err() == nil; i++ {
				id := c*1000000 + i
				if _, err := conn.ExecContext(ctx, "INSERT INTO ryw VALUES (?, 1)", id); err != nil {
					mu.Lock()
					errs = append(errs, fmt.Sprintf("insert %d: %v", id, err))
					mu.Unlock()
					return
				}
				acked.Add(1)
				var v int
				err := conn.QueryRowContext(ctx, "SELECT v FROM ryw WHERE id = ?", id).Scan(&v)
				if errors.Is(err, sql.ErrNoRows) {
					var sid, pos string
					_ = conn.QueryRowContext(ctx, "SELECT @@server_id, @@gtid_current_pos").Scan(&sid, &pos)
					mu.Lock()
					misses = append(misses, fmt.Sprintf("client %d: row %d not read back (a later read: server %s at %s)", c, id, sid, pos))
					mu.Unlock()
					continue
				}
				if err != nil {
					mu.Lock()
					errs = append(errs, fmt.Sprintf("read %d: %v", id, err))
					mu.Unlock()
					return
				}
			}
		}()
	}
	defer func() {
		stop.Store(true)
		wg.Wait()
		for _, e := range errs {
			t.Error(e)
		}
		for _, m := range misses {
			t.Error(m)
		}
	}()
	poll(t, 20*time.Second, "writes start", func() bool { return acked.Load() > 200 })
	for _, target := range []string{"db2", "db3", "db1", "db2", "db3", "db1"} {
		if err := d.WaitHealthyOnLeader(ctx, target, 30*time.Second); err != nil {
			t.Fatal(err)
		}
		n := acked.Load()
		// The cooldown (1 s) refuses a change right after the last one, and
		// the leader refuses a target whose lag it has not measured yet.
		var err error
		poll(t, 20*time.Second, "promote "+target+" past the cooldown", func() bool {
			err = d.Promote(ctx, 0, target, 30*time.Second)
			return err == nil || !strings.Contains(err.Error(), "cooldown") && !strings.Contains(err.Error(), "retry in a moment")
		})
		if err != nil {
			t.Fatalf("promote %s: %v", target, err)
		}
		poll(t, 20*time.Second, "writes after the switchover", func() bool { return acked.Load() > n+200 })
	}
}
