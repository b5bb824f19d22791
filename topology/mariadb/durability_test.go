package mariadb_test

import (
	"context"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/dbrouter/dbrouter/chaos"
	"github.com/dbrouter/dbrouter/topology"
)

// The settings the no-lost-write promise rests on are read off the members
// and every weak one is reported, named, once per member and check.
func TestDurabilityWarningsNameWeakSettings(t *testing.T) {
	c := chaos.StartT(t, chaos.Options{Members: 3})
	mon := startMonitor(t, c)
	failover := 3 * time.Second
	waitFor(t, mon, 10*time.Second, "healthy", func(s *topology.Snapshot) bool {
		return s.Primary == 0 && s.Members[1].Eligible && s.Members[2].Eligible
	})
	if w := topology.DurabilityWarnings(mon.Snapshot(), failover); len(w) != 0 {
		t.Fatalf("warnings with the harness's settings (AFTER_SYNC, 5 s timeout, semi-sync replicas): %+v", w)
	}
	ctx := context.Background()
	for i, q := range []string{
		"SET GLOBAL rpl_semi_sync_master_wait_point=AFTER_COMMIT",
		"SET GLOBAL rpl_semi_sync_master_timeout=1000",
		"SET GLOBAL rpl_semi_sync_slave_enabled=OFF",
	} {
		db, err := c.Members[i].DB()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
		db.Close()
	}
	want := []string{"db1/" + topology.CheckWaitPoint, "db2/" + topology.CheckMasterTimeout, "db3/" + topology.CheckReplicaSemiOff}
	var got []string
	waitFor(t, mon, 10*time.Second, "warnings", func(s *topology.Snapshot) bool {
		got = nil
		for _, w := range topology.DurabilityWarnings(s, failover) {
			got = append(got, w.Member+"/"+w.Check)
		}
		sort.Strings(got)
		return fmt.Sprint(got) == fmt.Sprint(want)
	})
	for _, w := range topology.DurabilityWarnings(mon.Snapshot(), failover) {
		t.Log(w.Message)
	}
	// Without a known failover time the timeout is not judged.
	for _, w := range topology.DurabilityWarnings(mon.Snapshot(), 0) {
		if w.Check == topology.CheckMasterTimeout {
			t.Fatalf("timeout judged without a failover bound: %+v", w)
		}
	}
}
