package daemon_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/dbrouter/dbrouter/chaos"
	"github.com/dbrouter/dbrouter/chaos/deploy"
)

// The dashboard in docs/ is read by operators' Grafanas, which show an
// empty panel, not an error, for a metric that does not exist: these tests
// are what notices a renamed metric or a typo.
const dashboardPath = "../docs/grafana-dashboard.json"

// TestGrafanaDashboardIsWellFormed checks the dashboard's shape without a
// deployment: valid JSON, the datasource, cluster and instance variables,
// and every panel querying that datasource with at least one expression
// that names a metric and uses only variables the dashboard defines.
func TestGrafanaDashboardIsWellFormed(t *testing.T) {
	b, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range dashboardProblems(b) {
		t.Error(p)
	}
}

// TestGrafanaDashboardNamesOnlyExportedMetrics scrapes a real deployment's
// routerds (an arbiter and a proxy, after statements and a switchover, so
// that every family has a sample: client_golang leaves out a family
// without one) and checks every metric the dashboard names against what
// they export: the name (a histogram's _bucket/_sum/_count resolved to
// it), the labels its selectors, groupings and legends use, the values its
// equality matchers expect, and rate/increase only over counters and
// histograms. Every name must also be in docs/admin.md's table.
func TestGrafanaDashboardNamesOnlyExportedMetrics(t *testing.T) {
	b, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	exprs, err := dashboardExprs(b)
	if err != nil {
		t.Fatal(err)
	}
	d := start(t, deploy.Options{Proxies: 1})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db := proxyDB(t, d, 0)
	// A write and reads through the proxy: the samples are then counts of
	// real traffic (the families exist without it).
	exec(t, db, "CREATE TABLE IF NOT EXISTS app.dash (id INT PRIMARY KEY)", "INSERT INTO app.dash VALUES (1)", "SELECT * FROM app.dash")
	// The arbiters restart the replicas' replication once to shorten their
	// heartbeat period; a switchover refuses a target while it does not
	// replicate, or before the leader has measured its lag.
	waitHeartbeatsShortened(t, d)
	if err := d.WaitHealthyOnLeader(ctx, "db2", 20*time.Second); err != nil {
		t.Fatal(err)
	}
	poll(t, 20*time.Second, "promote db2", func() bool {
		err = d.Promote(ctx, 0, "db2", 30*time.Second)
		return err == nil || !strings.Contains(err.Error(), "is not replicating") && !strings.Contains(err.Error(), "retry in a moment")
	})
	if err != nil {
		t.Fatalf("promote: %v", err)
	}
	exported := exportedFamilies{}
	for _, n := range []*deploy.Node{d.Arbiters[0], d.Proxies[0]} {
		// A node applies the switchover's last entry (and with it the
		// change's duration) by itself: poll.
		var fams exportedFamilies
		if err := chaos.Poll(ctx, 10*time.Second, func() (bool, error) {
			text, err := scrapeMetrics(ctx, n.Admin)
			if err != nil {
				return false, err
			}
			if fams, err = parseExposition(text); err != nil {
				return false, err
			}
			return fams["dbrouter_change_duration_seconds"] != nil, nil
		}); err != nil {
			t.Fatalf("%s /metrics: no dbrouter_change_duration_seconds after a switchover: %v", n.Name, err)
		}
		exported.merge(fams)
	}
	docs, err := os.ReadFile("../docs/admin.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range metricProblems(exprs, exported, string(docs)) {
		t.Error(p)
	}
	var unused []string
	used := usedFamilies(exprs, exported)
	for name := range exported {
		if strings.HasPrefix(name, "dbrouter_") && !used[name] {
			unused = append(unused, name)
		}
	}
	sort.Strings(unused)
	t.Logf("the dashboard uses %d of the %d dbrouter families routerd exports; not used: %v", len(used), len(used)+len(unused), unused)
}

// TestGrafanaDashboardCheckCatchesMistakes feeds the checks mistakes one
// at a time against a fixed exposition: each must be reported, so that a
// passing TestGrafanaDashboardNamesOnlyExportedMetrics means something.
func TestGrafanaDashboardCheckCatchesMistakes(t *testing.T) {
	const exposition = `# HELP dbrouter_queries_total q
# TYPE dbrouter_queries_total counter
dbrouter_queries_total{cluster="app",member="db1",route="routed"} 3
# HELP dbrouter_phase p
# TYPE dbrouter_phase gauge
dbrouter_phase{cluster="app",phase="serving"} 1
dbrouter_phase{cluster="app",phase="failing_over"} 0
# HELP dbrouter_query_duration_seconds d
# TYPE dbrouter_query_duration_seconds histogram
dbrouter_query_duration_seconds_bucket{cluster="app",kind="read",route="primary",le="0.001"} 1
dbrouter_query_duration_seconds_bucket{cluster="app",kind="read",route="primary",le="+Inf"} 1
dbrouter_query_duration_seconds_sum{cluster="app",kind="read",route="primary"} 0.0005
dbrouter_query_duration_seconds_count{cluster="app",kind="read",route="primary"} 1
# HELP dbrouter_build_info b
# TYPE dbrouter_build_info gauge
dbrouter_build_info{go_version="go1.26",revision="",version="(devel)"} 1
`
	fams, err := parseExposition(exposition)
	if err != nil {
		t.Fatal(err)
	}
	docs := "| `dbrouter_queries_total` | `dbrouter_phase` | `dbrouter_query_duration_seconds` | `dbrouter_build_info` |"
	for _, c := range []struct {
		expr, legend string
		want         string // a substring of the one problem; "" for none
	}{
		{`sum by (cluster, member, route) (rate(dbrouter_queries_total{cluster=~"$cluster",instance=~"$instance"}[$__rate_interval]))`, "{{member}} {{route}}", ""},
		{`histogram_quantile(0.99, sum by (le) (rate(dbrouter_query_duration_seconds_bucket[5m])))`, "", ""},
		{`sum(rate(dbrouter_query_duration_seconds_sum[5m])) / sum(rate(dbrouter_query_duration_seconds_count[5m]))`, "", ""},
		{`max by (cluster) (dbrouter_phase{phase="failing_over"})`, "", ""},
		{`rate(dbrouter_querys_total[5m])`, "", "dbrouter_querys_total: not exported"},
		{`rate(dbrouter_queries_total_bucket[5m])`, "", "dbrouter_queries_total_bucket: not exported"},
		{`rate(dbrouter_query_duration_seconds[5m])`, "", "dbrouter_query_duration_seconds is a histogram"},
		{`rate(dbrouter_phase[5m])`, "", "rate over dbrouter_phase, a gauge"},
		{`dbrouter_phase{state="serving"}`, "", `label "state"`},
		{`dbrouter_phase{phase="failingover"}`, "", `phase="failingover"`},
		{`sum by (kind) (dbrouter_queries_total)`, "", `label "kind"`},
		{`sum by (cluster) (dbrouter_queries_total)`, "{{member}}", `legend label "member"`},
		{`dbrouter_queries_total`, "{{member}}", ""},
		{`sum by (cluster, le) (rate(dbrouter_query_duration_seconds_bucket[5m]))`, "{{route}}", `legend label "route"`},
		{`max(dbrouter_build_info)`, "", `dbrouter_build_info is not in docs/admin.md`},
		{`dbrouter_querys_total{clustr="x"}`, "{{cluster}}", "dbrouter_querys_total: not exported"},
	} {
		docs := docs
		if strings.Contains(c.want, "docs/admin.md") {
			docs = strings.ReplaceAll(docs, "`dbrouter_build_info`", "")
		}
		got := metricProblems([]dashExpr{{where: "test", expr: c.expr, legend: c.legend}}, fams, docs)
		switch {
		case c.want == "" && len(got) > 0:
			t.Errorf("%s: unexpected %v", c.expr, got)
		case c.want != "" && (len(got) != 1 || !strings.Contains(got[0], c.want)):
			t.Errorf("%s: got %q, want one problem with %q", c.expr, got, c.want)
		}
	}
	bad := []byte(`{"templating":{"list":[{"name":"datasource","type":"datasource","query":"prometheus"}]},
		"panels":[{"type":"timeseries","title":"x","targets":[{"refId":"A","expr":"dbrouter_phase{cluster=~\"$cluster\"}"},{"refId":"A","expr":"dbrouter_phase"}]}]}`)
	got := strings.Join(dashboardProblems(bad), "\n")
	for _, want := range []string{"no cluster variable", `"x": no datasource`, `"x" target A: variable $cluster`, `"x": target refId "A" twice`} {
		if !strings.Contains(got, want) {
			t.Errorf("a broken dashboard: %q does not report %q", got, want)
		}
	}
}

// scrapeMetrics reads a routerd's /metrics in the text format (no Accept
// header).
func scrapeMetrics(ctx context.Context, adminAddr string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+adminAddr+"/metrics", nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("GET /metrics: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", fmt.Errorf("GET /metrics: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	return string(b), nil
}

// dashExpr is one PromQL expression of the dashboard and where it is;
// prose (a title or description) is checked for the names it mentions
// only.
type dashExpr struct {
	where, expr, legend string
	prose               bool
}

type dashTarget struct {
	RefID        string          `json:"refId"`
	Expr         string          `json:"expr"`
	LegendFormat string          `json:"legendFormat"`
	Datasource   json.RawMessage `json:"datasource"`
}

type dashPanel struct {
	ID          int             `json:"id"`
	Type        string          `json:"type"`
	Title       string          `json:"title"`
	Description string          `json:"description"`
	Datasource  json.RawMessage `json:"datasource"`
	Targets     []dashTarget    `json:"targets"`
	Panels      []dashPanel     `json:"panels"` // a collapsed row's
}

type dashVar struct {
	Name       string          `json:"name"`
	Type       string          `json:"type"`
	Query      json.RawMessage `json:"query"` // a string, or {"query": ...}
	Definition string          `json:"definition"`
}

type dashboard struct {
	SchemaVersion int `json:"schemaVersion"`
	Templating    struct {
		List []dashVar `json:"list"`
	} `json:"templating"`
	Annotations struct {
		List []struct {
			Name string `json:"name"`
			Expr string `json:"expr"`
		} `json:"list"`
	} `json:"annotations"`
	Panels []dashPanel `json:"panels"`
}

// varQuery is a query variable's PromQL: Grafana 9+ stores it as
// {"query": "label_values(...)"}, older ones as a string.
func (v dashVar) varQuery() string {
	var s string
	if json.Unmarshal(v.Query, &s) == nil {
		return s
	}
	var q struct {
		Query string `json:"query"`
	}
	_ = json.Unmarshal(v.Query, &q)
	return q.Query
}

func (d *dashboard) allPanels() []dashPanel {
	var out []dashPanel
	for _, p := range d.Panels {
		out = append(out, p)
		out = append(out, p.Panels...)
	}
	return out
}

// dashboardExprs returns every PromQL expression of the dashboard: panel
// targets, query variables and annotations.
func dashboardExprs(b []byte) ([]dashExpr, error) {
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("parse dashboard: %w", err)
	}
	var out []dashExpr
	for _, p := range d.allPanels() {
		out = append(out, dashExpr{where: fmt.Sprintf("panel %q title and description", p.Title), expr: p.Title + "\n" + p.Description, prose: true})
		for _, tg := range p.Targets {
			out = append(out, dashExpr{where: fmt.Sprintf("panel %q target %s", p.Title, tg.RefID), expr: tg.Expr, legend: tg.LegendFormat})
		}
	}
	for _, v := range d.Templating.List {
		if v.Type == "query" {
			out = append(out, dashExpr{where: "variable " + v.Name, expr: v.varQuery()},
				dashExpr{where: "variable " + v.Name + " definition", expr: v.Definition})
		}
	}
	for _, a := range d.Annotations.List {
		if a.Expr != "" {
			out = append(out, dashExpr{where: "annotation " + a.Name, expr: a.Expr})
		}
	}
	return out, nil
}

var (
	metricRE = regexp.MustCompile(`\bdbrouter_[a-z0-9_]+`)
	varRE    = regexp.MustCompile(`\$(\w+)|\$\{(\w+)[^}]*\}`)
)

// grafanaVars are the variables Grafana itself defines.
var grafanaVars = []string{"__rate_interval", "__interval", "__interval_ms", "__range", "__range_s", "__range_ms"}

// dashboardProblems checks the dashboard's shape: it parses, it has a
// Prometheus datasource variable and the cluster and instance variables,
// and every panel but a row reads that datasource with at least one
// target whose expression names a dbrouter metric and uses only defined
// variables.
func dashboardProblems(b []byte) []string {
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		return []string{fmt.Sprintf("parse dashboard: %v", err)}
	}
	var out []string
	if d.SchemaVersion < 36 {
		out = append(out, fmt.Sprintf("schemaVersion %d: Grafana 9's is 36", d.SchemaVersion))
	}
	vars := map[string]dashVar{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v
	}
	if v, ok := vars["datasource"]; !ok || v.Type != "datasource" || v.varQuery() != "prometheus" {
		out = append(out, "no datasource variable of type datasource for prometheus")
	}
	for _, name := range []string{"cluster", "instance"} {
		if v, ok := vars[name]; !ok || v.Type != "query" || !metricRE.MatchString(v.varQuery()) {
			out = append(out, fmt.Sprintf("no %s variable querying a dbrouter metric", name))
		}
	}
	// usesDS: the panel or target reads the datasource variable.
	usesDS := func(raw json.RawMessage) bool {
		var ds struct{ Type, UID string }
		return json.Unmarshal(raw, &ds) == nil && ds.Type == "prometheus" && ds.UID == "${datasource}"
	}
	ids := map[int]string{}
	for _, p := range d.allPanels() {
		if prev, ok := ids[p.ID]; ok {
			out = append(out, fmt.Sprintf("panel %q: id %d is also %q's", p.Title, p.ID, prev))
		}
		ids[p.ID] = p.Title
		if p.Type == "row" {
			continue
		}
		if !usesDS(p.Datasource) {
			out = append(out, fmt.Sprintf("panel %q: no datasource ${datasource} (prometheus)", p.Title))
		}
		if len(p.Targets) == 0 {
			out = append(out, fmt.Sprintf("panel %q: no target", p.Title))
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			if tg.RefID == "" || refs[tg.RefID] {
				out = append(out, fmt.Sprintf("panel %q: target refId %q twice or empty", p.Title, tg.RefID))
			}
			refs[tg.RefID] = true
			if !usesDS(tg.Datasource) {
				out = append(out, fmt.Sprintf("panel %q target %s: no datasource ${datasource} (prometheus)", p.Title, tg.RefID))
			}
			if !metricRE.MatchString(tg.Expr) {
				out = append(out, fmt.Sprintf("panel %q target %s: %q names no dbrouter metric", p.Title, tg.RefID, tg.Expr))
			}
			for _, m := range varRE.FindAllStringSubmatch(tg.Expr, -1) {
				name := m[1] + m[2]
				if _, ok := vars[name]; !ok && !slices.Contains(grafanaVars, name) {
					out = append(out, fmt.Sprintf("panel %q target %s: variable $%s is not defined", p.Title, tg.RefID, name))
				}
			}
		}
	}
	return out
}

// family is one exported metric family: its type, and the values seen of
// each label.
type family struct {
	typ    string
	labels map[string]map[string]bool
}

type exportedFamilies map[string]*family

func (e exportedFamilies) merge(o exportedFamilies) {
	for name, f := range o {
		g := e[name]
		if g == nil {
			g = &family{typ: f.typ, labels: map[string]map[string]bool{}}
			e[name] = g
		}
		for l, vs := range f.labels {
			if g.labels[l] == nil {
				g.labels[l] = map[string]bool{}
			}
			for v := range vs {
				g.labels[l][v] = true
			}
		}
	}
}

// resolve maps a series name to its family: itself, or a histogram's
// (_bucket, _sum, _count) or a summary's (_sum, _count).
func (e exportedFamilies) resolve(name string) (string, *family) {
	if f := e[name]; f != nil {
		return name, f
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(name, suffix)
		if f := e[base]; ok && f != nil && (f.typ == "histogram" || f.typ == "summary" && suffix != "_bucket") {
			return base, f
		}
	}
	return "", nil
}

// parseExposition reads Prometheus's text format (what promhttp serves
// without an Accept header): families from the TYPE lines, labels and
// their values from the samples.
func parseExposition(text string) (exportedFamilies, error) {
	fams := exportedFamilies{}
	for i, line := range strings.Split(text, "\n") {
		if line == "" || strings.HasPrefix(line, "# HELP ") {
			continue
		}
		if rest, ok := strings.CutPrefix(line, "# TYPE "); ok {
			f := strings.Fields(rest)
			if len(f) != 2 {
				return nil, fmt.Errorf("line %d: %q", i+1, line)
			}
			fams[f[0]] = &family{typ: f[1], labels: map[string]map[string]bool{}}
			continue
		}
		if strings.HasPrefix(line, "#") {
			continue
		}
		end := strings.IndexAny(line, "{ ")
		if end < 0 {
			return nil, fmt.Errorf("line %d: %q", i+1, line)
		}
		_, f := fams.resolve(line[:end])
		if f == nil {
			return nil, fmt.Errorf("line %d: sample of %s without a TYPE", i+1, line[:end])
		}
		if line[end] != '{' {
			continue
		}
		labels, err := parseLabels(line[end+1:])
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", i+1, err)
		}
		for k, v := range labels {
			if f.labels[k] == nil {
				f.labels[k] = map[string]bool{}
			}
			f.labels[k][v] = true
		}
	}
	return fams, nil
}

// parseLabels reads `name="value",...}` (values escape \\, \" and \n).
func parseLabels(s string) (map[string]string, error) {
	out := map[string]string{}
	for {
		s = strings.TrimLeft(s, ", ")
		if strings.HasPrefix(s, "}") {
			return out, nil
		}
		eq := strings.Index(s, `="`)
		if eq <= 0 {
			return nil, fmt.Errorf("labels %q", s)
		}
		name := s[:eq]
		s = s[eq+2:]
		var v strings.Builder
		i := 0
		for ; i < len(s) && s[i] != '"'; i++ {
			if s[i] == '\\' && i+1 < len(s) {
				i++
				if s[i] == 'n' {
					v.WriteByte('\n')
					continue
				}
			}
			v.WriteByte(s[i])
		}
		if i == len(s) {
			return nil, fmt.Errorf("unterminated value of %s", name)
		}
		out[name] = v.String()
		s = s[i+1:]
	}
}

var (
	// selectorRE: a metric and its matchers.
	selectorRE = regexp.MustCompile(`\b(dbrouter_[a-z0-9_]+)\s*\{([^}]*)\}`)
	matcherRE  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"`)
	groupingRE = regexp.MustCompile(`\bby\s*\(([^)]*)\)`)
	// aggregationRE: an aggregation operator (without: not used here).
	aggregationRE = regexp.MustCompile(`\b(sum|min|max|avg|count|group|stddev|stdvar|topk|bottomk|quantile|count_values)\s*(by\b|\()`)
	legendRE      = regexp.MustCompile(`\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}`)
	rateRE        = regexp.MustCompile(`\b(rate|irate|increase)\(\s*(dbrouter_[a-z0-9_]+)`)
	// labelValuesRE: a query variable's label_values(metric..., label).
	labelValuesRE = regexp.MustCompile(`label_values\(\s*(dbrouter_[a-z0-9_]+)[^,]*,\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)`)
)

// scrapeLabels are the labels Prometheus adds to every series it scrapes.
var scrapeLabels = []string{"instance", "job"}

// metricProblems checks every expression's metrics against the exported
// families and docs/admin.md.
func metricProblems(exprs []dashExpr, fams exportedFamilies, docs string) []string {
	var out []string
	for _, e := range exprs {
		// carried: the labels some metric of the expression has, which is
		// all a grouping or a legend can name.
		carried := map[string]bool{}
		for _, l := range scrapeLabels {
			carried[l] = true
		}
		known := true
		for _, name := range metricRE.FindAllString(e.expr, -1) {
			base, f := fams.resolve(name)
			if f == nil {
				out = append(out, fmt.Sprintf("%s: %s: not exported by routerd", e.where, name))
				known = false
				continue
			}
			if base == name && f.typ == "histogram" && !e.prose {
				out = append(out, fmt.Sprintf("%s: %s is a histogram: its series are %[2]s_bucket, _sum and _count", e.where, name))
			}
			if !strings.Contains(docs, "`"+base+"`") {
				out = append(out, fmt.Sprintf("%s: %s is not in docs/admin.md's metrics table", e.where, base))
			}
			for l := range f.labels {
				carried[l] = true
			}
		}
		if !known || e.prose {
			// Labels of an unknown metric would only repeat its problem.
			continue
		}
		for _, m := range selectorRE.FindAllStringSubmatch(e.expr, -1) {
			_, f := fams.resolve(m[1])
			if f == nil {
				continue
			}
			for _, mm := range matcherRE.FindAllStringSubmatch(m[2], -1) {
				label, op, value := mm[1], mm[2], mm[3]
				switch {
				case slices.Contains(scrapeLabels, label):
				case f.labels[label] == nil:
					out = append(out, fmt.Sprintf("%s: %s has no label %q", e.where, m[1], label))
				case op == "=" && !f.labels[label][value]:
					out = append(out, fmt.Sprintf("%s: %s{%s=%q}: routerd exports no such series (values: %v)", e.where, m[1], label, value, sortedKeys(f.labels[label])))
				}
			}
		}
		// kept: the labels the result can have, for its legend. An
		// aggregation keeps only what it groups by (an approximation: the
		// union of the expression's groupings).
		kept := carried
		if aggregationRE.MatchString(e.expr) {
			kept = map[string]bool{}
		}
		for _, m := range groupingRE.FindAllStringSubmatch(e.expr, -1) {
			for _, l := range strings.Split(m[1], ",") {
				if l = strings.TrimSpace(l); l == "" {
					continue
				}
				if !carried[l] {
					out = append(out, fmt.Sprintf("%s: grouping by label %q, which none of its metrics has", e.where, l))
				}
				kept[l] = true
			}
		}
		for _, m := range legendRE.FindAllStringSubmatch(e.legend, -1) {
			if !kept[m[1]] {
				out = append(out, fmt.Sprintf("%s: legend label %q, which the result does not have", e.where, m[1]))
			}
		}
		for _, m := range labelValuesRE.FindAllStringSubmatch(e.expr, -1) {
			if !carried[m[2]] {
				out = append(out, fmt.Sprintf("%s: label_values of label %q, which %s has not", e.where, m[2], m[1]))
			}
		}
		for _, m := range rateRE.FindAllStringSubmatch(e.expr, -1) {
			base, f := fams.resolve(m[2])
			switch {
			case f == nil:
			case f.typ == "counter":
			case f.typ == "histogram" && base != m[2]:
			case f.typ == "histogram": // reported above
			case f.typ == "gauge":
				out = append(out, fmt.Sprintf("%s: %s over %s, a gauge", e.where, m[1], m[2]))
			default:
				out = append(out, fmt.Sprintf("%s: %s over %s (a %s: rate its _bucket, _sum or _count)", e.where, m[1], m[2], f.typ))
			}
		}
	}
	return out
}

// usedFamilies are the exported families the expressions name.
func usedFamilies(exprs []dashExpr, fams exportedFamilies) map[string]bool {
	used := map[string]bool{}
	for _, e := range exprs {
		for _, name := range metricRE.FindAllString(e.expr, -1) {
			if base, f := fams.resolve(name); f != nil {
				used[base] = true
			}
		}
	}
	return used
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
