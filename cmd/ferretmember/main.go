// Command ferretmember runs one embedded FerretDB (SQLite backend) on a
// loopback port: a real Mongo-wire server for tests, since no mongod package
// exists on the machines the tests run on. It is a harness binary, not part
// of the product: chaos starts one process per member so that kill -9 and
// SIGSTOP hit a real process and its real sockets, and a restart on the same
// -dir finds the data the killed process wrote.
//
// It logs to stderr, prints one ready line to stdout once the port accepts
// connections, and exits on SIGTERM or SIGINT.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/FerretDB/FerretDB/ferretdb"
)

// readyPrefix starts the line printed to stdout once the listener is bound;
// the rest of the line is the member's mongodb:// URI.
const readyPrefix = "ferretmember ready "

// shutdownGrace bounds how long Run may wait for open client connections
// after SIGTERM: a harness that asks for a clean stop must not hang on a
// client that never hangs up.
const shutdownGrace = 10 * time.Second

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("ferretmember", flag.ContinueOnError)
	fs.SetOutput(stderr)
	port := fs.Int("port", 0, "TCP port on 127.0.0.1 to listen on (required)")
	dir := fs.String("dir", "", "directory for the SQLite data; created if missing (required)")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var lvl slog.Level
	if fs.NArg() > 0 || *port <= 0 || *port > 65535 || *dir == "" || lvl.UnmarshalText([]byte(*level)) != nil {
		fmt.Fprintln(stderr, "usage: ferretmember -port N -dir DIR [-log-level info]")
		return 2
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl}))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := serve(ctx, *port, *dir, logger, stdout); err != nil {
		logger.Error("ferretmember failed", "err", err)
		return 1
	}
	return 0
}

// serve runs FerretDB until ctx ends.
func serve(ctx context.Context, port int, dir string, logger *slog.Logger, stdout io.Writer) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("data dir %s: %w", dir, err)
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return fmt.Errorf("data dir %s: %w", abs, err)
	}
	f, err := ferretdb.New(&ferretdb.Config{
		// Loopback only: these are test servers with no authentication.
		Listener:  ferretdb.ListenerConfig{TCP: net.JoinHostPort("127.0.0.1", strconv.Itoa(port))},
		Logger:    logger,
		Handler:   "sqlite",
		SQLiteURL: sqliteURL(abs),
	})
	if err != nil {
		return fmt.Errorf("start ferretdb on port %d in %s: %w", port, abs, err)
	}
	// New has bound the listener, so a client dialling now is queued by the
	// kernel and served as soon as Run accepts: the member is ready.
	if _, err := fmt.Fprintln(stdout, readyPrefix+f.MongoDBURI()); err != nil {
		return fmt.Errorf("print ready line: %w", err)
	}
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	logger.Info("ferretmember stopping")
	select {
	case err := <-done:
		return err
	case <-time.After(shutdownGrace):
		return errors.New("connections still open " + shutdownGrace.String() + " after the stop signal")
	}
}

// sqliteURL is the file: URI FerretDB wants for a directory; it must end
// with a slash, and escaping keeps odd temp dir names intact.
func sqliteURL(abs string) string {
	return (&url.URL{Scheme: "file", Path: filepath.ToSlash(abs) + "/"}).String()
}
