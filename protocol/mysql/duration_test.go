package mysql_test

import (
	"testing"
)

// TestQueryDurationCountsStatementsByRoute: every statement a member
// answers is observed in dbrouter_query_duration_seconds under the route
// it took (a replica, the primary, or the connection the session is
// pinned to) and its kind (read, write, other).
func TestQueryDurationCountsStatementsByRoute(t *testing.T) {
	e := newEnv(t, envOpts{})
	c := e.conn(t, e.db(t, ""))
	mustExec(t, c, "CREATE TABLE hist (id INT PRIMARY KEY)") // its reads wait for it on replicas
	before := e.histogramCounts(t, "dbrouter_query_duration_seconds")
	for _, q := range []string{
		"SELECT COUNT(*) FROM hist", "SELECT COUNT(*) FROM hist", "SELECT COUNT(*) FROM hist", // replica, read
		"INSERT INTO hist VALUES (1)", "INSERT INTO hist VALUES (2)", // primary, write
		"SET NAMES utf8mb4",                     // primary, other
		"BEGIN",                                 // primary, write: it may begin anything
		"SELECT COUNT(*) FROM hist",             // pinned, read
		"INSERT INTO hist VALUES (3)", "COMMIT", // pinned, write
	} {
		mustExec(t, c, q)
	}
	after := e.histogramCounts(t, "dbrouter_query_duration_seconds")
	want := map[[2]string]uint64{
		{"replica", "read"}: 3, {"primary", "write"}: 3, {"primary", "other"}: 1,
		{"pinned", "read"}: 1, {"pinned", "write"}: 2,
	}
	for _, route := range []string{"primary", "replica", "pinned"} {
		for _, kind := range []string{"read", "write", "other"} {
			k := [2]string{route, kind}
			if _, ok := after[k]; !ok {
				t.Errorf("no series for route %s, kind %s", route, kind)
			}
			if got := after[k] - before[k]; got != want[k] {
				t.Errorf("route %s, kind %s: %d statements, want %d", route, kind, got, want[k])
			}
		}
	}
}

// histogramCounts returns the sample count of each series of histogram
// name, by its route and kind labels.
func (e *env) histogramCounts(t *testing.T, name string) map[[2]string]uint64 {
	t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[[2]string]uint64{}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			var k [2]string
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "route":
					k[0] = l.GetValue()
				case "kind":
					k[1] = l.GetValue()
				}
			}
			out[k] += m.GetHistogram().GetSampleCount()
		}
	}
	return out
}
