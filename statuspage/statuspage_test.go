package statuspage_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caproxy/caproxy/cloudagent/sim"
	"github.com/caproxy/caproxy/config"
	"github.com/caproxy/caproxy/daemon"
	"github.com/caproxy/caproxy/internal/syncbuf"
	"github.com/caproxy/caproxy/internal/testport"
	"github.com/caproxy/caproxy/statuspage"
)

// listen opens a loopback listener in this package's port range
// (27100-27499; CAPROXY_TEST_PORTS=lo-hi chooses another).
func listen(t *testing.T) net.Listener { return testport.Listen(t, 27100, 27499) }

func serve(t *testing.T, h http.Handler) string {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.Listener.Close()
	srv.Listener = listen(t)
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.URL
}

// running is a caproxy (the daemon the binary runs) in front of the
// simulator, with its admin handler wrapped by the status page.
type running struct {
	t        *testing.T
	proxyURL string
	adminURL string
	token    string
}

func start(t *testing.T, adminToken string, wrapAdmin func(http.Handler) http.Handler) *running {
	t.Helper()
	return startWith(t, "", adminToken, wrapAdmin)
}

// startWith is start with more config.yaml lines.
func startWith(t *testing.T, extraYAML, adminToken string, wrapAdmin func(http.Handler) http.Handler) *running {
	t.Helper()
	simURL := serve(t, sim.New(sim.Options{}))
	yaml := `
upstream: {url: "` + simURL + `", timeout: 5s}
accounts:
  - {user_name: demo, api_key: demo-key, auth: token}
  - {user_name: demo-basic, api_key: demo-basic-key, auth: apikey}
log: {access: false}
` + extraYAML
	if adminToken != "" {
		yaml += "admin_token: " + adminToken + "\n"
	}
	cfg, err := config.Parse([]byte(yaml), nil)
	if err != nil {
		t.Fatal(err)
	}
	d, err := daemon.New(context.Background(), cfg, daemon.Options{Log: &syncbuf.Buffer{}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	admin := statuspage.Wrap(d.AdminHandler())
	if wrapAdmin != nil {
		admin = wrapAdmin(admin)
	}
	return &running{t: t, proxyURL: serve(t, d.Handler()), adminURL: serve(t, admin), token: adminToken}
}

// aht asks the AHT of agent as account demo; distinct agents are misses,
// each spending one call of demo's budget.
func (r *running) aht(agent string) {
	r.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, r.proxyURL+"/ca_apis/aht", strings.NewReader(`{"userName":"demo","agentId":"`+agent+`"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("apiKey", "demo-key")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		r.t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"success"`) {
		r.t.Fatalf("aht %s: %d %s", agent, resp.StatusCode, body)
	}
}

func (r *running) get(path string) (int, string) {
	r.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, r.adminURL+path, nil)
	if r.token != "" {
		req.Header.Set("Authorization", "Bearer "+r.token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

type budget struct {
	Limit     int64             `json:"limit"`
	Remaining int64             `json:"remaining"`
	Mode      string            `json:"mode"`
	Routes    map[string]budget `json:"routes"`
}

func (r *running) budget() map[string]budget {
	r.t.Helper()
	code, body := r.get("/admin/budget")
	if code != http.StatusOK {
		r.t.Fatalf("/admin/budget: %d %s", code, body)
	}
	var out map[string]budget
	if err := json.Unmarshal([]byte(body), &out); err != nil {
		r.t.Fatal(err)
	}
	return out
}

// metric is the value of the sample name{labels} in /metrics.
func (r *running) metric(name string, labels map[string]string) float64 {
	r.t.Helper()
	_, body := r.get("/metrics")
	for _, s := range statuspage.ParseMetrics(body) {
		if s.Name != name {
			continue
		}
		match := true
		for k, v := range labels {
			match = match && s.Labels[k] == v
		}
		if match {
			return s.Value
		}
	}
	r.t.Fatalf("/metrics has no %s%v", name, labels)
	return 0
}

// attr reads attribute name of the first element in page whose opening tag
// contains marker.
func attr(t *testing.T, page, marker, name string) string {
	t.Helper()
	i := strings.Index(page, marker)
	if i < 0 {
		t.Fatalf("page has no element with %s", marker)
	}
	tagStart := strings.LastIndexByte(page[:i+1], '<')
	tag := page[tagStart : tagStart+strings.IndexByte(page[tagStart:], '>')]
	m := regexp.MustCompile(` ` + name + `="([^"]*)"`).FindStringSubmatch(tag)
	if m == nil {
		t.Fatalf("element %q has no %s", tag, name)
	}
	return m[1]
}

// checkPage checks that the numbers page shows are what /admin/budget and
// /metrics answer now.
func checkPage(t *testing.T, r *running, page string) {
	t.Helper()
	b := r.budget()
	if len(b) != 2 {
		t.Fatalf("budget has %d accounts, want 2", len(b))
	}
	for name, s := range b {
		m := `data-account="` + name + `"`
		if got, want := attr(t, page, m, "data-used"), strconv.FormatInt(s.Limit-s.Remaining, 10); got != want {
			t.Errorf("%s: page shows %s calls used, /admin/budget %s", name, got, want)
		}
		if got, want := attr(t, page, m, "data-limit"), strconv.FormatInt(s.Limit, 10); got != want {
			t.Errorf("%s: page shows limit %s, /admin/budget %s", name, got, want)
		}
		if got := attr(t, page, m, "data-mode"); got != s.Mode {
			t.Errorf("%s: page shows mode %s, /admin/budget %s", name, got, s.Mode)
		}
		for rn, rs := range s.Routes {
			if got, want := attr(t, page, `data-route="`+rn+`"`, "data-limit"), strconv.FormatInt(rs.Limit, 10); got != want {
				t.Errorf("%s route %s: page shows limit %s, /admin/budget %s", name, rn, got, want)
			}
		}
	}
	gens := r.metric("caproxy_token_generations_total", map[string]string{"account": "demo"})
	if got := attr(t, page, `data-account="demo"`, "data-generations"); got != strconv.FormatFloat(gens, 'f', -1, 64) {
		t.Errorf("page shows %s token generations, /metrics %v", got, gens)
	}
	// This hour's generations, as the guard counts them: demo's misses
	// needed a token, so at least one.
	hour := r.metric("caproxy_token_generations_hour", map[string]string{"account": "demo"})
	if hour < 1 {
		t.Errorf("/metrics counts %v generations this hour for demo, which generated a token", hour)
	}
	if got := attr(t, page, `data-account="demo"`, "data-generations-hour"); got != strconv.FormatFloat(hour, 'f', -1, 64) {
		t.Errorf("page shows %s token generations this hour, /metrics %v", got, hour)
	}
	if regexp.MustCompile(`data-account="demo-basic"[^>]*data-generations-hour`).MatchString(page) {
		t.Error("page shows token generations for demo-basic, an apikey account")
	}
	// The token's age only grows: what the page shows is at most what
	// /metrics says after.
	ageNow := r.metric("caproxy_token_age_seconds", map[string]string{"account": "demo"})
	if got, err := strconv.ParseFloat(attr(t, page, `data-account="demo"`, "data-token-age"), 64); err != nil || got < 0 || got > ageNow {
		t.Errorf("page shows token age %v (%v), /metrics %v after", got, err, ageNow)
	}
	tracked := r.metric("caproxy_refresh_tracked_keys", nil)
	if got := attr(t, page, `id="refresh"`, "data-tracked"); got != strconv.FormatFloat(tracked, 'f', -1, 64) {
		t.Errorf("page shows %s refresh keys tracked, /metrics %v", got, tracked)
	}
	for name := range b {
		want := "enough"
		if r.metric("caproxy_refresh_scarce", map[string]string{"account": name}) == 1 {
			want = "scarce"
		}
		if got := attr(t, page, `data-account="`+name+`"`, "data-scarce"); got != want {
			t.Errorf("%s: page shows budget %s for refresh-ahead, /metrics %s", name, got, want)
		}
	}
	entries := r.metric("caproxy_cache_entries", nil)
	if got := attr(t, page, `id="cache"`, "data-entries"); got != strconv.FormatFloat(entries, 'f', -1, 64) {
		t.Errorf("page shows %s cache entries, /metrics %v", got, entries)
	}
	stale := r.metric("caproxy_requests_total", map[string]string{"route": "aht", "outcome": "stale"})
	if got := attr(t, page, `id="cache"`, "data-stale"); got != strconv.FormatFloat(stale, 'f', -1, 64) {
		t.Errorf("page shows %s stale served, /metrics %v", got, stale)
	}
}

// TestSnapshotMatchesAdmin: without JavaScript the page itself carries the
// numbers /admin/budget and /metrics answer.
func TestSnapshotMatchesAdmin(t *testing.T) {
	r := start(t, "", nil)
	for i := 1; i <= 7; i++ {
		r.aht(fmt.Sprintf("agent%03d", i))
	}
	r.aht("agent001") // a hit: costs nothing
	for _, path := range []string{"/", "/status"} {
		code, page := r.get(path)
		if code != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, code, page)
		}
		checkPage(t, r, page)
		if got := attr(t, page, `data-account="demo"`, "data-used"); got != "7" {
			t.Errorf("demo spent 7 calls; page shows %s", got)
		}
	}
	// Everything else is the admin handler's.
	if code, body := r.get("/healthz"); code != http.StatusOK || body != "ok\n" {
		t.Errorf("/healthz through the page: %d %q", code, body)
	}
	if code, _ := r.get("/nonexistent"); code != http.StatusNotFound {
		t.Errorf("/nonexistent: %d, want 404 from the admin mux", code)
	}
}

// TestRefreshAheadShown: with refresh-ahead on, every key asked for is
// tracked, and the page shows the count /metrics exports, with JavaScript
// off.
func TestRefreshAheadShown(t *testing.T) {
	r := startWith(t, "cache: {refresh_ahead: true}\n", "", nil)
	for i := 1; i <= 4; i++ {
		r.aht(fmt.Sprintf("agent%03d", i))
	}
	r.aht("agent002")
	if got := r.metric("caproxy_refresh_tracked_keys", nil); got != 4 {
		t.Errorf("/metrics: %v keys tracked, want the 4 asked for", got)
	}
	code, page := r.get("/")
	if code != http.StatusOK {
		t.Fatalf("GET /: %d %s", code, page)
	}
	checkPage(t, r, page)
	if !strings.Contains(page, `<b id="refresh-tracked">4</b> keys tracked`) {
		t.Error("page does not say 4 keys tracked")
	}
}

// TestPageBehindAdminToken: with admin_token set the page answers what
// /admin/budget answers without the token, and only the probes stay open.
func TestPageBehindAdminToken(t *testing.T) {
	const token = "operator-test-token-0123456789"
	r := start(t, token, nil)
	anon := &running{t: t, adminURL: r.adminURL}
	wantCode, wantBody := anon.get("/admin/budget")
	if wantCode != http.StatusUnauthorized {
		t.Fatalf("/admin/budget without the token: %d", wantCode)
	}
	for _, path := range []string{"/", "/status"} {
		code, body := anon.get(path)
		if code != wantCode || body != wantBody {
			t.Errorf("GET %s without the token: %d %q, want admin's %d %q", path, code, body, wantCode, wantBody)
		}
		if strings.Contains(body, "data-account") {
			t.Errorf("GET %s without the token shows accounts", path)
		}
	}
	wrong := &running{t: t, adminURL: r.adminURL, token: "not-the-token-at-all"}
	if code, _ := wrong.get("/"); code != http.StatusUnauthorized {
		t.Errorf("GET / with a wrong token: %d", code)
	}
	if code, page := r.get("/"); code != http.StatusOK || !strings.Contains(page, `data-account="demo"`) {
		t.Errorf("GET / with the token: %d", code)
	}
	if code, _ := anon.get("/healthz"); code != http.StatusOK {
		t.Errorf("/healthz without the token: %d, want 200 (probes stay open)", code)
	}
}

func TestPageRefusesWrites(t *testing.T) {
	r := start(t, "", nil)
	resp, err := http.Post(r.adminURL+"/", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed || !strings.Contains(string(body), `"status":"error"`) {
		t.Errorf("POST /: %d %s, want 405 in CloudAgent's shape", resp.StatusCode, body)
	}
}

func TestParseMetrics(t *testing.T) {
	text := `# HELP x_total a counter
# TYPE x_total counter
x_total{route="aht",outcome="hit"} 12
y 3.5
z{a="q\"uote\\d",b="line\nbreak"} +Inf
h_bucket{le="0.5"} 7 1700000000000
garbage line here
`
	got := statuspage.ParseMetrics(text)
	if len(got) != 4 {
		t.Fatalf("parsed %d samples, want 4: %+v", len(got), got)
	}
	if got[0].Name != "x_total" || got[0].Labels["route"] != "aht" || got[0].Labels["outcome"] != "hit" || got[0].Value != 12 {
		t.Errorf("sample 0: %+v", got[0])
	}
	if got[1].Name != "y" || got[1].Value != 3.5 || len(got[1].Labels) != 0 {
		t.Errorf("sample 1: %+v", got[1])
	}
	if got[2].Labels["a"] != `q"uote\d` || got[2].Labels["b"] != "line\nbreak" || got[2].Value <= 1e308 {
		t.Errorf("sample 2: %+v", got[2])
	}
	if got[3].Name != "h_bucket" || got[3].Labels["le"] != "0.5" || got[3].Value != 7 {
		t.Errorf("sample 3: %+v", got[3])
	}
}

// TestBrowser loads the page in headless Chromium while demo spends budget:
// the server renders one number, three more misses land before the browser
// has the page, and what the page shows after its script has refreshed is
// what /admin/budget and /metrics answer then.
func TestBrowser(t *testing.T) {
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("chromium not installed (Debian: apt-get install chromium): the status page's script is not exercised")
	}
	var r *running
	var served atomic.Int64 // pages served; the misses follow the first
	r = start(t, "", func(admin http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			if req.URL.Path != "/" || served.Add(1) != 1 {
				admin.ServeHTTP(w, req)
				return
			}
			rec := httptest.NewRecorder()
			admin.ServeHTTP(rec, req) // rendered with 5 calls spent
			for i := 6; i <= 8; i++ {
				r.aht(fmt.Sprintf("agent%03d", i))
			}
			for k, v := range rec.Header() {
				w.Header()[k] = v
			}
			w.WriteHeader(rec.Code)
			w.Write(rec.Body.Bytes())
		})
	})
	for i := 1; i <= 5; i++ {
		r.aht(fmt.Sprintf("agent%03d", i))
	}
	r.aht("agent001")
	dir := t.TempDir()
	args := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir=" + filepath.Join(dir, "profile"), "--virtual-time-budget=5000"}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, chromium, append(args, "--dump-dom", r.adminURL+"/")...).Output()
	if err != nil {
		t.Fatalf("chromium --dump-dom: %v", err)
	}
	dom := string(out)
	if got := attr(t, dom, "<body", "data-source"); got != "live" {
		t.Fatalf("page source %q: the script did not refresh the page", got)
	}
	if got := attr(t, dom, `data-account="demo"`, "data-used"); got != "8" {
		t.Errorf("page shows %s calls used by demo, want 8 (5 rendered, 3 after)", got)
	}
	checkPage(t, r, dom)
	if n, _ := strconv.Atoi(attr(t, dom, `data-account="demo"`, "data-samples")); n < 2 {
		t.Errorf("page kept %d samples for the chart, want refreshes every 2 s", n)
	}

	shot := filepath.Join(dir, "status.png")
	ctx2, cancel2 := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel2()
	cmd := exec.CommandContext(ctx2, chromium, append(args, "--window-size=1100,620", "--screenshot="+shot, r.adminURL+"/")...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("chromium --screenshot: %v\n%s", err, out)
	}
	png, err := os.ReadFile(shot)
	if err != nil || len(png) < 1000 || string(png[1:4]) != "PNG" {
		t.Fatalf("screenshot %s: %d bytes, %v", shot, len(png), err)
	}
	t.Logf("screenshot: %s", shot)
	if dst := os.Getenv("STATUSPAGE_SCREENSHOT"); dst != "" {
		if err := os.WriteFile(dst, png, 0o644); err != nil {
			t.Error(err)
		}
	}
}
