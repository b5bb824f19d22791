// Command ferretmember runs one embedded FerretDB (SQLite backend) on a
// loopback port: a real Mongo-wire server for tests, since no mongod package
// exists on the machines the tests run on. It is a harness binary, not part
// of the product: chaos starts one process per member so that kill -9 and
// SIGSTOP hit a real process and its real sockets, and a restart on the same
// -dir finds the data the killed process wrote.
//
// It logs to stderr, prints one ready line to stdout once the port accepts
// connections, and exits on SIGTERM or SIGINT.
//
// With -rs it is a replica-set member instead (chaos/rssim): FerretDB moves
// to a private loopback port and the member simulator's shim serves -port,
// answering as a mongod replica-set member (docs/mongosim.md):
//
//	ferretmember -port 27001 -dir d1 -rs rs0 -member db1 \
//	  -peer db1=127.0.0.1:27001 -peer db2=127.0.0.1:27002 -peer db3=127.0.0.1:27003,arbiter \
//	  [-tag dc=east] [-election-timeout 10s] [-heartbeat 2s] \
//	  [-tls-cert server.pem -tls-key server-key.pem -tls-ca ca.pem]
//
// With -tls-cert the member listens with TLS only (mongod's requireTLS) and
// reaches its peers over TLS, verifying them against -tls-ca.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
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
	"strings"
	"syscall"
	"time"

	"github.com/FerretDB/FerretDB/ferretdb"

	"github.com/dbrouter/dbrouter/chaos/rssim"
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
	rs := rssim.DefaultConfig()
	fs.StringVar(&rs.SetName, "rs", "", "replica set name: run as a simulated replica-set member (chaos/rssim)")
	fs.StringVar(&rs.Self, "member", "", "with -rs: this member's name among the -peer flags")
	fs.Func("peer", "with -rs, once per member, this one included: NAME=HOST:PORT[,dial=HOST:PORT][,arbiter]", func(v string) error {
		m, err := rssim.ParsePeer(v)
		rs.Members = append(rs.Members, m)
		return err
	})
	arbiter := fs.Bool("arbiter", false, "with -rs: this member is an arbiter (votes, holds no data)")
	fs.Func("tag", "with -rs: a member tag KEY=VALUE (repeatable)", func(v string) error {
		k, val, ok := strings.Cut(v, "=")
		if !ok || k == "" {
			return fmt.Errorf("tag %q: want KEY=VALUE", v)
		}
		if rs.Tags == nil {
			rs.Tags = map[string]string{}
		}
		rs.Tags[k] = val
		return nil
	})
	fs.DurationVar(&rs.ElectionTimeout, "election-timeout", rs.ElectionTimeout, "with -rs: election timeout")
	fs.DurationVar(&rs.Heartbeat, "heartbeat", rs.Heartbeat, "with -rs: heartbeat interval")
	tlsCert := fs.String("tls-cert", "", "with -rs: listen with TLS only (requireTLS), with this certificate (PEM); needs -tls-key and -tls-ca")
	tlsKey := fs.String("tls-key", "", "with -rs and -tls-cert: the certificate's key (PEM)")
	tlsCA := fs.String("tls-ca", "", "with -rs and -tls-cert: the CA the peers' certificates are verified against (PEM)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var lvl slog.Level
	if fs.NArg() > 0 || *port <= 0 || *port > 65535 || *dir == "" || lvl.UnmarshalText([]byte(*level)) != nil {
		fmt.Fprintln(stderr, "usage: ferretmember -port N -dir DIR [-log-level info] [-rs NAME -member NAME -peer NAME=HOST:PORT... [-arbiter] [-tag K=V] [-election-timeout D] [-heartbeat D] [-tls-cert F -tls-key F -tls-ca F]]")
		return 2
	}
	rsMode := rs.SetName != "" || rs.Self != "" || len(rs.Members) > 0 || *arbiter || rs.Tags != nil
	if *tlsCert != "" || *tlsKey != "" || *tlsCA != "" {
		if !rsMode {
			fmt.Fprintln(stderr, "ferretmember: -tls-cert, -tls-key and -tls-ca are for a replica-set member (-rs)")
			return 2
		}
		var err error
		if rs.TLS, rs.PeerTLS, err = memberTLS(*tlsCert, *tlsKey, *tlsCA); err != nil {
			fmt.Fprintln(stderr, "ferretmember:", err)
			return 2
		}
	}
	if rsMode {
		for i := range rs.Members {
			if rs.Members[i].Name == rs.Self && *arbiter {
				rs.Members[i].Arbiter = true
			}
		}
		rs.Backend = "127.0.0.1:1" // checked here, set once FerretDB has its port
		if err := rs.Validate(); err != nil {
			fmt.Fprintln(stderr, "ferretmember:", err)
			return 2
		}
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl}))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if rsMode {
		if err := serveMember(ctx, *port, *dir, rs, logger, stdout); err != nil {
			logger.Error("ferretmember failed", "err", err)
			return 1
		}
		return 0
	}
	if err := serve(ctx, *port, *dir, logger, stdout); err != nil {
		logger.Error("ferretmember failed", "err", err)
		return 1
	}
	return 0
}

// memberTLS loads a TLS-only member's certificate (its listener) and the
// CA its peers' certificates are verified against (its heartbeats, votes
// and fetches); all three files are needed.
func memberTLS(certFile, keyFile, caFile string) (server, peer *tls.Config, err error) {
	if certFile == "" || keyFile == "" || caFile == "" {
		return nil, nil, errors.New("tls: -tls-cert, -tls-key and -tls-ca go together")
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("tls-cert: %w", err)
	}
	b, err := os.ReadFile(caFile)
	if err != nil {
		return nil, nil, fmt.Errorf("tls-ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, nil, fmt.Errorf("tls-ca: %s holds no PEM certificate", caFile)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// dataDir makes dir absolute and creates it.
func dataDir(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("data dir %s: %w", dir, err)
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return "", fmt.Errorf("data dir %s: %w", abs, err)
	}
	return abs, nil
}

// serve runs FerretDB until ctx ends.
func serve(ctx context.Context, port int, dir string, logger *slog.Logger, stdout io.Writer) error {
	abs, err := dataDir(dir)
	if err != nil {
		return err
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

// serveMember runs FerretDB on a private loopback port and the replica-set
// member simulator on port in front of it, until ctx ends. The ready line
// is printed once the member has loaded its replication state.
func serveMember(ctx context.Context, port int, dir string, cfg rssim.Config, logger *slog.Logger, stdout io.Writer) error {
	abs, err := dataDir(dir)
	if err != nil {
		return err
	}
	f, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: "127.0.0.1:0"},
		Logger:    logger.With("part", "ferretdb"),
		Handler:   "sqlite",
		SQLiteURL: sqliteURL(abs),
	})
	if err != nil {
		return fmt.Errorf("start ferretdb in %s: %w", abs, err)
	}
	u, err := url.Parse(f.MongoDBURI())
	if err != nil {
		return fmt.Errorf("ferretdb URI %q: %w", f.MongoDBURI(), err)
	}
	cfg.Backend = u.Host
	srv, err := rssim.New(cfg, logger.With("part", "rssim"))
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return fmt.Errorf("listen on port %d: %w", port, err)
	}
	fctx, fcancel := context.WithCancel(context.Background())
	defer fcancel()
	fdone := make(chan error, 1)
	go func() { fdone <- f.Run(fctx) }()
	sdone := make(chan error, 1)
	go func() {
		sdone <- srv.Serve(ctx, ln, func() {
			fmt.Fprintln(stdout, readyPrefix+"mongodb://"+ln.Addr().String()+"/")
		})
	}()
	var serr error
	select {
	case serr = <-sdone:
	case err := <-fdone:
		// FerretDB ended first: the member cannot go on.
		logger.Error("ferretdb stopped", "err", err)
		<-ctx.Done()
		return errors.Join(fmt.Errorf("ferretdb stopped: %w", err), <-sdone)
	}
	logger.Info("ferretmember stopping")
	// The shim stops first, so FerretDB's only clients are gone.
	fcancel()
	select {
	case err := <-fdone:
		if serr == nil && err != nil && !errors.Is(err, context.Canceled) {
			serr = err
		}
	case <-time.After(shutdownGrace):
		return errors.New("ferretdb still running " + shutdownGrace.String() + " after the stop signal")
	}
	return serr
}
