package mysql

import (
	"testing"
)

// The pool itself (waiters in arrival order, the preferred connection,
// keys, limits) is tested in package proxy; these are the MySQL parts.

// TestPoolKeysFollowTheDatabaseState: a session with a database may take
// an idle connection without one (sync selects the database), never the
// reverse (nothing deselects one, and an unqualified table name would
// resolve there instead of failing with "No database selected"); a
// connection handed back is filed under the database state it was left
// in.
func TestPoolKeysFollowTheDatabaseState(t *testing.T) {
	withDB := poolKey{user: "app", collation: defaultCollationID}
	noDB := withDB
	noDB.noDB = true
	if k, ok := withNoDB(withDB); !ok || k != noDB {
		t.Errorf("a session with a database falls back to %+v, %v; want %+v", k, ok, noDB)
	}
	if _, ok := withNoDB(noDB); ok {
		t.Error("a session without a database falls back to connections in one")
	}
	if k := refile(&backendConn{db: "app"}, noDB); k != withDB {
		t.Errorf("a connection left in a database is filed under %+v", k)
	}
	if k := refile(&backendConn{}, withDB); k != noDB {
		t.Errorf("a connection left in no database is filed under %+v", k)
	}
}

// TestPoolLimitFromMaxConnections: the default per-member limit leaves
// the member a tenth of max_connections and a fixed reserve for admin
// sessions, monitors, arbiters and replication.
func TestPoolLimitFromMaxConnections(t *testing.T) {
	for _, tc := range []struct{ maxConnections, want int }{
		{151, 126}, // MariaDB's default: 151 - 15 - 10
		{500, 440},
		{1000, 890},
		{40, 26},
		{20, 8},
		{12, 1}, // too small for the reserve: still one
		{1, 1},
		{100000, 89990},
	} {
		if got := limitFromMaxConnections(tc.maxConnections); got != tc.want {
			t.Errorf("max_connections %d: limit %d, want %d", tc.maxConnections, got, tc.want)
		}
	}
}
