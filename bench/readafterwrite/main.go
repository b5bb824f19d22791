// Command readafterwrite measures read-your-writes (for `make bench`):
// each client, on its own connection, writes a row and reads it back,
// over and over. It reports the pairs per second, the 95th percentile of a
// pair's latency, and how many reads did not see the row just written
// (stale: a replica that had not applied it yet).
package main

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/go-sql-driver/mysql"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:6033", "server or proxy address")
	clients := flag.Int("clients", 8, "concurrent clients, one connection each")
	dur := flag.Duration("time", 10*time.Second, "how long to run")
	table := flag.String("table", "sbtest.raw", "table (id BIGINT PRIMARY KEY, c INT); created if missing")
	flag.Parse()
	if err := run(*addr, *clients, *dur, *table); err != nil {
		fmt.Fprintf(os.Stderr, "readafterwrite: %v\n", err)
		os.Exit(1)
	}
}

func run(addr string, clients int, dur time.Duration, table string) error {
	cfg := mysql.NewConfig()
	cfg.User, cfg.Passwd, cfg.Net, cfg.Addr = "app", "app", "tcp", addr
	cfg.Timeout = 10 * time.Second
	// Statements as text, one round trip each, as most ORMs send them.
	cfg.InterpolateParams = true
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		return err
	}
	db := sql.OpenDB(conn)
	defer db.Close()
	db.SetMaxOpenConns(clients + 1)
	ctx := context.Background()
	if _, err := db.ExecContext(ctx, "CREATE TABLE IF NOT EXISTS "+table+" (id BIGINT PRIMARY KEY, c INT)"); err != nil {
		return fmt.Errorf("create %s: %w", table, err)
	}
	type result struct {
		lat   []time.Duration
		stale int
		err   error
	}
	results := make([]result, clients)
	deadline := time.Now().Add(dur)
	var wg sync.WaitGroup
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := &results[i]
			c, err := db.Conn(ctx)
			if err != nil {
				r.err = err
				return
			}
			defer c.Close()
			for time.Now().Before(deadline) {
				id, v := rand.Int64(), rand.IntN(1<<30)
				start := time.Now()
				if _, err := c.ExecContext(ctx, "INSERT INTO "+table+" (id, c) VALUES (?, ?)", id, v); err != nil {
					r.err = fmt.Errorf("insert: %w", err)
					return
				}
				var got int
				err := c.QueryRowContext(ctx, "SELECT c FROM "+table+" WHERE id = ?", id).Scan(&got)
				switch {
				case errors.Is(err, sql.ErrNoRows):
					r.stale++
				case err != nil:
					r.err = fmt.Errorf("select: %w", err)
					return
				case got != v:
					r.err = fmt.Errorf("row %d: read %d, wrote %d", id, got, v)
					return
				}
				r.lat = append(r.lat, time.Since(start))
			}
		}()
	}
	wg.Wait()
	var all []time.Duration
	stale := 0
	for _, r := range results {
		if r.err != nil {
			return r.err
		}
		all = append(all, r.lat...)
		stale += r.stale
	}
	if len(all) == 0 {
		return errors.New("no pair completed")
	}
	slices.Sort(all)
	p95 := all[(len(all)*95+99)/100-1]
	fmt.Printf("pairs_per_sec=%.1f p95_ms=%.2f stale=%d pairs=%d\n", float64(len(all))/dur.Seconds(), float64(p95.Microseconds())/1000, stale, len(all))
	return nil
}
