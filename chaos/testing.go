package chaos

import (
	"context"
	"testing"
	"time"
)

// StartT starts a cluster for a test and stops it when the test ends, failed
// or not. A missing mariadbd fails the test with the install command: CI must
// never pass by skipping.
func StartT(t testing.TB, opts Options) *Cluster {
	t.Helper()
	if opts.Log == nil {
		opts.Log = t.Logf
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := Start(ctx, opts)
	if err != nil {
		t.Fatalf("start mariadb cluster: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, m := range c.Members {
				t.Logf("%s error log tail:\n%s", m.Name, m.LogTail(1500))
			}
		}
		_ = c.Close()
	})
	return c
}
