// Package mariadb is the MariaDB flavour of topology: it probes MariaDB
// members for a topology.Monitor (server variables, read_only, SHOW ALL
// SLAVES STATUS through a typed parser, SHOW SLAVE HOSTS, GTID positions,
// semi-sync state) and measures replica lag with heartbeats written to the
// primary; it holds MariaDB GTID positions with the server id of each
// domain's last transaction (what errant-transaction detection needs and a
// plain sequence comparison loses), GTID set arithmetic, and the
// administrative steps of a primary change (Actions: fence, detach, open,
// repoint, ...), which the arbiter drives through an interface it declares.
//
// It imports topology for the neutral model, never the reverse. The
// monitor, the admin actions and the test harness all read replication
// state through the same parser.
package mariadb

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"strconv"
	"strings"
)

// ReplicaStatus is one row of SHOW ALL SLAVES STATUS: one replication
// connection of a replica.
type ReplicaStatus struct {
	// Connection is the named connection ("" for the default one).
	Connection string
	// SourceHost and SourcePort are what CHANGE MASTER was given: an
	// address, not an identity. SourceServerID (Master_Server_Id) is the
	// server id of the source the IO thread last connected to; 0 until it
	// has connected once.
	SourceHost     string
	SourcePort     int
	SourceServerID uint32
	// IOState is Slave_IO_Running: "Yes", "No" or "Connecting".
	IOState      string
	SQLRunning   bool
	LastIOErrno  int
	LastIOError  string
	LastSQLErrno int
	LastSQLError string
	// GTIDIOPos (Gtid_IO_Pos) is what the replica has received: in its relay
	// log, applied or not.
	GTIDIOPos string
	// ReadSourceFile and ReadSourcePos locate the last event received;
	// ReceivedHeartbeats counts the source's heartbeats. Together with
	// GTIDIOPos they change whenever the replica hears from its source, so
	// a monitor that sees none of them move knows the source went quiet,
	// whatever the IO thread's state says (a SIGSTOPped source keeps it
	// "Yes" until slave_net_timeout).
	ReadSourceFile     string
	ReadSourcePos      uint64
	ReceivedHeartbeats uint64
	// RelayLogFile and RelayLogPos are where the SQL thread is in the
	// relay log: applying a relay log without the IO thread needs them
	// (see Actions.StartApplier).
	RelayLogFile string
	RelayLogPos  uint64
	// HeartbeatPeriod is Slave_heartbeat_period in seconds.
	HeartbeatPeriod float64
	// SQLDelay is MASTER_DELAY in seconds.
	SQLDelay int
}

// IORunning reports whether the IO thread is connected to its source.
func (r ReplicaStatus) IORunning() bool { return r.IOState == "Yes" }

// Source is the configured source as host:port ("" when none).
func (r ReplicaStatus) Source() string {
	if r.SourceHost == "" {
		return ""
	}
	return net.JoinHostPort(r.SourceHost, strconv.Itoa(r.SourcePort))
}

// Progress identifies everything the replica has heard from its source so
// far; two equal values mean nothing arrived in between.
func (r ReplicaStatus) Progress() string {
	return r.GTIDIOPos + "|" + r.ReadSourceFile + ":" + strconv.FormatUint(r.ReadSourcePos, 10) + "|" + strconv.FormatUint(r.ReceivedHeartbeats, 10)
}

// Errors lists the connection's IO and SQL errors, "" when there are none.
func (r ReplicaStatus) Errors() string {
	var errs []string
	if r.LastIOError != "" {
		errs = append(errs, fmt.Sprintf("IO error %d: %s", r.LastIOErrno, r.LastIOError))
	}
	if r.LastSQLError != "" {
		errs = append(errs, fmt.Sprintf("SQL error %d: %s", r.LastSQLErrno, r.LastSQLError))
	}
	return strings.Join(errs, "; ")
}

// Queryer is what ReadReplicaStatus needs (*sql.DB and *sql.Conn have it).
type Queryer interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// ReadReplicaStatus runs SHOW ALL SLAVES STATUS; a server that is not a
// replica has no rows.
func ReadReplicaStatus(ctx context.Context, q Queryer) ([]ReplicaStatus, error) {
	rows, err := q.QueryContext(ctx, "SHOW ALL SLAVES STATUS")
	if err != nil {
		return nil, fmt.Errorf("show all slaves status: %w", err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return nil, fmt.Errorf("show all slaves status: %w", err)
	}
	vals := make([]sql.NullString, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	var out []ReplicaStatus
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return nil, fmt.Errorf("show all slaves status: %w", err)
		}
		row := make(map[string]string, len(cols))
		for i, c := range cols {
			row[c] = vals[i].String
		}
		st, err := ParseReplicaStatus(row)
		if err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("show all slaves status: %w", err)
	}
	return out, nil
}

// ParseReplicaStatus reads one row, keyed by column name. Numbers that do
// not parse are an error naming the column: a silently zero server id
// would make the source look unknown.
func ParseReplicaStatus(row map[string]string) (ReplicaStatus, error) {
	st := ReplicaStatus{
		Connection:     row["Connection_name"],
		SourceHost:     row["Master_Host"],
		IOState:        row["Slave_IO_Running"],
		SQLRunning:     row["Slave_SQL_Running"] == "Yes",
		LastIOError:    row["Last_IO_Error"],
		LastSQLError:   row["Last_SQL_Error"],
		GTIDIOPos:      strings.TrimSpace(row["Gtid_IO_Pos"]),
		ReadSourceFile: row["Master_Log_File"],
		RelayLogFile:   row["Relay_Log_File"],
	}
	var errs []string
	num := func(col string, bits int, set func(uint64)) {
		v := strings.TrimSpace(row[col])
		if v == "" {
			return
		}
		n, err := strconv.ParseUint(v, 10, bits)
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s=%q", col, v))
			return
		}
		set(n)
	}
	num("Master_Port", 16, func(n uint64) { st.SourcePort = int(n) })
	num("Master_Server_Id", 32, func(n uint64) { st.SourceServerID = uint32(n) })
	num("Last_IO_Errno", 32, func(n uint64) { st.LastIOErrno = int(n) })
	num("Last_SQL_Errno", 32, func(n uint64) { st.LastSQLErrno = int(n) })
	num("Read_Master_Log_Pos", 64, func(n uint64) { st.ReadSourcePos = n })
	num("Relay_Log_Pos", 64, func(n uint64) { st.RelayLogPos = n })
	num("Slave_received_heartbeats", 64, func(n uint64) { st.ReceivedHeartbeats = n })
	num("SQL_Delay", 32, func(n uint64) { st.SQLDelay = int(n) })
	if v := strings.TrimSpace(row["Slave_heartbeat_period"]); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			errs = append(errs, fmt.Sprintf("Slave_heartbeat_period=%q", v))
		}
		st.HeartbeatPeriod = f
	}
	if len(errs) > 0 {
		return st, fmt.Errorf("show all slaves status: malformed %s", strings.Join(errs, ", "))
	}
	return st, nil
}
