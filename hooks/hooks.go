// Package hooks runs the operator's hooks on control-plane decisions: a
// command (argv, the decision as JSON on stdin and in DBROUTER_* variables)
// or a webhook (the JSON POSTed to a URL), each bounded by its timeout.
//
// Hooks notify; they are never a step of a decision. Fire only puts the
// event on each hook's bounded queue and returns, dropping it (logged and
// counted) when the queue is full, so neither the FSM nor an arbiter ever
// waits for a hook, however slow or hung it is. Each hook has its own queue
// and worker, so a hung hook delays only its own later events, never the
// other hooks', and one hook sees events in the order they were decided.
//
// Watcher (watch.go) decides which node fires which decision: the Raft
// leader, once per decision, with the at-least-once rule around leader
// changes described there.
package hooks

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// The kinds of event a hook can be run on (config.HookKinds lists the
// same). Kinds not named after a decision of the replicated state are the
// refinements of its "member" decisions (see memberKind).
const (
	KindBootstrap         = "bootstrap"
	KindFailoverBegin     = "failover_begin"
	KindFailoverDone      = "failover_done"
	KindSwitchoverBegin   = "switchover_begin"
	KindSwitchoverDone    = "switchover_done"
	KindSwitchoverAborted = "switchover_aborted"
	KindMemberFenced      = "member_fenced"
	KindMemberErrant      = "member_errant"
	KindMemberRejoined    = "member_rejoined"
	KindMemberMaintenance = "member_maintenance"
	KindMember            = "member"
	KindNote              = "note"
)

// Kinds lists every kind an Event can have.
var Kinds = []string{KindBootstrap, KindFailoverBegin, KindFailoverDone, KindSwitchoverBegin, KindSwitchoverDone, KindSwitchoverAborted,
	KindMemberFenced, KindMemberErrant, KindMemberRejoined, KindMemberMaintenance, KindMember, KindNote}

// QueueLen bounds each hook's queue of events waiting to run.
const QueueLen = 64

// Results label dbrouter_hook_runs_total.
const (
	ResultOK      = "ok"
	ResultFailed  = "failed"
	ResultTimeout = "timeout"
	ResultDropped = "dropped"
)

// Hook is one configured hook: Command or URL.
type Hook struct {
	Name    string
	Command []string
	URL     string
	Headers map[string]string
	// On lists the kinds that run it; empty: all.
	On      []string
	Timeout time.Duration
}

// Event is one decision as a hook receives it (the JSON payload). Every
// field is always present, so a script can read it without checking.
type Event struct {
	// ID is the same on every node for the same decision (cluster/seq): a
	// receiver that must act once drops an ID it has seen (see Resent).
	ID      string `json:"id"`
	Cluster string `json:"cluster"`
	// Seq numbers the cluster's decisions from 1, in the order decided.
	Seq    uint64    `json:"seq"`
	Epoch  uint64    `json:"epoch"`
	Kind   string    `json:"kind"`
	From   string    `json:"from"`
	To     string    `json:"to"`
	Member string    `json:"member"`
	Reason string    `json:"reason"`
	At     time.Time `json:"at"`
	// Node is the arbiter that ran the hook.
	Node string `json:"node"`
	// Resent: a leader that took over runs it for a decision recorded
	// before, which the previous leader may have run already.
	Resent bool `json:"resent"`
}

// env is the event as environment variables for a command.
func (e Event) env() []string {
	return []string{"DBROUTER_ID=" + e.ID, "DBROUTER_CLUSTER=" + e.Cluster, "DBROUTER_SEQ=" + strconv.FormatUint(e.Seq, 10),
		"DBROUTER_EPOCH=" + strconv.FormatUint(e.Epoch, 10), "DBROUTER_KIND=" + e.Kind, "DBROUTER_FROM=" + e.From, "DBROUTER_TO=" + e.To,
		"DBROUTER_MEMBER=" + e.Member, "DBROUTER_REASON=" + e.Reason, "DBROUTER_AT=" + e.At.UTC().Format(time.RFC3339Nano),
		"DBROUTER_NODE=" + e.Node, "DBROUTER_RESENT=" + strconv.FormatBool(e.Resent)}
}

// Runner owns the hooks' queues and workers.
type Runner struct {
	node  string
	log   *zap.Logger
	hooks []*hook
	runs  *prometheus.CounterVec
	http  *http.Client
}

type hook struct {
	Hook
	queue chan Event
}

// New returns a Runner for hooks run on node (the Event's Node). reg may
// be nil.
func New(node string, hooks []Hook, log *zap.Logger, reg prometheus.Registerer) *Runner {
	r := &Runner{node: node, log: log.Named("hooks"),
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dbrouter_hook_runs_total",
			Help: "Hook runs on this node by result: ok, failed, timeout (killed at its timeout), dropped (its queue was full)."}, []string{"hook", "result"}),
		// Its own transport, so a stop can close its idle connections.
		http: &http.Client{Transport: &http.Transport{Proxy: http.ProxyFromEnvironment}}}
	for _, h := range hooks {
		r.hooks = append(r.hooks, &hook{Hook: h, queue: make(chan Event, QueueLen)})
		for _, res := range []string{ResultOK, ResultFailed, ResultTimeout, ResultDropped} {
			r.runs.WithLabelValues(h.Name, res)
		}
	}
	if reg != nil {
		reg.MustRegister(r.runs)
	}
	return r
}

// Fire queues e for every hook that runs on its kind and returns at once.
func (r *Runner) Fire(e Event) {
	e.Node = r.node
	for _, h := range r.hooks {
		if len(h.On) > 0 && !slices.Contains(h.On, e.Kind) {
			continue
		}
		select {
		case h.queue <- e:
		default:
			r.runs.WithLabelValues(h.Name, ResultDropped).Inc()
			r.log.Warn("hook queue full: event dropped", zap.String("hook", h.Name), zap.String("id", e.ID), zap.String("kind", e.Kind),
				zap.Int("queue", QueueLen))
		}
	}
}

// Run runs the hooks' workers until ctx ends. A hook running then is
// killed; events still queued are not run.
func (r *Runner) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, h := range r.hooks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-ctx.Done():
					if n := len(h.queue); n > 0 {
						r.log.Warn("stopping: queued hook runs abandoned", zap.String("hook", h.Name), zap.Int("events", n))
					}
					return
				case e := <-h.queue:
					r.run(ctx, h, e)
				}
			}
		}()
	}
	wg.Wait()
	r.http.CloseIdleConnections()
}

func (r *Runner) run(ctx context.Context, h *hook, e Event) {
	payload, err := json.Marshal(e)
	if err != nil {
		// An Event of strings, numbers and a time always marshals.
		panic(fmt.Sprintf("hooks: marshal event: %v", err))
	}
	tctx, cancel := context.WithTimeout(ctx, h.Timeout)
	defer cancel()
	start := time.Now()
	if len(h.Command) > 0 {
		err = runCommand(tctx, h.Command, payload, e.env())
	} else {
		err = r.post(tctx, h, payload)
	}
	res := ResultOK
	switch {
	case err == nil:
	case errors.Is(tctx.Err(), context.DeadlineExceeded) && ctx.Err() == nil:
		res = ResultTimeout
		err = fmt.Errorf("killed after its timeout %s: %w", h.Timeout, err)
	default:
		res = ResultFailed
	}
	r.runs.WithLabelValues(h.Name, res).Inc()
	fields := []zap.Field{zap.String("hook", h.Name), zap.String("id", e.ID), zap.String("kind", e.Kind), zap.Duration("took", time.Since(start))}
	switch {
	case err != nil && ctx.Err() != nil:
		r.log.Warn("hook killed: stopping", append(fields, zap.Error(err))...)
		return
	case err != nil:
		r.log.Warn("hook "+res, append(fields, zap.Error(err))...)
		return
	}
	r.log.Info("hook ran", fields...)
}

// outputLimit bounds what a failing command's output adds to the log.
const outputLimit = 2048

// runCommand runs argv in a process group of its own, so that the timeout
// kills what it started too (a shell's children would otherwise live on
// and hold its output open).
func runCommand(ctx context.Context, argv []string, payload []byte, env []string) error {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdin = bytes.NewReader(payload)
	cmd.Env = append(os.Environ(), env...)
	var out tail
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	// A background child that escaped the group could hold the output
	// pipe open: stop waiting for it shortly after the command exits.
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	if errors.Is(err, exec.ErrWaitDelay) && cmd.ProcessState != nil && cmd.ProcessState.Success() {
		return nil
	}
	if err != nil {
		if s := bytes.TrimSpace(out.b); len(s) > 0 {
			return fmt.Errorf("%s: %w; output: %s", argv[0], err, s)
		}
		return fmt.Errorf("%s: %w", argv[0], err)
	}
	return nil
}

func (r *Runner) post(ctx context.Context, h *hook, payload []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.URL, bytes.NewReader(payload))
	if err != nil {
		return fmt.Errorf("webhook: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "dbrouter-hooks")
	for k, v := range h.Headers {
		req.Header.Set(k, v)
	}
	resp, err := r.http.Do(req)
	if err != nil {
		// Never log the URL: a webhook's URL often holds its token.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("webhook: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, outputLimit))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("webhook: %s: %s", resp.Status, bytes.TrimSpace(body))
	}
	return nil
}

// tail keeps the last outputLimit bytes written to it.
type tail struct {
	mu sync.Mutex
	b  []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if over := len(t.b) - outputLimit; over > 0 {
		t.b = t.b[over:]
	}
	return len(p), nil
}
