package clients_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// installHint ends every "not installed" message.
const installHint = " (or run `make clients-deps`, which `make test` runs)"

// pythonBin is Debian's python3: python3-pymysql and python3-mysqldb are
// installed for it, and a pyenv python3 first on PATH cannot see them.
const pythonBin = "/usr/bin/python3"

// connectorJar is where Debian's libmariadb-java puts Connector/J.
const connectorJar = "/usr/share/java/mariadb-java-client.jar"

// process runs a client program that speaks the package's protocol: the
// target in its environment, the protocol on its standard output, and a
// line on its standard input when resume is closed.
func process(ctx context.Context, tg target, resume <-chan struct{}, emit func(string), name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = tg.env()
	cmd.WaitDelay = 5 * time.Second
	stdin, stdout, stderr, err := piped(cmd)
	if err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() {
		select {
		case <-resume:
			_, _ = io.WriteString(stdin, "go\n")
		case <-exited:
		}
	}()
	lines(stdout, emit)
	err = cmd.Wait()
	close(exited)
	if err != nil {
		return fmt.Errorf("%s: %w: %s", name, err, stderr.String())
	}
	return nil
}

// piped starts cmd with its standard input and output piped and the tail
// of its standard error kept.
func piped(cmd *exec.Cmd) (io.WriteCloser, io.ReadCloser, *tailBuffer, error) {
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, nil, nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil, nil, err
	}
	stderr := &tailBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		return nil, nil, nil, fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	return stdin, stdout, stderr, nil
}

// tailBuffer keeps the last 4 KiB written to it.
type tailBuffer struct{ b []byte }

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > 4096 {
		t.b = t.b[len(t.b)-4096:]
	}
	return len(p), nil
}

func (t *tailBuffer) String() string { return strings.TrimSpace(string(t.b)) }

func lookPath(name, install string) func() string {
	return func() string {
		if _, err := exec.LookPath(name); err != nil {
			return name + " not found: install it with `" + install + "`" + installHint
		}
		return ""
	}
}

// pyClient is a Python DB-API driver (module mod, Debian package pkg) at
// its default settings.
func pyClient(name, mod, pkg string) *client {
	return &client{
		name:   name,
		checks: appChecks,
		missing: func() string {
			if err := exec.Command(pythonBin, "-c", "import "+mod).Run(); err != nil {
				return fmt.Sprintf("%s cannot import %s: install it with `apt-get install -y %s`%s", pythonBin, mod, pkg, installHint)
			}
			return ""
		},
		run: func(ctx context.Context, mode string, tg target, resume <-chan struct{}, emit func(string)) error {
			driver := map[string]string{"pymysql": "pymysql", "MySQLdb": "mysqldb"}[mod]
			return process(ctx, tg, resume, emit, pythonBin, filepath.Join("python", "workload.py"), driver, mode)
		},
	}
}

// connectorJ is MariaDB Connector/J (Debian's libmariadb-java) with a JDBC
// URL that sets nothing; its program is compiled once per test run.
func connectorJ() *client {
	var classes string
	return &client{
		name:   "connector-j",
		checks: appChecks,
		missing: func() string {
			if _, err := os.Stat(connectorJar); err != nil {
				return connectorJar + " not found: install it with `apt-get install -y libmariadb-java`" + installHint
			}
			return lookPath("javac", "apt-get install -y default-jdk-headless")()
		},
		setup: func(ctx context.Context, dir string) error {
			classes = dir
			out, err := exec.CommandContext(ctx, "javac", "-d", dir, filepath.Join("java", "Workload.java")).CombinedOutput()
			if err != nil {
				return fmt.Errorf("javac: %w: %s", err, out)
			}
			return nil
		},
		run: func(ctx context.Context, mode string, tg target, resume <-chan struct{}, emit func(string)) error {
			return process(ctx, tg, resume, emit, "java", "-cp", classes+string(os.PathListSeparator)+connectorJar, "Workload", mode)
		},
	}
}

// nodeMySQL2 is Node's mysql2 (installed into node/ by npm ci) with
// createConnection's defaults.
func nodeMySQL2() *client {
	return &client{
		name:   "node-mysql2",
		checks: appChecks,
		missing: func() string {
			if how := lookPath("node", "apt-get install -y nodejs npm")(); how != "" {
				return how
			}
			if _, err := os.Stat(filepath.Join("node", "node_modules", "mysql2", "package.json")); err != nil {
				return "mysql2 not installed in clients/node: run `npm ci` there" + installHint
			}
			return ""
		},
		run: func(ctx context.Context, mode string, tg target, resume <-chan struct{}, emit func(string)) error {
			return process(ctx, tg, resume, emit, "node", filepath.Join("node", "workload.js"), mode)
		},
	}
}

// mariadbCLI is the mariadb command-line client, each statement batch a
// new invocation (a new connection), as scripts use it.
func mariadbCLI() *client {
	return &client{name: "mariadb-cli", checks: appChecks, missing: lookPath("mariadb", "apt-get install -y mariadb-client"), run: runCLI}
}

func cliArgs(tg target, extra ...string) []string {
	return append(extra, "--host="+tg.host, "--port="+tg.port, "--user="+tg.user, "--password="+tg.password,
		"--batch", "--skip-column-names", tg.database)
}

// cli runs stmts in one invocation and returns its output.
func cli(ctx context.Context, tg target, stmts string, extra ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "mariadb", cliArgs(tg, extra...)...)
	cmd.Stdin = strings.NewReader(stmts)
	var out bytes.Buffer
	var stderr tailBuffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%w: %s", err, stderr.String())
	}
	return strings.TrimSpace(out.String()), nil
}

func runCLI(ctx context.Context, mode string, tg target, resume <-chan struct{}, emit func(string)) error {
	t := tg.table
	switch mode {
	case "workload":
		got, err := cli(ctx, tg, "SELECT 1;")
		if !check(emit, "connect", want(got, "1", err)) {
			return nil
		}
		got, err = cli(ctx, tg, "INSERT INTO "+t+" (id, v) VALUES (1, 'written'); SELECT v FROM "+t+" WHERE id = 1;")
		check(emit, "write_read", want(got, "written", err))
		got, err = cli(ctx, tg, "BEGIN; INSERT INTO "+t+" (id, v) VALUES (2, 'rolled back'); ROLLBACK; SELECT COUNT(*) FROM "+t+" WHERE id = 2;")
		check(emit, "rollback", want(got, "0", err))
		got, err = cli(ctx, tg, "PREPARE ins FROM 'INSERT INTO "+t+" (id, v) VALUES (?, ?)'; SET @id = 3, @v = 'prepared'; EXECUTE ins USING @id, @v; "+
			"PREPARE sel FROM 'SELECT v FROM "+t+" WHERE id = ?'; EXECUTE sel USING @id;")
		check(emit, "prepared", want(got, "prepared", err))
		check(emit, "big_row", func() error {
			// The CLI reads no packet over its max_allowed_packet (16 MiB by
			// default), from a server as from the proxy: reading the row
			// back needs its option. (It sends longer statements at its
			// defaults.) One invocation, one session: its read sees its
			// write.
			data := bigRow()
			got, err := cli(ctx, tg, "INSERT INTO "+t+" (id, b) VALUES (4, X'"+hex.EncodeToString(data)+"'); "+
				"SELECT HEX(b) FROM "+t+" WHERE id = 4;", "--max-allowed-packet=64M")
			if err != nil {
				return err
			}
			b, err := hex.DecodeString(got)
			if err != nil {
				return err
			}
			return sameRow(b, data)
		}())
		_, err = cli(ctx, tg, "INSERT INTO "+t+" (id, v) VALUES (1, 'again');")
		if err == nil || !strings.Contains(err.Error(), "ERROR 1062 (23000)") {
			err = fmt.Errorf("got %v, want ERROR 1062", err)
		} else {
			err = nil
		}
		check(emit, "dup_key", err)
	case "restart":
		// One session held open across the restart, fed statements on its
		// standard input (--unbuffered: its answers are flushed at once,
		// not when it exits).
		cmd := exec.CommandContext(ctx, "mariadb", cliArgs(tg, "--unbuffered")...)
		stdin, stdout, stderr, err := piped(cmd)
		if err != nil {
			return err
		}
		out := bufio.NewReader(stdout)
		if _, err := io.WriteString(stdin, "SELECT 1;\n"); err != nil {
			return err
		}
		if l, err := out.ReadString('\n'); err != nil || strings.TrimSpace(l) != "1" {
			return fmt.Errorf("held session: %q %v: %s", l, err, stderr.String())
		}
		emit("ready")
		<-resume
		_, _ = io.WriteString(stdin, "SELECT 1;\n")
		stdin.Close()
		_, _ = io.ReadAll(out)
		err = cmd.Wait()
		emit(fmt.Sprintf("info old session: exit %v: %s", err, stderr.String()))
		reconnect(ctx, emit, func() error {
			got, err := cli(ctx, tg, "REPLACE INTO "+t+" (id, v) VALUES (100, 'reconnected'); SELECT v FROM "+t+" WHERE id = 100;")
			return want(got, "reconnected", err)
		})
	case "promote":
		promoteLoop(tg, emit, func(id int) error {
			got, err := cli(ctx, tg, fmt.Sprintf("INSERT INTO %s (id, v) VALUES (%d, 'p'); SELECT v FROM %s WHERE id = %d;", t, id, t, id))
			return want(got, "p", err)
		})
	}
	return nil
}

// sysbench runs oltp_read_write with its defaults (one thread, server-side
// prepared statements, deadlock errors ignored but counted) and requires
// no error at all, ignored ones included.
func sysbench() *client {
	return &client{name: "sysbench", checks: []string{"oltp_read_write", "promote"}, missing: lookPath("sysbench", "apt-get install -y sysbench"), run: runSysbench}
}

func sysbenchArgs(tg target, args ...string) []string {
	return append([]string{"oltp_read_write", "--mysql-host=" + tg.host, "--mysql-port=" + tg.port, "--mysql-user=" + tg.user,
		"--mysql-password=" + tg.password, "--mysql-db=sbtest", "--tables=1", "--table-size=1000"}, args...)
}

func runSysbench(ctx context.Context, mode string, tg target, resume <-chan struct{}, emit func(string)) error {
	switch mode {
	case "workload":
		if out, err := exec.CommandContext(ctx, "sysbench", sysbenchArgs(tg, "prepare")...).CombinedOutput(); err != nil {
			check(emit, "oltp_read_write", fmt.Errorf("prepare: %w\n%s", err, out))
			return nil
		}
		out, err := exec.CommandContext(ctx, "sysbench", sysbenchArgs(tg, "--time=3", "run")...).CombinedOutput()
		if err != nil {
			err = fmt.Errorf("%w\n%s", err, out)
		} else {
			err = sysbenchErrors(string(out))
		}
		check(emit, "oltp_read_write", err)
	case "promote":
		// One run for the whole switchover, reporting every second, ended
		// by the stop file.
		cmd := exec.CommandContext(ctx, "sysbench", sysbenchArgs(tg, "--time=120", "--report-interval=1", "run")...)
		cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
		_, stdout, stderr, err := piped(cmd)
		if err != nil {
			return err
		}
		exited := make(chan struct{})
		go func() {
			for !exists(tg.stopFile) {
				select {
				case <-exited:
					return
				case <-time.After(50 * time.Millisecond):
				}
			}
			_ = cmd.Process.Signal(syscall.SIGTERM)
		}()
		var failed error
		reports := 0
		var all strings.Builder
		lines(stdout, func(l string) {
			all.WriteString(l + "\n")
			if strings.Contains(l, "FATAL") && failed == nil {
				failed = errors.New(l)
			}
			if !strings.HasPrefix(l, "[ ") {
				return
			}
			if e := intervalErrors(l); e != nil && failed == nil {
				failed = e
			}
			reports++
			if reports == 1 {
				emit("ready")
			}
			emit("tick")
		})
		err = cmd.Wait()
		close(exited)
		// Ended by the stop file, SIGTERM is its only way out; before it,
		// any end is a failure.
		if !exists(tg.stopFile) && failed == nil {
			failed = fmt.Errorf("sysbench ended before the stop: %v: %s\n%s", err, stderr.String(), all.String())
		}
		if failed != nil {
			emit(fmt.Sprintf("fail promote: after %d reports: %v", reports, failed))
			return nil
		}
		emit(fmt.Sprintf("ok promote %d", reports))
	}
	return nil
}

// sysbenchErrors checks a run's summary: some transactions, no error.
func sysbenchErrors(out string) error {
	var tx, errs int
	for _, l := range strings.Split(out, "\n") {
		l = strings.TrimSpace(l)
		if s, ok := strings.CutPrefix(l, "transactions:"); ok {
			fmt.Sscanf(s, "%d", &tx)
		}
		if s, ok := strings.CutPrefix(l, "ignored errors:"); ok {
			fmt.Sscanf(s, "%d", &errs)
		}
	}
	if tx == 0 || errs != 0 {
		return fmt.Errorf("%d transactions, %d errors\n%s", tx, errs, out)
	}
	return nil
}

// intervalErrors checks one --report-interval line ("... err/s: 0.00
// reconn/s: 0.00").
func intervalErrors(l string) error {
	for _, key := range []string{"err/s:", "reconn/s:"} {
		_, rest, ok := strings.Cut(l, key)
		if !ok {
			return fmt.Errorf("no %s in %q", key, l)
		}
		var v float64
		if _, err := fmt.Sscanf(rest, "%g", &v); err != nil || v != 0 {
			return fmt.Errorf("sysbench reported %s %s", key, strings.TrimSpace(rest))
		}
	}
	return nil
}
