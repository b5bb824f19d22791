package mariadb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"time"
)

// errReadOnly: the heartbeat was not written, the member is read-only.
var errReadOnly = errors.New("read-only: no heartbeat written")

// heartbeats measures lag without comparing clocks across hosts: each point
// is a heartbeat value and the local time it was written (own writes) or
// first seen on the primary (observed). A replica showing value k is as far
// behind as the first point after k is old.
type heartbeats struct {
	mu      sync.Mutex
	id      string           // observed: whose row the points are from
	prev    map[string]int64 // observed: every row's value last round
	points  []hbPoint        // oldest first
	created bool
}

func readHeartbeats(ctx context.Context, db *sql.DB) (map[string]int64, error) {
	rows, err := db.QueryContext(ctx, "SELECT id, ts FROM dbrouter.heartbeat")
	if err != nil {
		return nil, fmt.Errorf("read heartbeats: %w", err)
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var id string
		var ts int64
		if err := rows.Scan(&id, &ts); err != nil {
			return nil, fmt.Errorf("read heartbeats: %w", err)
		}
		out[id] = ts
	}
	return out, rows.Err()
}

type hbPoint struct {
	ts int64     // the row's value (the writer's clock, unix µs)
	at time.Time // when it was written, or first seen, here
}

const heartbeatWindow = 2 * time.Minute

func (h *heartbeats) write(ctx context.Context, db *sql.DB, id string) error {
	h.mu.Lock()
	created := h.created
	h.mu.Unlock()
	if !created {
		for _, q := range []string{
			"CREATE DATABASE IF NOT EXISTS dbrouter",
			"CREATE TABLE IF NOT EXISTS dbrouter.heartbeat (id VARBINARY(128) PRIMARY KEY, ts BIGINT NOT NULL) ENGINE=InnoDB",
		} {
			if _, err := db.ExecContext(ctx, q); err != nil {
				return err
			}
		}
	}
	ts := time.Now().UnixMicro()
	// Only while the member is writable: the monitor's account usually
	// bypasses read_only, and a heartbeat landing on a member that was
	// just fenced (the snapshot that named it primary is a round old) is
	// a transaction the new primary never gets, which would make the old
	// one errant.
	res, err := db.ExecContext(ctx, "INSERT INTO dbrouter.heartbeat (id, ts) SELECT ?, ? FROM DUAL WHERE @@GLOBAL.read_only = 0 ON DUPLICATE KEY UPDATE ts = VALUES(ts)", id, ts)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err == nil && n == 0 {
		return errReadOnly
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.created = true
	h.add(hbPoint{ts: ts, at: time.UnixMicro(ts)})
	return nil
}

// observe takes the heartbeat rows read on the primary. It follows one row
// that is still being written (its value moved since the last round): the
// one it followed if that is live, else the live one with the newest value.
// A row nobody writes any more (a former leader's) is never followed.
func (h *heartbeats) observe(rows map[string]int64, now time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	live := func(id string) bool {
		prev, seen := h.prev[id]
		return seen && rows[id] > prev
	}
	if !live(h.id) {
		best := ""
		for id := range rows {
			if live(id) && (best == "" || rows[id] > rows[best] || rows[id] == rows[best] && id < best) {
				best = id
			}
		}
		if best != "" && best != h.id {
			h.id, h.points = best, nil
		}
	}
	if ts, ok := rows[h.id]; ok && h.id != "" && (len(h.points) == 0 || ts > h.points[len(h.points)-1].ts) && live(h.id) {
		h.add(hbPoint{ts: ts, at: now})
	}
	h.prev = rows
}

func (h *heartbeats) add(p hbPoint) {
	h.points = append(h.points, p)
	cut := p.at.Add(-heartbeatWindow)
	i := 0
	for i < len(h.points)-1 && h.points[i].at.Before(cut) {
		i++
	}
	h.points = h.points[i:]
}

// fresh reports whether the newest point is younger than d.
func (h *heartbeats) fresh(now time.Time, d time.Duration) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.points) > 0 && now.Sub(h.points[len(h.points)-1].at) < d
}

func (h *heartbeats) source() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.id
}

// lag returns how long the first acknowledged write newer than seen has been
// outstanding, 0 when the replica has the newest, -1 when nothing was written
// yet.
func (h *heartbeats) lag(seen int64, now time.Time) time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.points) == 0 {
		return -1
	}
	for _, p := range h.points {
		if p.ts > seen {
			return max(now.Sub(p.at), 0)
		}
	}
	return 0
}
