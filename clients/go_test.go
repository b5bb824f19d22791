package clients_test

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"time"

	gmclient "github.com/go-mysql-org/go-mysql/client"
	gm "github.com/go-mysql-org/go-mysql/mysql"
	driver "github.com/go-sql-driver/mysql"
)

const bigRowSize = 20 << 20

// bigRow is 20 MiB of random bytes: every byte value, so escaping and
// multi-packet framing are both exercised.
func bigRow() []byte {
	b := make([]byte, bigRowSize)
	var seed [32]byte
	seed[0] = byte(time.Now().UnixNano())
	_, _ = rand.NewChaCha8(seed).Read(b)
	return b
}

func sameRow(got, want []byte) error {
	if sha256.Sum256(got) != sha256.Sum256(want) {
		return fmt.Errorf("read back %d bytes with another checksum", len(got))
	}
	return nil
}

// check reports one check's outcome; it says whether it passed.
func check(emit func(string), name string, err error) bool {
	if err != nil {
		emit(fmt.Sprintf("fail %s: %v", name, err))
		return false
	}
	emit("ok " + name)
	return true
}

func want[T comparable](got, want T, err error) error {
	if err != nil {
		return err
	}
	if got != want {
		return fmt.Errorf("read back %v, want %v", got, want)
	}
	return nil
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// reconnect retries f for up to 30 s, as an application's reconnect logic
// would while its proxy restarts.
func reconnect(ctx context.Context, emit func(string), f func() error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := f()
		if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
			check(emit, "reconnect", err)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// goSQLDriver is go-sql-driver/mysql through database/sql, with a DSN that
// sets nothing but the address, the account and the database.
func goSQLDriver() *client {
	return &client{name: "go-sql-driver", checks: appChecks, missing: func() string { return "" }, run: runGoSQLDriver}
}

func runGoSQLDriver(ctx context.Context, mode string, tg target, resume <-chan struct{}, emit func(string)) error {
	db, err := sql.Open("mysql", fmt.Sprintf("%s:%s@tcp(%s)/%s", tg.user, tg.password, tg.addr(), tg.database))
	if err != nil {
		return err
	}
	defer db.Close()
	one := func(c *sql.Conn, q string, args ...any) (s string, err error) {
		err = c.QueryRowContext(ctx, q, args...).Scan(&s)
		return s, err
	}
	switch mode {
	case "workload":
		c, err := db.Conn(ctx)
		if err == nil {
			defer c.Close()
			_, err = one(c, "SELECT 1")
		}
		if !check(emit, "connect", err) {
			return nil
		}
		check(emit, "write_read", func() error {
			if _, err := c.ExecContext(ctx, "INSERT INTO "+tg.table+" (id, v) VALUES (1, 'written')"); err != nil {
				return err
			}
			got, err := one(c, "SELECT v FROM "+tg.table+" WHERE id = 1")
			return want(got, "written", err)
		}())
		check(emit, "rollback", func() error {
			tx, err := c.BeginTx(ctx, nil)
			if err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, "INSERT INTO "+tg.table+" (id, v) VALUES (2, 'rolled back')"); err != nil {
				return err
			}
			if err := tx.Rollback(); err != nil {
				return err
			}
			got, err := one(c, "SELECT COUNT(*) FROM "+tg.table+" WHERE id = 2")
			return want(got, "0", err)
		}())
		check(emit, "prepared", func() error {
			// With arguments and interpolateParams off (the default), the
			// driver prepares on the server.
			ins, err := c.PrepareContext(ctx, "INSERT INTO "+tg.table+" (id, v) VALUES (?, ?)")
			if err != nil {
				return err
			}
			defer ins.Close()
			if _, err := ins.ExecContext(ctx, 3, "prepared"); err != nil {
				return err
			}
			got, err := one(c, "SELECT v FROM "+tg.table+" WHERE id = ?", 3)
			return want(got, "prepared", err)
		}())
		check(emit, "big_row", func() error {
			data := bigRow()
			if _, err := c.ExecContext(ctx, "INSERT INTO "+tg.table+" (id, b) VALUES (?, ?)", 4, data); err != nil {
				return err
			}
			var got []byte
			if err := c.QueryRowContext(ctx, "SELECT b FROM "+tg.table+" WHERE id = 4").Scan(&got); err != nil {
				return err
			}
			return sameRow(got, data)
		}())
		check(emit, "dup_key", func() error {
			_, err := c.ExecContext(ctx, "INSERT INTO "+tg.table+" (id, v) VALUES (1, 'again')")
			var me *driver.MySQLError
			if !errors.As(err, &me) || me.Number != 1062 {
				return fmt.Errorf("got %v, want error 1062", err)
			}
			return nil
		}())
	case "restart":
		if err := db.PingContext(ctx); err != nil {
			return err
		}
		emit("ready")
		<-resume
		// The pool finds its connection dead and dials again by itself.
		reconnect(ctx, emit, func() error {
			c, err := db.Conn(ctx)
			if err != nil {
				return err
			}
			defer c.Close()
			if _, err := c.ExecContext(ctx, "REPLACE INTO "+tg.table+" (id, v) VALUES (100, 'reconnected')"); err != nil {
				return err
			}
			got, err := one(c, "SELECT v FROM "+tg.table+" WHERE id = 100")
			return want(got, "reconnected", err)
		})
	case "promote":
		c, err := db.Conn(ctx)
		if err != nil {
			return err
		}
		defer c.Close()
		promoteLoop(tg, emit, func(id int) error {
			if _, err := c.ExecContext(ctx, "INSERT INTO "+tg.table+" (id, v) VALUES (?, 'p')", id); err != nil {
				return err
			}
			got, err := one(c, "SELECT v FROM "+tg.table+" WHERE id = ?", id)
			return want(got, "p", err)
		})
	}
	return nil
}

// promoteLoop writes and reads back rows 1000, 1001, ... with step until
// the stop file exists, reporting each ("tick") and the first error.
func promoteLoop(tg target, emit func(string), step func(id int) error) {
	n := 0
	for ; !exists(tg.stopFile); n++ {
		if err := step(1000 + n); err != nil {
			emit(fmt.Sprintf("fail promote: after %d writes: %v", n, err))
			return
		}
		if n == 0 {
			emit("ready")
		}
		emit("tick")
	}
	emit(fmt.Sprintf("ok promote %d", n))
}

// goMySQLClient is go-mysql's client package with client.Connect's
// defaults.
func goMySQLClient() *client {
	return &client{name: "go-mysql", checks: appChecks, missing: func() string { return "" }, run: runGoMySQL}
}

func runGoMySQL(ctx context.Context, mode string, tg target, resume <-chan struct{}, emit func(string)) error {
	connect := func() (*gmclient.Conn, error) {
		return gmclient.ConnectWithContext(ctx, tg.addr(), tg.user, tg.password, tg.database, 10*time.Second)
	}
	str := func(r *gm.Result, err error) (string, error) {
		if err != nil {
			return "", err
		}
		if r.Resultset == nil || r.RowNumber() == 0 {
			return "", errors.New("no row")
		}
		return r.GetString(0, 0)
	}
	switch mode {
	case "workload":
		c, err := connect()
		if err == nil {
			defer c.Close()
			_, err = str(c.Execute("SELECT 1"))
		}
		if !check(emit, "connect", err) {
			return nil
		}
		check(emit, "write_read", func() error {
			if _, err := c.Execute("INSERT INTO " + tg.table + " (id, v) VALUES (1, 'written')"); err != nil {
				return err
			}
			got, err := str(c.Execute("SELECT v FROM " + tg.table + " WHERE id = 1"))
			return want(got, "written", err)
		}())
		check(emit, "rollback", func() error {
			if err := c.Begin(); err != nil {
				return err
			}
			if _, err := c.Execute("INSERT INTO " + tg.table + " (id, v) VALUES (2, 'rolled back')"); err != nil {
				return err
			}
			if err := c.Rollback(); err != nil {
				return err
			}
			got, err := str(c.Execute("SELECT COUNT(*) FROM " + tg.table + " WHERE id = 2"))
			return want(got, "0", err)
		}())
		check(emit, "prepared", func() error {
			ins, err := c.Prepare("INSERT INTO " + tg.table + " (id, v) VALUES (?, ?)")
			if err != nil {
				return err
			}
			defer ins.Close()
			if _, err := ins.Execute(3, "prepared"); err != nil {
				return err
			}
			sel, err := c.Prepare("SELECT v FROM " + tg.table + " WHERE id = ?")
			if err != nil {
				return err
			}
			defer sel.Close()
			got, err := str(sel.Execute(3))
			return want(got, "prepared", err)
		}())
		check(emit, "big_row", func() error {
			data := bigRow()
			// Execute with arguments prepares the statement on the server.
			if _, err := c.Execute("INSERT INTO "+tg.table+" (id, b) VALUES (?, ?)", 4, data); err != nil {
				return err
			}
			got, err := str(c.Execute("SELECT b FROM " + tg.table + " WHERE id = 4"))
			if err != nil {
				return err
			}
			return sameRow([]byte(got), data)
		}())
		check(emit, "dup_key", func() error {
			_, err := c.Execute("INSERT INTO " + tg.table + " (id, v) VALUES (1, 'again')")
			var me *gm.MyError
			if !errors.As(err, &me) || me.Code != 1062 {
				return fmt.Errorf("got %v, want error 1062", err)
			}
			return nil
		}())
	case "restart":
		c, err := connect()
		if err != nil {
			return err
		}
		emit("ready")
		<-resume
		if _, err := c.Execute("SELECT 1"); err != nil {
			emit("info old connection: " + err.Error())
		}
		c.Close()
		reconnect(ctx, emit, func() error {
			c, err := connect()
			if err != nil {
				return err
			}
			defer c.Close()
			if _, err := c.Execute("REPLACE INTO " + tg.table + " (id, v) VALUES (100, 'reconnected')"); err != nil {
				return err
			}
			got, err := str(c.Execute("SELECT v FROM " + tg.table + " WHERE id = 100"))
			return want(got, "reconnected", err)
		})
	case "promote":
		c, err := connect()
		if err != nil {
			return err
		}
		defer c.Close()
		promoteLoop(tg, emit, func(id int) error {
			if _, err := c.Execute("INSERT INTO "+tg.table+" (id, v) VALUES (?, 'p')", id); err != nil {
				return err
			}
			got, err := str(c.Execute("SELECT v FROM "+tg.table+" WHERE id = ?", id))
			return want(got, "p", err)
		})
	}
	return nil
}
