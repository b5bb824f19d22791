package daemon

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/dbrouter/dbrouter/config"
	"github.com/dbrouter/dbrouter/hooks"
	"github.com/dbrouter/dbrouter/raftfsm"
)

// takeoverSlack is added to the longest hook timeout to make the window in
// which a new leader runs its predecessor's last decisions again
// (hooks.Watcher): long enough to cover an election and a hook the old
// leader may have been running when it died.
const takeoverSlack = 10 * time.Second

// newHooks returns what runs the configured hooks on this node until its
// context ends (at once when none run here). Only arbiters run hooks (the
// leader among them, hooks.Watcher): a proxy leaves the section alone, so
// one file can serve both roles.
func newHooks(cfg *config.Config, ctl *control, log *zap.Logger, reg prometheus.Registerer) func(context.Context) {
	none := func(context.Context) {}
	if len(cfg.Hooks) == 0 {
		return none
	}
	if ctl == nil || cfg.Role != "arbiter" {
		log.Info("hooks are configured but only arbiters run them", zap.Int("hooks", len(cfg.Hooks)))
		return none
	}
	var hs []hooks.Hook
	var longest time.Duration
	for _, h := range cfg.Hooks {
		headers := map[string]string{}
		for k, v := range h.Headers {
			headers[k] = config.Password(v)
		}
		hs = append(hs, hooks.Hook{Name: h.Name, Command: h.Command, URL: h.URL, Headers: headers, On: h.On, Timeout: h.Timeout.D()})
		longest = max(longest, h.Timeout.D())
	}
	runner := hooks.New(cfg.Name, hs, log, reg)
	w := hooks.NewWatcher(nodeSource{ctl.node}, runner.Fire, longest+takeoverSlack, log)
	return func(ctx context.Context) {
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); runner.Run(ctx) }()
		go func() { defer wg.Done(); w.Run(ctx) }()
		wg.Wait()
	}
}

// nodeSource is the Raft node as hooks.Source.
type nodeSource struct{ *raftfsm.Node }

func (n nodeSource) Changed() <-chan struct{} { return n.FSM().Changed() }
