// Command idleclients opens N client sessions through a proxy, runs one
// SELECT on each, keeps them all open, and reports the proxy's resident
// memory and backend connection count (for `make bench`).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	sqldriver "database/sql/driver"

	"github.com/go-sql-driver/mysql"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:6033", "proxy address")
	n := flag.Int("n", 2000, "client sessions")
	pid := flag.Int("pid", 0, "routerd pid (for RSS)")
	adminAddr := flag.String("admin", "127.0.0.1:7080", "routerd admin API")
	flag.Parse()
	cfg := mysql.NewConfig()
	cfg.User, cfg.Passwd, cfg.Net, cfg.Addr, cfg.DBName = "app", "app", "tcp", *addr, "app"
	cfg.Timeout = 10 * time.Second
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		fail(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	conns := make([]sqldriver.Conn, *n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	var mu sync.Mutex
	var firstErr error
	for i := range conns {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := conn.Connect(ctx)
			if err == nil {
				var rows sqldriver.Rows
				rows, err = c.(sqldriver.QueryerContext).QueryContext(ctx, "SELECT 1", nil)
				if err == nil {
					dest := make([]sqldriver.Value, 1)
					err = rows.Next(dest)
					rows.Close()
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil && firstErr == nil {
				firstErr = err
			}
			conns[i] = c
		}()
	}
	wg.Wait()
	if firstErr != nil {
		fail(firstErr)
	}
	time.Sleep(time.Second) // let the proxy settle before reading RSS
	rss := "?"
	if *pid > 0 {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", *pid))
		if err == nil {
			for _, l := range strings.Split(string(b), "\n") {
				if strings.HasPrefix(l, "VmRSS:") {
					var kb int
					fmt.Sscanf(strings.TrimSpace(strings.TrimPrefix(l, "VmRSS:")), "%d", &kb)
					rss = fmt.Sprintf("%.1f", float64(kb)/1024)
				}
			}
		}
	}
	backend := 0
	resp, err := http.Get("http://" + *adminAddr + "/status")
	if err == nil {
		var st struct {
			Clusters []struct {
				Sessions int `json:"client_sessions"`
				Members  []struct {
					Conns int `json:"backend_connections"`
				} `json:"members"`
			} `json:"clusters"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&st)
		resp.Body.Close()
		for _, c := range st.Clusters {
			for _, m := range c.Members {
				backend += m.Conns
			}
		}
	}
	fmt.Printf("idle_clients=%d rss_mib=%s backend_connections=%d\n", *n, rss, backend)
	for _, c := range conns {
		if c != nil {
			c.Close()
		}
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "idleclients:", err)
	os.Exit(1)
}
