package daemon_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caproxy/caproxy/cloudagent"
	"github.com/caproxy/caproxy/cloudagent/sim"
	"github.com/caproxy/caproxy/config"
	"github.com/caproxy/caproxy/daemon"
	"github.com/caproxy/caproxy/internal/syncbuf"
	"github.com/caproxy/caproxy/limit"
)

// Accounts of the simulator's built-in set, in both auth modes.
var (
	tokenAccount  = config.Account{UserName: "demo", APIKey: "demo-key", Auth: config.AuthToken}
	apikeyAccount = config.Account{UserName: "demo-basic", APIKey: "demo-basic-key", Auth: config.AuthAPIKey}
)

// testConfig is a config in front of upstream with the given routes, as
// config.Load would return it for a small config.yaml.
func testConfig(t *testing.T, upstream string, extra string) *config.Config {
	t.Helper()
	yaml := `
upstream: {url: "` + upstream + `", timeout: 5s}
accounts:
  - {user_name: demo, api_key: demo-key, auth: token}
  - {user_name: demo-basic, api_key: demo-basic-key, auth: apikey}
` + extra
	cfg, err := config.Parse([]byte(yaml), nil)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// running is a daemon in front of a simulator, over loopback.
type running struct {
	t    *testing.T
	d    *daemon.Daemon
	sim  *sim.Server
	url  string
	logs *syncbuf.Buffer
}

// start builds a daemon from the config extra completes, in front of a
// simulator of its own.
func start(t *testing.T, extra string) *running {
	t.Helper()
	s := sim.New(sim.Options{})
	simSrv := httptest.NewServer(s)
	t.Cleanup(simSrv.Close)
	r := &running{t: t, sim: s, logs: &syncbuf.Buffer{}}
	d, err := daemon.New(context.Background(), testConfig(t, simSrv.URL, extra), daemon.Options{Log: r.logs})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	srv := httptest.NewServer(d.Handler())
	t.Cleanup(srv.Close)
	r.d, r.url = d, srv.URL
	return r
}

// post sends body to path as account a and returns the status and body.
func (r *running) post(path, body string, a config.Account) (int, string) {
	r.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, r.url+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(cloudagent.HeaderAPIKey, a.APIKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// aht asks for agent's AHT as a and fails the test unless it is answered 200.
func (r *running) aht(a config.Account, agent string) {
	r.t.Helper()
	if code, body := r.post(cloudagent.PathAHT, `{"userName":"`+a.UserName+`","agentId":"`+agent+`"}`, a); code != http.StatusOK {
		r.t.Fatalf("AHT of %s as %s: %d %s", agent, a.UserName, code, body)
	}
}

// TestBudgetsFromConfig checks what the config's limits become: the AHT
// budget measures limit.window plus its send margin (a budget on the bare
// window lets 51 calls land in CloudAgent's minute), and a reload changes
// the limits but not the window (read at start only).
func TestBudgetsFromConfig(t *testing.T) {
	r := start(t, "limit: {upstream_per_minute: 20, window: 30s}\n")
	b := r.d.Proxy().Budget
	if b.Limit() != 20 || b.Window() != limit.SendWindow(30*time.Second) {
		t.Fatalf("AHT budget %d per %v, want 20 per %v", b.Limit(), b.Window(), limit.SendWindow(30*time.Second))
	}
	r.d.Reload(testConfig(t, r.d.Proxy().Upstream.String(), "limit: {upstream_per_minute: 10, window: 45s}\n"))
	if b.Limit() != 10 || b.Window() != limit.SendWindow(30*time.Second) {
		t.Fatalf("after a reload: %d per %v, want 10 per %v", b.Limit(), b.Window(), limit.SendWindow(30*time.Second))
	}
	if !strings.Contains(r.logs.String(), "key=limit.window") {
		t.Errorf("the reload did not say limit.window takes effect only on restart:\n%s", r.logs.String())
	}
	// The refresh scheduler paces for the budget in force, not for a
	// window the reload could not apply.
	if rc := r.d.Proxy().Refresher.Config(); rc.Window != 30*time.Second || rc.PerWindow != 10 {
		t.Errorf("refresh scheduler after the reload: %d per %v, want 10 per 30s", rc.PerWindow, rc.Window)
	}
}

// TestConfiguredRoutesServed checks that config.yaml's routes reach the
// route table the daemon serves: a budget of one call on a configured
// route refuses the second call, and the built-in routes stay.
func TestConfiguredRoutesServed(t *testing.T) {
	r := start(t, `routes:
  - {name: details_once, path: `+sim.PathAgentDetails+`, methods: [POST], budget: 1, window: 60s}
`)
	if rt := r.d.Proxy().Routes.Lookup(sim.PathAgentDetails); rt == nil || rt.Name != "details_once" {
		t.Fatalf("route of %s: %+v, want details_once", sim.PathAgentDetails, rt)
	}
	if rt := r.d.Proxy().Routes.Lookup(cloudagent.PathAgentManualDial); rt == nil {
		t.Fatalf("the built-in route of %s is gone", cloudagent.PathAgentManualDial)
	}
	body := `{"userName":"demo-basic"}`
	if code, b := r.post(sim.PathAgentDetails, body, apikeyAccount); code != http.StatusOK {
		t.Fatalf("first call: %d %s", code, b)
	}
	if code, b := r.post(sim.PathAgentDetails, body, apikeyAccount); code != http.StatusTooManyRequests {
		t.Fatalf("second call over the route's budget of 1: %d %s, want 429", code, b)
	}
}

// TestReloadKeepsTokenSources checks that a reload which leaves an
// account's credentials alone keeps its token source, so no new upstream
// token is generated (each generation logs out the previous token), while
// a changed key gets a new one.
func TestReloadKeepsTokenSources(t *testing.T) {
	r := start(t, "")
	r.aht(tokenAccount, "agent001")
	upstream := r.d.Proxy().Upstream.String()
	before := r.d.Proxy().Settings().Accounts[tokenAccount.UserName].Upstream

	r.d.Reload(testConfig(t, upstream, "cache: {ttl: 45s}\n"))
	if got := r.d.Proxy().Settings().Accounts[tokenAccount.UserName].Upstream; got != before {
		t.Errorf("a reload with the same credentials replaced the token source")
	}
	r.aht(tokenAccount, "agent002") // a miss: goes upstream with a token
	if st := r.sim.Stats(); st.TokenGenerations != 1 || st.AHTAdmitted != 2 {
		t.Fatalf("after a reload with the same credentials: %d token generations, %d AHT calls; want 1 and 2",
			st.TokenGenerations, st.AHTAdmitted)
	}

	changed := testConfig(t, upstream, "")
	changed.Accounts[0].APIKey = "demo-key-rotated"
	r.d.Reload(changed)
	if got := r.d.Proxy().Settings().Accounts[tokenAccount.UserName].Upstream; got == before {
		t.Errorf("a reload with a new api_key kept the old token source")
	}
}
