package proxy_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caproxy/caproxy/cloudagent/sim"
	"github.com/caproxy/caproxy/config"
	"github.com/caproxy/caproxy/daemon"
	"github.com/caproxy/caproxy/internal/fakeclock"
	"github.com/caproxy/caproxy/internal/syncbuf"
	"github.com/caproxy/caproxy/limit"
	"github.com/caproxy/caproxy/proxy"
)

// Accounts of the simulator's built-in set, in both auth modes.
var (
	tokenAccount  = sim.Account{UserName: "demo", APIKey: "demo-key", Auth: "token"}
	apikeyAccount = sim.Account{UserName: "demo-basic", APIKey: "demo-basic-key", Auth: "apikey"}
)

// newFakeClock returns a clock tests move by hand; its After fires when
// Advance passes the deadline.
func newFakeClock() *fakeclock.Clock {
	return fakeclock.New(time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC))
}

// tokenRecorder wraps the upstream transport to remember every bearer token
// caproxy sent, so tests can check that none of them leaks.
type tokenRecorder struct {
	next http.RoundTripper
	sent atomic.Int64 // requests given to next, reached or not
	// apiKeyOnBearer counts requests that carried both an apiKey header
	// and a bearer token: a client's apiKey passed through next to the
	// upstream token.
	apiKeyOnBearer atomic.Int64
	mu             sync.Mutex // guards tokens
	tokens         map[string]bool
}

func (r *tokenRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	r.sent.Add(1)
	if tok, ok := strings.CutPrefix(req.Header.Get("Authorization"), "Bearer "); ok {
		if req.Header.Get("apiKey") != "" {
			r.apiKeyOnBearer.Add(1)
		}
		r.mu.Lock()
		r.tokens[tok] = true
		r.mu.Unlock()
	}
	return r.next.RoundTrip(req)
}

func (r *tokenRecorder) seen() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for t := range r.tokens {
		out = append(out, t)
	}
	return out
}

// setup describes one test's proxy and simulator. The proxy is built by
// daemon.New from the config.Config these fields make, as the binary
// builds it; fields the config cannot express are daemon.Options.
type setup struct {
	sim           sim.Options      // Accounts default to tokenAccount and apikeyAccount
	clock         *fakeclock.Clock // nil: real time
	ttl           time.Duration
	staleTTL      time.Duration
	negTTL        time.Duration
	perWindow     int64         // limit.upstream_per_minute; 0: 50
	window        time.Duration // limit.window; 0: 60s
	maxWait       time.Duration
	timeout       time.Duration // 0: 5s
	clientAuth    string        // "off" turns it off
	clientRate    int64
	store         limit.Store    // nil: the store the config selects (memory, or Redis with redis set)
	upstream      *harness       // nil: a simulator of the harness's own; else share this one's
	redis         string         // redis.url: not empty shares budgets, tokens and cache there
	refresh       bool           // cache.refresh_ahead
	reserve       int64          // limit.reserve
	routes        []config.Route // config.yaml's routes
	adminToken    string         // admin_token
	refuseUnknown bool           // unknown_paths: refuse
	maxAnswer     int            // upstream.max_answer; 0: the default
	// front, if not nil, wraps the simulator's handler: a stand-in for an
	// upstream that answers what the strict simulator never does.
	front func(next http.Handler) http.Handler
}

// config is the config.yaml s stands for, in front of upstream.
func (s setup) config(upstream string) *config.Config {
	cfg := &config.Config{
		Listen:      "127.0.0.1:0",
		AdminListen: "127.0.0.1:0",
		AdminToken:  config.Secret(s.adminToken),
		Upstream:    config.Upstream{URL: upstream, Timeout: s.timeout, MaxAnswer: s.maxAnswer},
		Cache: config.Cache{TTL: s.ttl, StaleTTL: s.staleTTL, NegativeTTL: s.negTTL, MaxEntries: 1000,
			RefreshAhead: s.refresh},
		Limit: config.Limit{
			UpstreamPerMinute: int(s.perWindow), MaxWait: s.maxWait, Window: s.window,
			ClientPerMinute: int(s.clientRate), Reserve: int(s.reserve), TokenGenerationsPerHour: 10,
			AboveCloudAgentLimits: s.perWindow > config.CloudAgentAHTPerMinute,
		},
		ClientAuth: config.ClientAuthRequired,
		// A generous Redis timeout (production's default is 50 ms): under
		// -race on a loaded machine a healthy Redis may take longer.
		Redis:        config.Redis{URL: s.redis, Timeout: time.Second, OnFailure: config.RedisDeny},
		Log:          config.Log{Format: "text", Level: "debug", Access: true},
		Routes:       s.routes,
		UnknownPaths: config.UnknownPass,
	}
	if s.clientAuth == config.ClientAuthOff {
		cfg.ClientAuth = config.ClientAuthOff
	}
	if s.refuseUnknown {
		cfg.UnknownPaths = config.UnknownRefuse
	}
	for _, a := range s.sim.Accounts {
		cfg.Accounts = append(cfg.Accounts, config.Account{UserName: a.UserName, APIKey: a.APIKey, Auth: a.Auth})
	}
	return cfg
}

// harness is a proxy in front of a simulator, both over loopback.
type harness struct {
	t        *testing.T
	sim      *sim.Server
	simSrv   *httptest.Server
	daemon   *daemon.Daemon
	proxy    *proxy.Proxy
	url      string
	logs     *syncbuf.Buffer
	tokens   *tokenRecorder
	clock    *fakeclock.Clock
	accounts []sim.Account
}

func newHarness(t *testing.T, s setup) *harness {
	t.Helper()
	if s.sim.Accounts == nil {
		s.sim.Accounts = []sim.Account{tokenAccount, apikeyAccount}
	}
	if s.ttl == 0 {
		s.ttl = 30 * time.Second
	}
	if s.staleTTL == 0 {
		s.staleTTL = 10 * time.Minute
	}
	if s.negTTL == 0 {
		s.negTTL = 10 * time.Second
	}
	if s.perWindow == 0 {
		s.perWindow = 50
	}
	if s.window == 0 {
		s.window = time.Minute
	}
	if s.timeout == 0 {
		s.timeout = 5 * time.Second
	}
	h := &harness{t: t, logs: &syncbuf.Buffer{}, clock: s.clock, accounts: s.sim.Accounts}
	opts := daemon.Options{Log: h.logs, Store: s.store}
	if s.clock != nil {
		s.sim.Now, s.sim.After = s.clock.Now, s.clock.After
		opts.Clock = s.clock
	}
	if s.upstream != nil {
		h.sim, h.simSrv = s.upstream.sim, s.upstream.simSrv
	} else {
		h.sim = sim.New(s.sim)
		var upstream http.Handler = h.sim
		if s.front != nil {
			upstream = s.front(h.sim)
		}
		h.simSrv = httptest.NewServer(upstream)
		t.Cleanup(h.simSrv.Close)
	}
	opts.WrapTransport = func(next http.RoundTripper) http.RoundTripper {
		h.tokens = &tokenRecorder{next: next, tokens: map[string]bool{}}
		return h.tokens
	}
	d, err := daemon.New(context.Background(), s.config(h.simSrv.URL), opts)
	if err != nil {
		t.Fatal(err)
	}
	h.daemon, h.proxy = d, d.Proxy()
	t.Cleanup(d.Close)
	srv := httptest.NewServer(d.Handler())
	t.Cleanup(srv.Close) // before d.Close: no request outlives the daemon
	h.url = srv.URL
	// Registered last so it runs first: every log line of the test is in.
	t.Cleanup(h.checkNoSecretsLogged)
	return h
}

// logText is everything logged so far, access lines included.
func (h *harness) logText() string {
	if h.proxy.AccessLog != nil {
		h.proxy.AccessLog.Flush()
	}
	return h.logs.String()
}

// checkNoSecretsLogged fails the test if any configured key or any upstream
// token caproxy used appears in its logs.
func (h *harness) checkNoSecretsLogged() {
	logs := h.logText()
	for _, a := range h.accounts {
		if strings.Contains(logs, a.APIKey) {
			h.t.Errorf("the apiKey of %s appears in the logs", a.UserName)
		}
	}
	for _, tok := range h.tokens.seen() {
		if strings.Contains(logs, tok) {
			h.t.Errorf("an upstream token appears in the logs")
		}
	}
}

// reply is what a client saw.
type reply struct {
	code   int
	header http.Header
	body   string
}

func (r reply) status() string  { return field(r.body, "status") }
func (r reply) message() string { return field(r.body, "message") }

func field(body, name string) string {
	var m map[string]json.RawMessage
	if json.Unmarshal([]byte(body), &m) != nil {
		return ""
	}
	var s string
	if json.Unmarshal(m[name], &s) != nil {
		return string(m[name])
	}
	return s
}

// do sends one request to the proxy; headers are name, value pairs.
func (h *harness) do(method, path, body string, headers ...string) reply {
	h.t.Helper()
	req, err := http.NewRequest(method, h.url+path, strings.NewReader(body))
	if err != nil {
		h.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatal(err)
	}
	return reply{resp.StatusCode, resp.Header, string(b)}
}

// direct calls the simulator itself, as an app that bypasses caproxy would,
// with a's apiKey.
func (h *harness) direct(path, body string, a sim.Account) {
	h.t.Helper()
	req, _ := http.NewRequest("POST", h.simSrv.URL+path, strings.NewReader(body))
	req.Header.Set("apiKey", a.APIKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	resp.Body.Close()
}

// aht asks for one agent's AHT as account a, with a's apiKey.
func (h *harness) aht(a sim.Account, agent string, headers ...string) reply {
	h.t.Helper()
	body := `{"userName":"` + a.UserName + `","agentId":"` + agent + `"}`
	return h.do(http.MethodPost, "/ca_apis/aht", body, append([]string{"apiKey", a.APIKey}, headers...)...)
}
