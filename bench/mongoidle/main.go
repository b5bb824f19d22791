// Command mongoidle holds N idle, authenticated Go driver connections to a
// Mongo proxy and reports the proxy's resident memory before and with them
// (for `make bench`). Each connection is its own driver client (as N
// application processes would hold), which ran one ping (authenticating its
// pooled connection at the proxy) and then sits idle; each client also
// keeps the driver's monitoring connection, which polls hello every 10 s
// unauthenticated, so the proxy holds 2N sessions. (One client holding its
// pool at N fills it only 10 connections per 10 s: the driver's
// minPoolSize maintenance.)
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

func main() {
	uri := flag.String("uri", "mongodb://app:app@127.0.0.1:27017/?authSource=admin", "proxy URI")
	n := flag.Int("n", 1000, "idle authenticated connections (driver clients)")
	pid := flag.Int("pid", 0, "routerd pid (for RSS)")
	adminAddr := flag.String("admin", "127.0.0.1:7080", "routerd admin API")
	flag.Parse()
	if err := run(*uri, *n, *pid, *adminAddr); err != nil {
		fmt.Fprintln(os.Stderr, "mongoidle:", err)
		os.Exit(1)
	}
}

func run(uri string, n, pid int, adminAddr string) error {
	before, err := rssMiB(pid)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	clients := make([]*mongo.Client, n)
	defer func() {
		for _, cl := range clients {
			if cl != nil {
				_ = cl.Disconnect(context.Background())
			}
		}
	}()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	errs := make([]error, n)
	for i := range clients {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			cl, err := mongo.Connect(options.Client().ApplyURI(uri).SetMaxPoolSize(1))
			if err != nil {
				errs[i] = err
				return
			}
			clients[i] = cl
			if err := cl.Ping(ctx, nil); err != nil {
				errs[i] = fmt.Errorf("client %d: ping: %w", i, err)
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	// Every client's pooled connection authenticated for its ping; the
	// monitoring connections came first.
	sessions, _, err := status(adminAddr)
	if err != nil {
		return err
	}
	if sessions < n {
		return fmt.Errorf("the proxy reports %d client sessions with %d clients connected", sessions, n)
	}
	// Let the sessions' buffers settle before reading RSS.
	time.Sleep(time.Second)
	after, err := rssMiB(pid)
	if err != nil {
		return err
	}
	sessions, backend, err := status(adminAddr)
	if err != nil {
		return err
	}
	fmt.Printf("mongo_idle_connections=%d rss_mib=%.1f rss_before_mib=%.1f client_sessions=%d backend_connections=%d\n",
		n, after, before, sessions, backend)
	return nil
}

func rssMiB(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("routerd RSS: %w", err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			var kb int
			if _, err := fmt.Sscanf(strings.TrimSpace(v), "%d", &kb); err != nil {
				return 0, fmt.Errorf("routerd RSS: %q: %w", l, err)
			}
			return float64(kb) / 1024, nil
		}
	}
	return 0, errors.New("routerd RSS: no VmRSS in /proc/PID/status")
}

// status is the proxy's client sessions and member connections, from its
// admin API.
func status(adminAddr string) (sessions, backend int, err error) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + adminAddr + "/status")
	if err != nil {
		return 0, 0, fmt.Errorf("admin status: %w", err)
	}
	defer resp.Body.Close()
	var st struct {
		Clusters []struct {
			Sessions int `json:"client_sessions"`
			Members  []struct {
				Conns int `json:"backend_connections"`
			} `json:"members"`
		} `json:"clusters"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return 0, 0, fmt.Errorf("admin status: %w", err)
	}
	for _, c := range st.Clusters {
		sessions += c.Sessions
		for _, m := range c.Members {
			backend += m.Conns
		}
	}
	return sessions, backend, nil
}
