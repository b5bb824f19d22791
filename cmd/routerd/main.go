// Command routerd is the dbrouter daemon: with role proxy it serves the
// clusters of its config file to local applications; with role arbiter it
// is a Raft voter that decides promotions. See docs/config.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/dbrouter/dbrouter/config"
	"github.com/dbrouter/dbrouter/daemon"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	// Subcommands first: check-config FILE validates without starting.
	if len(args) > 0 && args[0] == "check-config" {
		return checkConfig(args[1:], os.Stdout, os.Stderr)
	}
	fs := flag.NewFlagSet("routerd", flag.ContinueOnError)
	path := fs.String("config", "", "config file (YAML); see docs/config.md")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *showVersion {
		if fs.NArg() > 0 {
			fmt.Fprintln(os.Stderr, "usage: routerd --version")
			return 2
		}
		fmt.Println(version())
		return 0
	}
	if *path == "" || fs.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: routerd --config FILE | routerd check-config FILE | routerd --version")
		return 2
	}
	cfg, err := config.Load(*path)
	if err != nil {
		fmt.Fprintf(os.Stderr, "routerd: config %s:\n%v\n", *path, err)
		return 2
	}
	log, err := newLogger(cfg.Log.Level, cfg.Log.Format)
	if err != nil {
		fmt.Fprintf(os.Stderr, "routerd: %v\n", err)
		return 2
	}
	defer log.Sync() //nolint:errcheck
	if bi, ok := debug.ReadBuildInfo(); !ok || !runtimeTuned(os.Getenv("GODEBUG"), bi.Settings) {
		log.Warn("built without the Makefile's RUNTIME_TUNING: at low load every statement pays an extra runtime thread wake-up (about 50 µs); build with make build, see docs/operations.md")
	}
	log.Info("routerd starting", zap.String("version", version()), zap.String("config", *path), zap.String("role", cfg.Role))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// SIGHUP is what logrotate and many operators send; by default it
	// would end the process (every client session with it). routerd logs
	// to stderr, so there is no file to reopen; until reload exists the
	// running config stays and the signal is only logged.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-hup:
				log.Warn("SIGHUP received: reloading the config is not supported yet, the running config stays (restart routerd to apply a new one)")
			case <-ctx.Done():
				return
			}
		}
	}()
	if err := daemon.Run(ctx, cfg, log, daemon.Options{}); err != nil {
		log.Error("routerd stopped", zap.Error(err))
		return 1
	}
	return 0
}

// checkConfig is routerd check-config FILE: 0 when the file would start,
// 2 with every problem (and its field path) when not.
func checkConfig(args []string, stdout, stderr io.Writer) int {
	if len(args) != 1 || strings.HasPrefix(args[0], "-") {
		fmt.Fprintln(stderr, "usage: routerd check-config FILE")
		return 2
	}
	cfg, err := config.Load(args[0])
	if err != nil {
		fmt.Fprintf(stderr, "%s:\n%v\n", args[0], err)
		return 2
	}
	fmt.Fprintf(stdout, "%s: ok (role %s, %d cluster(s))\n", args[0], cfg.Role, len(cfg.Clusters))
	return 0
}

// version is what routerd --version prints and logs at start.
func version() string {
	v, rev, gov := daemon.Version()
	return strings.Join(strings.Fields("routerd "+v+" "+rev+" "+gov), " ")
}

// runtimeTuned reports whether the Go runtime's sysmon thread is kept out of
// deep sleep (a schedtrace period; RUNTIME_TUNING in the Makefile), by the
// build's linker flags or by $GODEBUG.
func runtimeTuned(godebug string, build []debug.BuildSetting) bool {
	if strings.Contains(godebug, "schedtrace=") {
		return !strings.Contains(godebug, "schedtrace=0")
	}
	for _, s := range build {
		if s.Key == "-ldflags" && strings.Contains(s.Value, "godebugDefault=schedtrace=") {
			return true
		}
	}
	return false
}

func newLogger(level, format string) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, err
	}
	zc := zap.NewProductionConfig()
	zc.Level = zap.NewAtomicLevelAt(lvl)
	zc.Encoding = "console"
	if format == "json" {
		zc.Encoding = "json"
	}
	zc.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	zc.DisableStacktrace = true
	return zc.Build()
}
