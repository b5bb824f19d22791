// Command routerd is the dbrouter daemon: with role proxy it serves the
// clusters of its config file to local applications; with role arbiter it
// is a Raft voter that decides promotions. See docs/config.md.
package main

import (
	"context"
	"flag"
	"fmt"
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
	fs := flag.NewFlagSet("routerd", flag.ContinueOnError)
	path := fs.String("config", "", "config file (YAML); see docs/config.md")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *path == "" || fs.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: routerd --config FILE")
		return 2
	}
	cfg, err := config.Load(*path)
	if err != nil {
		fmt.Fprintf(os.Stderr, "routerd: config %s:\n%v\n", *path, err)
		return 2
	}
	log, err := newLogger(cfg.Log.Level)
	if err != nil {
		fmt.Fprintf(os.Stderr, "routerd: %v\n", err)
		return 2
	}
	defer log.Sync() //nolint:errcheck
	if bi, ok := debug.ReadBuildInfo(); !ok || !runtimeTuned(os.Getenv("GODEBUG"), bi.Settings) {
		log.Warn("built without the Makefile's RUNTIME_TUNING: at low load every statement pays an extra runtime thread wake-up (about 50 µs); build with make build, see docs/operations.md")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := daemon.Run(ctx, cfg, log, daemon.Options{}); err != nil {
		log.Error("routerd stopped", zap.Error(err))
		return 1
	}
	return 0
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

func newLogger(level string) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, err
	}
	zc := zap.NewProductionConfig()
	zc.Level = zap.NewAtomicLevelAt(lvl)
	zc.Encoding = "console"
	zc.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	zc.DisableStacktrace = true
	return zc.Build()
}
