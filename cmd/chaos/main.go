// Command chaos measures what docs/guarantees.md promises, on a real
// deployment with default settings: the time until writes through a proxy
// succeed again after kill -9 of the primary, and the client errors and
// longest write pause of a planned switchover under load. Each run starts a
// fresh deployment (chaos/deploy) and checks the invariants as it goes.
// The Mongo rows do the same for a simulated replica set: under the
// control plane (mongocp.go: kill -9, SIGSTOP, the primary cut off from the
// arbiters, a switchover under load, on a deployment whose arbiters
// decide), and through the Mongo proxy alone, the set's own elections
// deciding (mongo.go). `-only mongo -out FILE` replaces only the Mongo
// part of FILE (and `-only mariadb` only the MariaDB part).
package main

import (
	"context"
	"database/sql"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/dbrouter/dbrouter/admin"
	"github.com/dbrouter/dbrouter/chaos/deploy"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("chaos", flag.ContinueOnError)
	fs.SetOutput(stderr)
	runs := fs.Int("runs", 5, "runs per scenario")
	out := fs.String("out", "", "also write the report (markdown) to this file")
	pause := fs.Duration("pause", 20*time.Second, "how long the MariaDB hung-primary scenario keeps the primary SIGSTOPped")
	only := fs.String("only", "all", "which scenarios: all, mariadb or mongo")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 || *runs < 1 || *runs > 50 || *pause < 5*time.Second || *pause > 5*time.Minute ||
		*only != "all" && *only != "mariadb" && *only != "mongo" {
		fmt.Fprintln(stderr, "usage: chaos [-runs N (1-50)] [-pause D (5s-5m)] [-only all|mariadb|mongo] [-out FILE]")
		return 2
	}
	report := ""
	if *only != "mongo" {
		rep, code := runMariaDB(*runs, *pause, stdout, stderr)
		if code != 0 {
			return code
		}
		report += rep
	}
	if *only != "mariadb" {
		rep, code := runMongo(*runs, stdout, stderr)
		if code != 0 {
			return code
		}
		if report != "" {
			report += "\n"
		}
		report += rep
	}
	fmt.Fprint(stdout, "\n"+report)
	if *out != "" {
		// A run of one database's scenarios keeps the other's section of
		// the file.
		if old, err := os.ReadFile(*out); err == nil && *only != "all" {
			report = splice(string(old), report, *only)
		} else if err != nil && !os.IsNotExist(err) {
			fmt.Fprintf(stderr, "chaos: %v\n", err)
			return 1
		}
		if err := os.WriteFile(*out, []byte(report), 0o644); err != nil {
			fmt.Fprintf(stderr, "chaos: %v\n", err)
			return 1
		}
	}
	return 0
}

// splice replaces the section of report old that a run of only
// (mariadb or mongo) made with rep and keeps the other: the Mongo section
// begins at the first "## MongoDB" heading.
func splice(old, rep, only string) string {
	maria, mongo := old, ""
	if strings.HasPrefix(old, "## MongoDB") {
		maria, mongo = "", old
	} else if i := strings.Index(old, "\n## MongoDB"); i >= 0 {
		maria, mongo = old[:i+1], old[i+1:]
	}
	if only == "mongo" {
		if strings.TrimSpace(maria) == "" {
			return rep
		}
		return strings.TrimRight(maria, "\n") + "\n\n" + rep
	}
	if strings.TrimSpace(mongo) == "" {
		return rep
	}
	return strings.TrimRight(rep, "\n") + "\n\n" + mongo
}

// runMongo runs the Mongo scenarios, under the control plane and then
// without it, and returns their report.
func runMongo(runs int, stdout, stderr io.Writer) (string, int) {
	var cp [5][]cpResult
	for k, sc := range []struct {
		name string
		f    func() (cpResult, error)
	}{{"mongo no fault", cpBaseline}, {"mongo kill -9", cpKill}, {"mongo SIGSTOP", cpHung}, {"mongo cut from arbiters", cpCut}, {"mongo switchover", cpSwitchover}} {
		for i := 0; i < runs; i++ {
			x, err := sc.f()
			if err != nil {
				fmt.Fprintf(stderr, "chaos: %s run %d: %v\n", sc.name, i+1, err)
				return "", 1
			}
			fmt.Fprintf(stdout, "%s run %d: writes again after %s, new epoch after %s (%d begun), longest write pause %s, slowest write %s, %d client errors, %d acknowledged, 0 lost",
				sc.name, i+1, x.resume.Round(time.Millisecond), x.took.Round(time.Millisecond), x.epochs, x.pause.Round(time.Millisecond), x.slowest.Round(time.Millisecond), len(x.errors), x.acked)
			if x.veto > 0 {
				fmt.Fprintf(stdout, ", step-up vetoed after %s", x.veto.Round(time.Millisecond))
			}
			if x.rolledBack != "" {
				fmt.Fprintf(stdout, ", promote rolled back: %s", x.rolledBack)
			}
			if k == 2 {
				fmt.Fprintf(stdout, ", %d held through the freeze, %d only on the old primary (unacknowledged)", x.heldThrough, x.extra)
			}
			fmt.Fprintln(stdout)
			for _, e := range x.errors[:min(3, len(x.errors))] {
				fmt.Fprintf(stdout, "  client error: %s\n", e)
			}
			cp[k] = append(cp[k], x)
		}
	}
	var kill, hung, step []mongoResult
	for _, sc := range []struct {
		name string
		f    func() (mongoResult, error)
		into *[]mongoResult
	}{{"mongo kill -9", mongoKill, &kill}, {"mongo SIGSTOP", mongoHung, &hung}, {"mongo stepDown", mongoStepDown, &step}} {
		for i := 0; i < runs; i++ {
			x, err := sc.f()
			if err != nil {
				fmt.Fprintf(stderr, "chaos: %s run %d: %v\n", sc.name, i+1, err)
				return "", 1
			}
			fmt.Fprintf(stdout, "%s run %d: writes again after %s, longest write pause %s, slowest write %s, %d client errors, %d acknowledged, 0 lost\n",
				sc.name, i+1, x.resume.Round(time.Millisecond), x.pause.Round(time.Millisecond), x.slowest.Round(time.Millisecond), len(x.errors), x.acked)
			for _, e := range x.errors[:min(3, len(x.errors))] {
				fmt.Fprintf(stdout, "  client error: %s\n", e)
			}
			*sc.into = append(*sc.into, x)
		}
	}
	return renderMongoCP(runs, cp[0], cp[1], cp[2], cp[3], cp[4]) + "\n" + renderMongo(runs, kill, hung, step), 0
}

// runMariaDB runs the MariaDB scenarios and returns their report.
func runMariaDB(runs int, pause time.Duration, stdout, stderr io.Writer) (string, int) {
	var failovers, switchovers, hungs []result
	for i := 0; i < runs; i++ {
		r, err := hung(pause)
		if err != nil {
			fmt.Fprintf(stderr, "chaos: hung-primary run %d: %v\n", i+1, err)
			return "", 1
		}
		fmt.Fprintf(stdout, "hung-primary run %d: failover after %s, writes resumed after %s, %d statements left on the old primary, %d rows only on the old primary (errant: %v), %d client errors, %d acknowledged, 0 lost\n",
			i+1, r.took.Round(time.Millisecond), r.resume.Round(time.Millisecond), r.waiting, r.extra, r.errant, r.errors, r.acked)
		hungs = append(hungs, r)
	}
	for i := 0; i < runs; i++ {
		r, err := failover()
		if err != nil {
			fmt.Fprintf(stderr, "chaos: failover run %d: %v\n", i+1, err)
			return "", 1
		}
		fmt.Fprintf(stdout, "failover run %d: writes resumed after %s, %d client errors (in flight at the kill), %d acknowledged, 0 lost\n", i+1, r.resume.Round(time.Millisecond), r.errors, r.acked)
		failovers = append(failovers, r)
	}
	for i := 0; i < runs; i++ {
		r, err := switchover()
		if err != nil {
			fmt.Fprintf(stderr, "chaos: switchover run %d: %v\n", i+1, err)
			return "", 1
		}
		fmt.Fprintf(stdout, "switchover run %d: took %s, longest write pause %s, %d client errors, %d acknowledged, 0 lost\n", i+1, r.took.Round(time.Millisecond), r.pause.Round(time.Millisecond), r.errors, r.acked)
		switchovers = append(switchovers, r)
	}
	return render(runs, pause, failovers, switchovers, hungs), 0
}

type result struct {
	resume, took, pause time.Duration
	errors, acked       int
	// hung primary: statements still waiting on the old primary after the
	// failover, rows only the old primary has, and whether it shows errant.
	waiting, extra int
	errant         bool
}

func start(ctx context.Context, proxies int) (*deploy.Deployment, error) {
	return deploy.Start(ctx, deploy.Options{Proxies: proxies})
}

// failover: kill -9 the primary under autocommit write load through one
// proxy; measure until the first write acknowledged after the kill; check
// that every acknowledged write is on the new primary and that only one
// member is writable.
func failover() (result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	d, err := start(ctx, 1)
	if err != nil {
		return result{}, err
	}
	defer d.Close()
	db, err := d.ProxyDB(0)
	if err != nil {
		return result{}, err
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, "CREATE TABLE acked (id INT PRIMARY KEY)"); err != nil {
		return result{}, err
	}
	w := deploy.StartWriter(ctx, db, "acked", 1, false)
	if err := waitFor(ctx, 20*time.Second, func() bool { return w.Acked() >= 200 }); err != nil {
		return result{}, fmt.Errorf("writes did not start: %w", err)
	}
	killed := time.Now()
	if err := d.Member("db1").Kill(); err != nil {
		return result{}, err
	}
	before := w.Acked()
	if err := waitFor(ctx, 60*time.Second, func() bool { return w.Acked() > before+100 }); err != nil {
		return result{}, fmt.Errorf("writes did not resume: %w", err)
	}
	acked, times, errs := w.Finish()
	r := result{resume: deploy.FirstAfter(times[before:], killed).Sub(killed), errors: len(errs), acked: len(acked)}
	return r, check(ctx, d, "acked", acked)
}

// switchover: promote db2 under autocommit load through one proxy and
// transactional load through another; measure errors and the longest gap
// between acknowledgements.
func switchover() (result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	d, err := start(ctx, 2)
	if err != nil {
		return result{}, err
	}
	defer d.Close()
	db1, err := d.ProxyDB(0)
	if err != nil {
		return result{}, err
	}
	defer db1.Close()
	db2, err := d.ProxyDB(1)
	if err != nil {
		return result{}, err
	}
	defer db2.Close()
	if err := createTables(ctx, db1, "auto", "txn"); err != nil {
		return result{}, err
	}
	if err := d.WaitHealthyOnLeader(ctx, "db2", 30*time.Second); err != nil {
		return result{}, err
	}
	wa := deploy.StartWriter(ctx, db1, "auto", 1, false)
	wt := deploy.StartWriter(ctx, db2, "txn", 1, true)
	if err := waitFor(ctx, 20*time.Second, func() bool { return wa.Acked() > 200 && wt.Acked() > 100 }); err != nil {
		return result{}, fmt.Errorf("writes did not start: %w", err)
	}
	begin := time.Now()
	if err := d.Promote(ctx, 0, "db2", 30*time.Second); err != nil {
		return result{}, fmt.Errorf("promote: %w", err)
	}
	took := time.Since(begin)
	n := wa.Acked()
	if err := waitFor(ctx, 20*time.Second, func() bool { return wa.Acked() > n+200 }); err != nil {
		return result{}, fmt.Errorf("writes did not continue: %w", err)
	}
	ackA, timesA, errsA := wa.Finish()
	ackT, timesT, errsT := wt.Finish()
	r := result{took: took, pause: max(deploy.LongestPause(timesA), deploy.LongestPause(timesT)), errors: len(errsA) + len(errsT), acked: len(ackA) + len(ackT)}
	if err := check(ctx, d, "auto", ackA); err != nil {
		return r, err
	}
	if r.errors > 0 {
		return r, fmt.Errorf("client errors during the switchover: %s", strings.Join(append(errsA, errsT...), "; "))
	}
	return r, check(ctx, d, "txn", ackT)
}

// hung: SIGSTOP the primary for pause under autocommit and transactional
// write load through one proxy, then SIGCONT. Measured: how long until the
// failover committed and until both writers had a write acknowledged again,
// how many statements the proxy still had waiting on the old primary after
// the failover (target 0: they end at the failover, outcome unknown), and,
// once the old primary is back, the rows it has that the new primary lacks:
// allowed only for writes whose clients got an error, and then it must show
// as errant (fenced, never rejoined). No acknowledged write may be lost.
func hung(pause time.Duration) (result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute+pause)
	defer cancel()
	d, err := start(ctx, 1)
	if err != nil {
		return result{}, err
	}
	defer d.Close()
	db, err := d.ProxyDB(0)
	if err != nil {
		return result{}, err
	}
	defer db.Close()
	if err := createTables(ctx, db, "auto", "txn"); err != nil {
		return result{}, err
	}
	wa := deploy.StartWriter(ctx, db, "auto", 1, false)
	wt := deploy.StartWriter(ctx, db, "txn", 1, true)
	if err := waitFor(ctx, 20*time.Second, func() bool { return wa.Acked() > 200 && wt.Acked() > 100 }); err != nil {
		return result{}, fmt.Errorf("writes did not start: %w", err)
	}
	old := d.Member("db1")
	beforeA, beforeT := wa.Acked(), wt.Acked()
	paused := time.Now()
	if err := old.Pause(); err != nil {
		return result{}, err
	}
	resumed := false
	defer func() {
		if !resumed {
			_ = old.Resume()
		}
	}()
	var primary string
	if err := waitFor(ctx, 30*time.Second, func() bool {
		st := d.Statuses()
		if len(st) == 0 || len(st[0].Clusters) == 0 {
			return false
		}
		c := st[0].Clusters[0]
		primary = c.Primary
		return c.Epoch >= 2 && c.Phase == "serving" && c.Primary != "db1"
	}); err != nil {
		return result{}, fmt.Errorf("no failover away from the hung primary: %w", err)
	}
	r := result{took: time.Since(paused)}
	if h, err := d.History(ctx, 0); err == nil && os.Getenv("CHAOS_HISTORY") != "" {
		for _, e := range h {
			fmt.Fprintf(os.Stderr, "  history %s %s %s\n", e.At.Sub(paused).Round(time.Millisecond), e.Kind, e.Reason)
		}
	}
	// Statements still waiting on the old primary, for a second after the
	// failover (the worst sample).
	for end := time.Now().Add(time.Second); time.Now().Before(end); {
		v, err := d.Metric(ctx, len(d.Arbiters), "dbrouter_backend_inflight", map[string]string{"member": "db1"})
		if err != nil {
			return r, err
		}
		r.waiting = max(r.waiting, int(v))
		time.Sleep(50 * time.Millisecond)
	}
	if err := waitFor(ctx, 30*time.Second, func() bool { return wa.Acked() > beforeA+50 && wt.Acked() > beforeT+20 }); err != nil {
		return r, fmt.Errorf("writes did not resume: %w", err)
	}
	if rest := time.Until(paused.Add(pause)); rest > 0 {
		time.Sleep(rest)
	}
	if err := old.Resume(); err != nil {
		return r, err
	}
	resumed = true
	// The old primary comes back: fenced as errant, or rejoined clean.
	var member admin.MemberStatus
	if err := waitFor(ctx, 60*time.Second, func() bool {
		for _, m := range d.Statuses()[0].Clusters[0].Members {
			if m.Name == "db1" {
				member = m
				return m.Reachable && m.ReadOnly && (m.Errant != "" || !m.Fenced && m.IORunning)
			}
		}
		return false
	}); err != nil {
		return r, fmt.Errorf("old primary neither rejoined nor reported errant: %+v: %w", member, err)
	}
	r.errant = member.Errant != ""
	ackA, timesA, errsA := wa.Finish()
	ackT, timesT, errsT := wt.Finish()
	r.acked, r.errors = len(ackA)+len(ackT), len(errsA)+len(errsT)
	// Writes that completed in the moment between the clock read and the
	// signal taking effect are not "writes again": count from 20 ms after.
	frozen := paused.Add(20 * time.Millisecond)
	ra, rt := deploy.FirstAfter(timesA[beforeA:], frozen), deploy.FirstAfter(timesT[beforeT:], frozen)
	if ra.IsZero() || rt.IsZero() {
		return r, fmt.Errorf("a writer never wrote again after the pause")
	}
	r.resume = max(ra.Sub(paused), rt.Sub(paused))
	for _, t := range []struct {
		name   string
		failed []int
	}{{"auto", wa.Failed()}, {"txn", wt.Failed()}} {
		extra, err := deploy.Extra(ctx, old, d.Member(primary), t.name)
		if err != nil {
			return r, err
		}
		failed := map[int]bool{}
		for _, id := range t.failed {
			failed[id] = true
		}
		for _, id := range extra {
			if !failed[id] {
				return r, fmt.Errorf("row %d of %s is on the old primary only, and its client was told it committed", id, t.name)
			}
		}
		r.extra += len(extra)
	}
	if r.extra > 0 && !r.errant {
		return r, fmt.Errorf("the old primary has %d rows the new primary lacks but is not reported errant: %+v", r.extra, member)
	}
	for _, e := range append(errsA, errsT...) {
		if !strings.Contains(e, "9010") && !strings.Contains(e, "9011") && !strings.Contains(e, "9005") {
			return r, fmt.Errorf("a client error the docs do not promise for a failover: %s", e)
		}
	}
	if err := check(ctx, d, "auto", ackA); err != nil {
		return r, err
	}
	return r, check(ctx, d, "txn", ackT)
}

// check asserts the invariants: one writable member, the primary of the
// newest epoch, and every acknowledged write present on it.
func check(ctx context.Context, d *deploy.Deployment, table string, acked []int) error {
	st := d.Statuses()[0].Clusters[0]
	if w := d.WritableMembers(ctx); len(w) != 1 || w[0] != st.Primary {
		return fmt.Errorf("writable members %v, primary of epoch %d is %s", w, st.Epoch, st.Primary)
	}
	lost, err := deploy.Missing(ctx, d.Member(st.Primary), table, acked)
	if err != nil {
		return err
	}
	if len(lost) > 0 {
		return fmt.Errorf("%d acknowledged writes lost, e.g. %v", len(lost), lost[:min(5, len(lost))])
	}
	return nil
}

// createTables creates the workload's tables (an id primary key each).
func createTables(ctx context.Context, db *sql.DB, names ...string) error {
	for _, n := range names {
		if _, err := db.ExecContext(ctx, "CREATE TABLE "+n+" (id INT PRIMARY KEY)"); err != nil {
			return err
		}
	}
	return nil
}

func waitFor(ctx context.Context, within time.Duration, f func() bool) error {
	deadline := time.Now().Add(within)
	for !f() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %s", within)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}

func stats(ds []time.Duration) (lo, med, hi time.Duration) {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[0], s[len(s)/2], s[len(s)-1]
}

func render(runs int, hangFor time.Duration, fo, so, hu []result) string {
	var b strings.Builder
	host, _ := os.Hostname()
	fmt.Fprintf(&b, "# Failover and switchover measurements\n\nMade by `go run ./cmd/chaos -runs %d` on %s (%s), default settings (probe_interval 500ms, failure_threshold 2s, lease 2s, lease_margin 300ms, drain_timeout 5s), 3 arbiters, real mariadbd with semi-sync and MariaDB's default slave_net_timeout (60 s).\n\n", runs, time.Now().UTC().Format("2006-01-02"), host)
	var resume, pause, took []time.Duration
	errs := 0
	for _, r := range fo {
		resume = append(resume, r.resume)
	}
	for _, r := range so {
		pause = append(pause, r.pause)
		took = append(took, r.took)
		errs += r.errors
	}
	lo, med, hi := stats(resume)
	fmt.Fprintf(&b, "| measurement | min | median | max | target |\n|---|---|---|---|---|\n")
	fmt.Fprintf(&b, "| kill -9 primary → writes through the proxy succeed again | %s | %s | %s | ≤ 5 s (aim ≤ 3 s) |\n", r(lo), r(med), r(hi))
	lo, med, hi = stats(pause)
	fmt.Fprintf(&b, "| switchover: longest write pause seen by a client | %s | %s | %s | ≤ 1 s |\n", r(lo), r(med), r(hi))
	lo, med, hi = stats(took)
	fmt.Fprintf(&b, "| switchover: `promote` call duration | %s | %s | %s | |\n", r(lo), r(med), r(hi))
	var hTook, hResume []time.Duration
	waiting, extra, errant, hErrs := 0, 0, 0, 0
	for _, x := range hu {
		hTook, hResume = append(hTook, x.took), append(hResume, x.resume)
		waiting = max(waiting, x.waiting)
		extra += x.extra
		hErrs += x.errors
		if x.errant {
			errant++
		}
	}
	lo, med, hi = stats(hTook)
	fmt.Fprintf(&b, "| SIGSTOP primary %s under load → failover committed | %s | %s | %s | |\n", hangFor, r(lo), r(med), r(hi))
	lo, med, hi = stats(hResume)
	fmt.Fprintf(&b, "| SIGSTOP primary → writes (autocommit and transactions) succeed again | %s | %s | %s | ≤ 5 s (aim ≤ 3 s) |\n", r(lo), r(med), r(hi))
	fmt.Fprintf(&b, "\nSwitchover client errors over %d runs: %d (target 0). Acknowledged writes lost: 0 in every run (checked against the new primary).\n", runs, errs)
	clean := ""
	if errant < runs {
		clean = fmt.Sprintf(" (in %d it rejoined clean)", runs-errant)
	}
	fmt.Fprintf(&b, "\nHung primary (%d runs): statements left waiting on the old primary after the failover: at most %d (target 0); rows on the old primary that the new one lacks: %d in all, every one a write whose client got an error; the old primary came back reported errant (fenced, not rejoined) in %d of %d runs%s: the commits in progress when it froze, and statements already in its socket, complete when it wakes; client errors %d in all (9010 outcome unknown, 9011 transaction lost, 9005 connection lost: the statements in flight at the pause); acknowledged writes lost: 0.\n",
		runs, waiting, extra, errant, runs, clean, hErrs)
	return b.String()
}

func r(d time.Duration) string { return d.Round(10 * time.Millisecond).String() }

// durationRow writes one table row: the min, median and max of f over the
// runs' results, and the target.
func durationRow[T any](b *strings.Builder, name string, rs []T, f func(T) time.Duration, target string) {
	var ds []time.Duration
	for _, x := range rs {
		ds = append(ds, f(x))
	}
	lo, med, hi := stats(ds)
	fmt.Fprintf(b, "| %s | %s | %s | %s | %s |\n", name, r(lo), r(med), r(hi), target)
}
