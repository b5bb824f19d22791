package deploy

import (
	"context"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
)

// StartT starts a deployment for a test and closes it when the test ends,
// with the members' error logs in the test's output if it failed. The
// nodes' warnings and the harness's progress go to the test's log unless o
// says otherwise. A missing mariadbd fails the test with the install
// command (chaos.ErrNoMariaDB): CI must never pass by skipping.
func StartT(t testing.TB, o Options) *Deployment {
	t.Helper()
	if o.Log == nil {
		o.Log = zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	}
	if o.DBLog == nil {
		o.DBLog = t.Logf
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	d, err := Start(ctx, o)
	if err != nil {
		t.Fatalf("start deployment: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() && d.DB != nil {
			for _, m := range d.DB.Members {
				t.Logf("%s error log tail:\n%s", m.Name, m.LogTail(1000))
			}
		}
		if t.Failed() && d.RS != nil {
			for _, m := range d.RS.Members {
				t.Logf("%s log tail:\n%s", m.Name, m.LogTail(200))
			}
		}
		if err := d.Close(); err != nil {
			t.Errorf("close deployment: %v", err)
		}
	})
	return d
}
