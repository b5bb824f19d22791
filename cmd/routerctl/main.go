// Command routerctl is the operator's CLI for a routerd admin API.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dbrouter/dbrouter/admin"
	"github.com/dbrouter/dbrouter/raftfsm"
)

const usage = `usage: routerctl [--admin ADDR] [--secret-file FILE] [--token-file FILE] COMMAND [ARGS] [-o json]

Commands:
  status                              clusters (epoch, phase, primary), members (role, health,
                                      lag, RTT, GTID, connections), leader, term and proxies
  promote CLUSTER MEMBER [--timeout D]  planned switchover to MEMBER (default timeout 30s)
  maintenance on|off CLUSTER MEMBER   keep MEMBER out of promotions (or take it back)
  history CLUSTER                     the cluster's decisions: failovers, switchovers, rejoins
  members                             the Raft configuration: arbiters (voters) and proxies
  members add NAME RAFT_ADDR ADMIN_ADDR  make a new arbiter (started with control.join_existing)
                                      a voter of the running group
  members remove NAME                 take a node (a dead arbiter, a retired proxy) out of it

Flags:
  --admin ADDR        routerd admin API, any arbiter or proxy (default 127.0.0.1:7080)
  --secret-file FILE  the cluster secret, needed by promote, maintenance and members add/remove
                      (default: $DBROUTER_SECRET_FILE); with it, every request is signed
  --token-file FILE   the admin API's read token (admin.token), needed by status, history and
                      members when the node has one (default: $DBROUTER_TOKEN_FILE)
  -o FORMAT           output: table (default) or json
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// cli carries what every command needs.
type cli struct {
	admin      string
	secretFile string
	tokenFile  string
	stdout     io.Writer
	stderr     io.Writer
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("routerctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	c := &cli{stdout: stdout, stderr: stderr}
	fs.StringVar(&c.admin, "admin", "127.0.0.1:7080", "admin API address")
	fs.StringVar(&c.secretFile, "secret-file", os.Getenv("DBROUTER_SECRET_FILE"), "file holding the cluster secret")
	fs.StringVar(&c.tokenFile, "token-file", os.Getenv("DBROUTER_TOKEN_FILE"), "file holding the admin API's read token")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, rest := fs.Arg(0), fs.Args()[1:]
	sub := flag.NewFlagSet(cmd, flag.ContinueOnError)
	sub.SetOutput(stderr)
	sub.Usage = func() { fmt.Fprint(stderr, usage) }
	out := sub.String("o", "table", "output format: table or json")
	timeout := sub.Duration("timeout", 30*time.Second, "promote: how long the switchover may take")
	// Flags may come before or after the positional arguments.
	var pos []string
	for {
		if err := sub.Parse(rest); err != nil {
			return 2
		}
		if sub.NArg() == 0 {
			break
		}
		pos = append(pos, sub.Arg(0))
		rest = sub.Args()[1:]
	}
	if *out != "table" && *out != "json" {
		fmt.Fprintf(stderr, "routerctl %s: -o %q: want table or json\n", cmd, *out)
		return 2
	}
	want := map[string]int{"status": 0, "members": 0, "history": 1, "promote": 2, "maintenance": 3}
	n, ok := want[cmd]
	if !ok {
		fmt.Fprintf(stderr, "routerctl: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	if cmd == "members" && len(pos) > 0 {
		// members add NAME RAFT ADMIN | members remove NAME
		switch sub := map[string]int{"add": 4, "remove": 2}[pos[0]]; {
		case sub == 0:
			fmt.Fprintf(stderr, "routerctl members: %q: want add or remove\n\n%s", pos[0], usage)
			return 2
		default:
			n = sub
		}
	}
	if len(pos) != n {
		fmt.Fprintf(stderr, "routerctl %s: want %d argument(s), got %d (%s)\n\n%s", cmd, n, len(pos), strings.Join(pos, " "), usage)
		return 2
	}
	if cmd == "maintenance" && pos[0] != "on" && pos[0] != "off" {
		fmt.Fprintf(stderr, "routerctl maintenance: %q: want on or off\n", pos[0])
		return 2
	}
	if cmd == "promote" && *timeout <= 0 {
		fmt.Fprintf(stderr, "routerctl promote: --timeout must be positive\n")
		return 2
	}
	var err error
	switch cmd {
	case "status":
		err = c.status(*out)
	case "members":
		switch {
		case len(pos) == 0:
			err = c.members(*out)
		case pos[0] == "add":
			err = c.changeMembers("/v1/raft/arbiters", admin.JoinRequest{ID: pos[1], Raft: pos[2], Admin: pos[3]}, *out)
		default:
			err = c.changeMembers("/v1/raft/remove", admin.RemoveRequest{ID: pos[1]}, *out)
		}
	case "history":
		err = c.history(pos[0], *out)
	case "promote":
		err = c.promote(pos[0], pos[1], *timeout, *out)
	case "maintenance":
		err = c.maintenance(pos[1], pos[2], pos[0] == "on", *out)
	}
	if err != nil {
		fmt.Fprintf(stderr, "routerctl %s: %v\n", cmd, err)
		return 1
	}
	return 0
}

func (c *cli) client(signed bool) (*admin.Client, error) {
	cl := &admin.Client{Addr: c.admin}
	if signed && c.secretFile == "" {
		return nil, errors.New("this command needs the cluster secret: pass --secret-file FILE or set DBROUTER_SECRET_FILE")
	}
	// With the secret at hand every request is signed, which also passes
	// a node's read token check.
	if c.secretFile != "" {
		b, err := os.ReadFile(c.secretFile)
		if err != nil {
			return nil, fmt.Errorf("secret: %w", err)
		}
		cl.Secret = []byte(strings.TrimRight(string(b), "\r\n"))
	}
	if c.tokenFile != "" {
		b, err := os.ReadFile(c.tokenFile)
		if err != nil {
			return nil, fmt.Errorf("token: %w", err)
		}
		cl.Token = strings.TrimRight(string(b), "\r\n")
	}
	return cl, nil
}

// call runs one request and explains a connection failure in one line.
func (c *cli) call(ctx context.Context, signed bool, method, path string, in, out any) error {
	cl, err := c.client(signed)
	if err != nil {
		return err
	}
	err = cl.Do(ctx, method, path, in, out)
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("admin API at %s: %v", c.admin, ue.Err)
	}
	return err
}

func (c *cli) json(v any) error {
	enc := json.NewEncoder(c.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func (c *cli) status(format string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var st admin.Status
	if err := c.call(ctx, false, "GET", "/status", nil, &st); err != nil {
		return err
	}
	if format == "json" {
		return c.json(st)
	}
	printStatus(c.stdout, st)
	return nil
}

func (c *cli) members(format string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var m struct {
		Servers []raftfsm.Server `json:"servers"`
		Leader  string           `json:"leader"`
	}
	if err := c.call(ctx, false, "GET", "/v1/raft/members", nil, &m); err != nil {
		return err
	}
	if format == "json" {
		return c.json(m)
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tRAFT ADDR\tSUFFRAGE\tLEADER")
	for _, s := range m.Servers {
		suff := "nonvoter (proxy)"
		if s.Voter {
			suff = "voter (arbiter)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%v\n", s.ID, s.Addr, suff, s.Leader)
	}
	return tw.Flush()
}

// changeMembers adds or removes a node through the leader.
func (c *cli) changeMembers(path string, req any, format string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var ans map[string]string
	if err := c.call(ctx, true, "POST", path, req, &ans); err != nil {
		return err
	}
	if format == "json" {
		return c.json(ans)
	}
	for k, v := range ans {
		fmt.Fprintf(c.stdout, "%s %s\n", k, v)
	}
	return c.members("table")
}

func (c *cli) history(cluster, format string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var h struct {
		Cluster string             `json:"cluster"`
		Epoch   uint64             `json:"epoch"`
		History []raftfsm.Decision `json:"history"`
	}
	if err := c.call(ctx, false, "GET", "/v1/clusters/"+url.PathEscape(cluster)+"/history", nil, &h); err != nil {
		return err
	}
	if format == "json" {
		return c.json(h)
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tEPOCH\tDECISION\tFROM\tTO\tMEMBER\tREASON")
	for _, d := range h.History {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\n", d.At.Local().Format("2006-01-02 15:04:05.000"), d.Epoch, d.Kind, dash(d.From), dash(d.To), dash(d.Member), d.Reason)
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func (c *cli) promote(cluster, member string, timeout time.Duration, format string) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout+10*time.Second)
	defer cancel()
	start := time.Now()
	var ans map[string]string
	if err := c.call(ctx, true, "POST", "/v1/clusters/"+url.PathEscape(cluster)+"/promote",
		admin.PromoteRequest{Member: member, Timeout: timeout.String()}, &ans); err != nil {
		return err
	}
	if format == "json" {
		return c.json(map[string]any{"cluster": cluster, "primary": member, "took_ms": time.Since(start).Milliseconds()})
	}
	fmt.Fprintf(c.stdout, "%s: %s is the primary (switchover took %s)\n", cluster, member, time.Since(start).Round(time.Millisecond))
	return nil
}

func (c *cli) maintenance(cluster, member string, on bool, format string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := c.call(ctx, true, "POST", "/v1/clusters/"+url.PathEscape(cluster)+"/maintenance",
		admin.MaintenanceRequest{Member: member, On: on}, nil); err != nil {
		return err
	}
	if format == "json" {
		return c.json(map[string]any{"cluster": cluster, "member": member, "maintenance": on})
	}
	state := "off"
	if on {
		state = "on"
	}
	fmt.Fprintf(c.stdout, "%s: maintenance %s for %s\n", cluster, state, member)
	return nil
}

func printStatus(w io.Writer, st admin.Status) {
	if ct := st.Control; ct != nil {
		leader := ct.Leader
		if leader == "" {
			leader = "NONE (no quorum?)"
		}
		fmt.Fprintf(w, "node %s (%s)  leader %s  term %d  applied %d", ct.Node, ct.Role, leader, ct.Term, ct.Applied)
		if ct.Role == "proxy" {
			fmt.Fprintf(w, "  write lease %v (age %dms)", ct.LeaseOK, ct.LeaseAgeMs)
		}
		fmt.Fprintln(w)
		if ct.Incompatible != "" {
			fmt.Fprintf(w, "  INCOMPATIBLE: %s\n", ct.Incompatible)
		}
		for _, p := range ct.Proxies {
			age := "?"
			if p.LeaseAgeMs >= 0 {
				age = fmt.Sprintf("%dms", p.LeaseAgeMs)
			}
			fmt.Fprintf(w, "  proxy %s site %s admin %s lease age %s\n", p.ID, dash(p.Site), dash(p.Admin), age)
		}
		fmt.Fprintln(w)
	}
	for i, c := range st.Clusters {
		if i > 0 {
			fmt.Fprintln(w)
		}
		primary := c.Primary
		if primary == "" {
			primary = "NONE"
		}
		fmt.Fprintf(w, "cluster %s (%s) listen %s  epoch %d  phase %s  primary %s  clients %d\n", c.Name, c.Kind, dash(c.Listen), c.Epoch, c.Phase, primary, c.Sessions)
		if c.SemiSync != "" && c.SemiSync != "on" {
			fmt.Fprintf(w, "  WARNING: semi-sync %s: writes acknowledged now may be lost in a failover\n", c.SemiSync)
		}
		for _, wr := range c.Warnings {
			fmt.Fprintf(w, "  WARNING: %s\n", wr.Message)
		}
		if len(c.Conflict) > 0 {
			fmt.Fprintf(w, "  CONFLICT: writable members %s\n", strings.Join(c.Conflict, ", "))
		}
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		posTitle := "GTID"
		if c.Kind == "mongodb" {
			posTitle = "OPTIME"
		}
		fmt.Fprintf(tw, "  MEMBER\tADDR\tROLE\tHEALTHY\tLAG_MS\tRTT_MS\t%s\tCONNS\tNOTE\n", posTitle)
		for _, m := range c.Members {
			lag := "-"
			if m.LagMs >= 0 {
				lag = fmt.Sprint(m.LagMs)
			}
			var notes []string
			if m.Maintenance {
				notes = append(notes, "maintenance")
			}
			if m.Fenced {
				notes = append(notes, "fenced")
			}
			if m.Errant != "" {
				notes = append(notes, "errant transactions "+m.Errant)
			}
			if m.SemiSync != "" {
				notes = append(notes, "semi-sync "+m.SemiSync)
			}
			if m.Error != "" {
				notes = append(notes, m.Error)
			}
			pos := m.GTIDCurrentPos
			if m.Position != "" {
				pos = m.Position
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%v\t%s\t%.2f\t%s\t%d/%d\t%s\n", m.Name, m.Addr, m.Role, m.Healthy, lag, m.RTTMs, pos, m.ConnsOpen, m.ConnsIdle, strings.Join(notes, "; "))
		}
		tw.Flush()
	}
}
