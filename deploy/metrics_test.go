package deploy_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/caproxy/caproxy/internal/redistest"
	"github.com/caproxy/caproxy/statuspage"
)

// exported is what a caproxy's /metrics exports: sample names (histograms
// as their _bucket, _sum and _count series) and each one's label names.
type exported map[string]map[string]bool

func scrape(t *testing.T, c *caproxy) exported {
	t.Helper()
	out := exported{}
	for _, s := range statuspage.ParseMetrics(c.get(t, "/metrics")) {
		if out[s.Name] == nil {
			out[s.Name] = map[string]bool{}
		}
		for l := range s.Labels {
			out[s.Name][l] = true
		}
	}
	return out
}

var (
	caproxyName = regexp.MustCompile(`\bcaproxy_[a-zA-Z0-9_]+`)
	selector    = regexp.MustCompile(`\b(caproxy_[a-zA-Z0-9_]+)\{([^}]*)\}`)
	matcher     = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)`)
)

// missing lists what query names that e does not export: caproxy_ metric
// names, and label names in their selectors (job and instance are
// Prometheus's own).
func (e exported) missing(query string) []string {
	var out []string
	for _, name := range caproxyName.FindAllString(query, -1) {
		if e[name] == nil {
			out = append(out, name)
		}
	}
	for _, m := range selector.FindAllStringSubmatch(query, -1) {
		labels := e[m[1]]
		if labels == nil {
			continue
		}
		for _, l := range matcher.FindAllStringSubmatch(m[2], -1) {
			if l[1] != "job" && l[1] != "instance" && !labels[l[1]] {
				out = append(out, m[1]+"{"+l[1]+"}")
			}
		}
	}
	return out
}

// dashboardQueries are the PromQL expressions of the Grafana dashboard's
// panels and variables.
func dashboardQueries(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("grafana", "caproxy.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash any
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("grafana/caproxy.json: %v", err)
	}
	var out []string
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if s, ok := x.(string); ok && (k == "expr" || k == "definition") {
					out = append(out, s)
				}
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(dash)
	return out
}

type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert string `yaml:"alert"`
			Expr  string `yaml:"expr"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

func alertQueries(t *testing.T) map[string]string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("prometheus", "alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var rf ruleFile
	if err := yaml.Unmarshal(data, &rf); err != nil {
		t.Fatalf("prometheus/alerts.yml: %v", err)
	}
	out := map[string]string{}
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			out[r.Alert] = r.Expr
		}
	}
	return out
}

// TestQueriesUseExportedMetrics starts caproxy on Redis in front of the
// simulator, sends a few requests, and checks that every metric (and
// selector label) the dashboard and the alert rules query is one /metrics
// exports.
func TestQueriesUseExportedMetrics(t *testing.T) {
	redis := redistest.Start(t)
	dir := t.TempDir()
	proxyAddr, adminAddr := "127.0.0.1:"+freePort(t), "127.0.0.1:"+freePort(t)
	cfg := filepath.Join(dir, "config.yaml")
	os.WriteFile(cfg, []byte(`
listen: `+proxyAddr+`
admin_listen: `+adminAddr+`
upstream: {url: "builtin:sim"}
accounts:
  - {user_name: demo, api_key: demo-key, auth: token}
  - {user_name: demo-basic, api_key: demo-basic-key, auth: apikey}
redis: {url: "redis://`+redis+`"}
log: {access: false}
`), 0o600)
	c := start(t, cfg, proxyAddr, adminAddr, "")
	for _, agent := range []string{"agent001", "agent002", "agent001", "agent003"} {
		c.aht(t, "demo", "demo-key", agent)
	}
	c.aht(t, "demo-basic", "demo-basic-key", "agent001")
	e := scrape(t, c)

	// The checker itself: a name or label /metrics lacks is reported.
	if got := e.missing(`rate(caproxy_no_such_total[5m]) + caproxy_requests_total{account="x"}`); !slices.Equal(got, []string{"caproxy_no_such_total", "caproxy_requests_total{account}"}) {
		t.Fatalf("checker reports %q for a missing name and label", got)
	}

	queries := dashboardQueries(t)
	if len(queries) < 10 {
		t.Fatalf("dashboard has %d queries", len(queries))
	}
	used := map[string]bool{}
	for _, q := range queries {
		for _, n := range caproxyName.FindAllString(q, -1) {
			used[n] = true
		}
		if m := e.missing(q); len(m) > 0 {
			t.Errorf("dashboard query uses what /metrics does not export: %v\n  %s", m, q)
		}
	}
	// What the issue asks the dashboard to show.
	for _, want := range []string{
		"caproxy_budget_remaining", "caproxy_upstream_requests_total", // budget per account and route
		"caproxy_requests_total",                                                    // hit/miss/stale
		"caproxy_upstream_duration_seconds_bucket",                                  // upstream latency
		"caproxy_token_generations_total",                                           // token generations
		"caproxy_redis_up", "caproxy_redis_errors_total", "caproxy_refreshes_total", // Redis, refresh
		"caproxy_budget_used", "caproxy_budget_limit", // budget against the limit in force
		"caproxy_token_age_seconds", "caproxy_token_generations_hour", // the token now
		"caproxy_refresh_tracked_keys", "caproxy_refresh_scarce", "caproxy_ready",
	} {
		if !used[want] {
			t.Errorf("dashboard shows nothing from %s", want)
		}
	}

	alerts := alertQueries(t)
	for _, want := range []string{"CaproxyBudgetNearLimit", "CaproxyTokenGenerationsHigh", "CaproxyUpstreamErrors", "CaproxyRedisDown", "CaproxyDown", "CaproxyNotReady"} {
		if alerts[want] == "" {
			t.Errorf("alerts.yml has no %s", want)
		}
	}
	for name, q := range alerts {
		if m := e.missing(q); len(m) > 0 {
			t.Errorf("alert %s uses what /metrics does not export: %v\n  %s", name, m, strings.TrimSpace(q))
		}
	}
}

// TestDashboardShape checks what Grafana needs of an imported dashboard:
// unique panel ids, every query on the chosen Prometheus data source, unique
// refIds within a panel, and panels that do not overlap.
func TestDashboardShape(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("grafana", "caproxy.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		UID    string `json:"uid"`
		Title  string `json:"title"`
		Panels []struct {
			ID         int    `json:"id"`
			Type       string `json:"type"`
			Title      string `json:"title"`
			Datasource struct {
				Type, UID string
			} `json:"datasource"`
			GridPos struct{ H, W, X, Y int } `json:"gridPos"`
			Targets []struct {
				RefID string `json:"refId"`
				Expr  string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct{ Name, Type string } `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatal(err)
	}
	if dash.UID == "" || dash.Title == "" {
		t.Error("dashboard without uid or title")
	}
	if !slices.ContainsFunc(dash.Templating.List, func(v struct{ Name, Type string }) bool {
		return v.Name == "datasource" && v.Type == "datasource"
	}) {
		t.Error("no datasource variable: importers cannot pick their Prometheus")
	}
	ids := map[int]bool{}
	cells := map[[2]int]string{}
	for _, p := range dash.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d twice", p.ID)
		}
		ids[p.ID] = true
		for x := p.GridPos.X; x < p.GridPos.X+p.GridPos.W; x++ {
			for y := p.GridPos.Y; y < p.GridPos.Y+p.GridPos.H; y++ {
				if other, ok := cells[[2]int{x, y}]; ok {
					t.Errorf("panels %q and %q overlap at %d,%d", other, p.Title, x, y)
				}
				cells[[2]int{x, y}] = p.Title
			}
		}
		if p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("panel %q wider than the grid", p.Title)
		}
		if p.Type == "row" {
			continue
		}
		if p.Datasource.Type != "prometheus" || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q on data source %+v", p.Title, p.Datasource)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		refs := map[string]bool{}
		for _, q := range p.Targets {
			if refs[q.RefID] || q.RefID == "" || strings.TrimSpace(q.Expr) == "" {
				t.Errorf("panel %q: refId %q repeated, empty, or without a query", p.Title, q.RefID)
			}
			refs[q.RefID] = true
		}
	}
}
