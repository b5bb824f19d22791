// Command routerctl is the operator's CLI for a routerd admin API.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dbrouter/dbrouter/admin"
)

const usage = `usage: routerctl [--admin ADDR] COMMAND [-o json]

Commands:
  status    clusters, their primary and members (role, health, lag, RTT, GTID, connections)

Flags:
  --admin ADDR   routerd admin API (default 127.0.0.1:7080)
  -o FORMAT      output: table (default) or json
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("routerctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	adminAddr := fs.String("admin", "127.0.0.1:7080", "admin API address")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, rest := fs.Arg(0), fs.Args()[1:]
	switch cmd {
	case "status":
		sfs := flag.NewFlagSet("status", flag.ContinueOnError)
		sfs.SetOutput(stderr)
		sfs.Usage = func() { fmt.Fprint(stderr, usage) }
		out := sfs.String("o", "table", "output format: table or json")
		if err := sfs.Parse(rest); err != nil {
			return 2
		}
		if sfs.NArg() > 0 {
			fmt.Fprintf(stderr, "routerctl status: unexpected argument %q\n", sfs.Arg(0))
			return 2
		}
		if *out != "table" && *out != "json" {
			fmt.Fprintf(stderr, "routerctl status: -o %q: want table or json\n", *out)
			return 2
		}
		return status(*adminAddr, *out, stdout, stderr)
	default:
		fmt.Fprintf(stderr, "routerctl: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
}

func status(addr, format string, stdout, stderr io.Writer) int {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/status", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		var ue interface{ Unwrap() error }
		if errors.As(err, &ue) {
			err = ue.Unwrap()
		}
		fmt.Fprintf(stderr, "routerctl: admin API at %s: %v\n", addr, err)
		return 1
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil || resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "routerctl: admin API at %s: %s %v\n", addr, resp.Status, err)
		return 1
	}
	if format == "json" {
		_, _ = stdout.Write(body)
		return 0
	}
	var st admin.Status
	if err := json.Unmarshal(body, &st); err != nil {
		fmt.Fprintf(stderr, "routerctl: admin API at %s returned invalid JSON: %v\n", addr, err)
		return 1
	}
	printStatus(stdout, st)
	return 0
}

func printStatus(w io.Writer, st admin.Status) {
	for i, c := range st.Clusters {
		if i > 0 {
			fmt.Fprintln(w)
		}
		primary := c.Primary
		if primary == "" {
			primary = "NONE"
		}
		fmt.Fprintf(w, "cluster %s (%s) listen %s  primary %s  phase %s  clients %d\n", c.Name, c.Kind, c.Listen, primary, c.Phase, c.Sessions)
		if len(c.Conflict) > 0 {
			fmt.Fprintf(w, "  CONFLICT: writable members %s; writes refused\n", strings.Join(c.Conflict, ", "))
		}
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  MEMBER\tADDR\tROLE\tHEALTHY\tLAG_MS\tRTT_MS\tGTID\tCONNS\tNOTE")
		for _, m := range c.Members {
			lag := "-"
			if m.LagMs >= 0 {
				lag = fmt.Sprint(m.LagMs)
			}
			note := m.Error
			if m.SemiSync != "" {
				note = strings.TrimSpace("semi-sync " + m.SemiSync + " " + note)
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%v\t%s\t%.2f\t%s\t%d/%d\t%s\n", m.Name, m.Addr, m.Role, m.Healthy, lag, m.RTTMs, m.GTIDCurrentPos, m.ConnsOpen, m.ConnsIdle, note)
		}
		tw.Flush()
	}
}
