package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/caproxy/caproxy/cloudagent"
	"github.com/caproxy/caproxy/cloudagent/sim"
)

// TestQuickStart follows the README's quick start with the shipped
// config.yaml, changing only the listen addresses.
func TestQuickStart(t *testing.T) {
	shipped, err := os.ReadFile("../config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p := startProxyText(t, func(listen, admin string) string {
		text := string(shipped)
		for _, r := range []struct{ old, new string }{
			{"listen: 127.0.0.1:8080", "listen: " + listen},
			{"admin_listen: 127.0.0.1:9090", "admin_listen: " + admin},
		} {
			if n := strings.Count(text, r.old); n != 1 {
				t.Fatalf("shipped config.yaml has %q %d times, want once", r.old, n)
			}
			text = strings.Replace(text, r.old, r.new, 1)
		}
		return text
	})
	c := newClient(t)

	checkAgentAHT(t, c.aht(p, demoKey, "demo", "agent001"), "agent001", "MISS")
	r := c.aht(p, demoKey, "demo", "agent001")
	checkAgentAHT(t, r, "agent001", "HIT")
	if age, err := strconv.Atoi(r.header.Get("Age")); err != nil || age < 0 {
		t.Errorf("HIT has Age %q, want a non-negative integer", r.header.Get("Age"))
	}
}

// TestCommandLine covers -version, -check and bad configs.
func TestCommandLine(t *testing.T) {
	t.Run("version", func(t *testing.T) {
		r := run(t, nil, "-version")
		if r.code != 0 || !strings.Contains(r.stdout+r.stderr, e2eVersion) {
			t.Errorf("-version: exit %d, output %q%q; want exit 0 and %q", r.code, r.stdout, r.stderr, e2eVersion)
		}
	})
	t.Run("stray argument", func(t *testing.T) {
		// Flag parsing stops at a non-flag; a stray word must be an
		// error, not silently drop what follows it.
		for _, args := range [][]string{
			{"-config", "../config.yaml", "-check", "extra"},
			{"-config", "../config.yaml", "oops", "-check"},
			{"sim", "-listen", "127.0.0.1:1", "extra"},
		} {
			r := run(t, nil, args...)
			if r.code == 0 || !strings.Contains(r.stderr, "unexpected argument") || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
				t.Errorf("%q: exit %d, stderr %q; want non-zero and one line naming the argument", args, r.code, r.stderr)
			}
		}
	})
	t.Run("check shipped config", func(t *testing.T) {
		r := run(t, nil, "-config", "../config.yaml", "-check")
		if r.code != 0 {
			t.Errorf("-check ../config.yaml: exit %d, output %q%q; want 0", r.code, r.stdout, r.stderr)
		}
	})

	// Every bad config has the distinctive keys in it, from the
	// environment and literally, so a message quoting a value would leak.
	env := []string{envDemoKey + "=" + secretDemoKey, envBasicKey + "=" + secretBasicKey}
	base := func(listen string, extra string) string {
		return "listen: " + listen + "\nadmin_listen: " + freeAddr(t) + "\n" +
			"accounts:\n" +
			"  - {user_name: demo, api_key: ${" + envDemoKey + "}}\n" +
			"  - {user_name: other, api_key: " + secretLiteralKey + ", auth: apikey}\n" + extra
	}
	tests := []struct {
		name   string
		config string
		want   []string // substrings of the one stderr line
	}{
		{"unknown key", base(freeAddr(t), "lisen: 127.0.0.1:1\n"), []string{"lisen", ":6:"}},
		{"bad duration", base(freeAddr(t), "cache:\n  ttl: 30\n"), []string{"cache.ttl", ":7:"}},
		{"bad upstream url", base(freeAddr(t), "upstream:\n  url: ftp://in1-ccaas-api.ozonetel.com\n"), []string{"upstream.url", ":7:"}},
		{"duplicate account", base(freeAddr(t), "  - {user_name: demo, api_key: ${"+envBasicKey+"}}\n"), []string{"accounts[2].user_name", ":6:"}},
		{"client_auth off on all interfaces", base("0.0.0.0:"+port(t), "client_auth: off\n"), []string{"client_auth", "loopback"}},
		{"unset variable", base(freeAddr(t), "  - {user_name: third, api_key: ${E2E_NEVER_SET}}\n"), []string{"E2E_NEVER_SET", ":6:"}},
		{"bad auth next to a literal key", base(freeAddr(t), "  - {user_name: fourth, api_key: "+secretLiteralKey+"x, auth: basic}\n"), []string{"accounts[2].auth"}},
		{"route on a path that is not canonical", base(freeAddr(t), "routes:\n  - {name: x, path: /ca_apis//x}\n"), []string{"routes", "canonical"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := t.TempDir() + "/config.yaml"
			if err := os.WriteFile(path, []byte(tt.config), 0o600); err != nil {
				t.Fatal(err)
			}
			for _, mode := range [][]string{{"-config", path, "-check"}, {"-config", path}} {
				r := run(t, env, mode...)
				if check := len(mode) == 3; r.code == 0 || (check && r.code != 1) {
					t.Errorf("%v: exit %d, want 1 with -check, non-zero without; stderr %q", mode, r.code, r.stderr)
				}
				if r.stdout != "" {
					t.Errorf("%v: stdout %q, want nothing", mode, r.stdout)
				}
				if strings.Count(r.stderr, "\n") != 1 || !strings.HasSuffix(r.stderr, "\n") {
					t.Errorf("%v: stderr is not exactly one line: %q", mode, r.stderr)
				}
				for _, w := range tt.want {
					if !strings.Contains(r.stderr, w) {
						t.Errorf("%v: stderr %q does not name %q", mode, r.stderr, w)
					}
				}
				// run has checked the output for every secret of the suite.
			}
		})
	}
}

// port returns a port that was free just now.
func port(t *testing.T) string {
	addr := freeAddr(t)
	return addr[strings.LastIndex(addr, ":")+1:]
}

// TestSimStandalone runs "caproxy sim" alone, as a load-test target.
func TestSimStandalone(t *testing.T) {
	s := startSim(t)
	c := newClient(t)
	r := c.do(http.MethodPost, s.url()+cloudagent.PathGenerateToken, `{"userName":"demo"}`, cloudagent.HeaderAPIKey, demoKey)
	var tok cloudagent.TokenResponse
	if r.code != http.StatusOK || json.Unmarshal([]byte(r.body), &tok) != nil || tok.Token == "" {
		t.Fatalf("generateToken: HTTP %d %s, want 200 with a token", r.code, r.body)
	}
	addSecret(tok.Token)
	if !upstreamTokenRun.MatchString(tok.Token) {
		t.Errorf("simulator token %q is not 32+ lowercase hex digits: the leak check in this suite must follow its format", tok.Token)
	}
	st := s.stats(t, c)
	if st.TokenGenerations != 1 || st.PerAccount["demo"].TokenGenerations != 1 {
		t.Errorf("stats after one generation: %+v", st)
	}
}

// TestProxyOwnsTheToken puts caproxy in front of a separate simulator
// process and checks that bursts are coalesced and that the proxy alone
// generates the upstream token.
func TestProxyOwnsTheToken(t *testing.T) {
	s := startSim(t, "-data", writeSimData(t, account{"demo", secretDemoKey, "token"}))
	p := startProxy(t, proxyConfig{
		Upstream: s.url(),
		Accounts: []account{{"demo", "${" + envDemoKey + "}", "token"}},
	}, envDemoKey+"="+secretDemoKey)
	c := newClient(t)

	const requests, agents = 100, 10
	results := make([]error, requests)
	var wg sync.WaitGroup
	for i := range requests {
		wg.Go(func() {
			agent := fmt.Sprintf("agent%03d", i%agents+1)
			r, err := c.try(http.MethodPost, p.url(cloudagent.PathAHT), ahtBody("demo", agent), cloudagent.HeaderAPIKey, secretDemoKey)
			if err == nil {
				err = agentAHTProblem(r, agent, "")
			}
			results[i] = err
		})
	}
	wg.Wait()
	for i, err := range results {
		if err != nil {
			t.Errorf("burst request %d: %v", i, err)
		}
	}
	st := s.stats(t, c)
	if st.AHTAdmitted != agents || st.AHTCalls != agents || st.TokenGenerations != 1 {
		t.Fatalf("after %d requests for %d agents the simulator saw %d AHT calls, %d admitted, %d token generations; want %d, %d, 1",
			requests, agents, st.AHTCalls, st.AHTAdmitted, st.TokenGenerations, agents, agents)
	}

	// Apps that generate tokens through caproxy get caproxy's own.
	var tokens []string
	for range 5 {
		r := c.do(http.MethodPost, p.url(cloudagent.PathGenerateToken), `{"userName":"demo"}`, cloudagent.HeaderAPIKey, secretDemoKey)
		var tok cloudagent.TokenResponse
		if r.code != http.StatusOK || json.Unmarshal([]byte(r.body), &tok) != nil || tok.Token == "" {
			t.Fatalf("generateToken through caproxy: HTTP %d %s, want 200 with a token", r.code, r.body)
		}
		addSecret(tok.Token)
		tokens = append(tokens, tok.Token)
	}
	if st := s.stats(t, c); st.TokenGenerations != 1 {
		t.Fatalf("after 5 generateToken calls through caproxy the simulator generated %d tokens, want 1", st.TokenGenerations)
	}
	for i, tok := range tokens {
		r := c.do(http.MethodPost, p.url(cloudagent.PathAHT), ahtBody("demo", "agent001"), cloudagent.HeaderAuthorization, "Bearer "+tok)
		checkAgentAHT(t, r, "agent001", "HIT")
		if i == 0 {
			// A miss with a caproxy token reaches the upstream with the
			// proxy's own token.
			r := c.do(http.MethodPost, p.url(cloudagent.PathAHT), ahtBody("demo", "agent050"), cloudagent.HeaderAuthorization, "Bearer "+tok)
			checkAgentAHT(t, r, "agent050", "MISS")
		}
	}
	r := c.do(http.MethodPost, p.url(cloudagent.PathAHT), ahtBody("demo", "agent001"), cloudagent.HeaderAuthorization, "Bearer "+tokens[0]+"x")
	// The refusal names the token (issue 18), not CloudAgent's key message.
	checkError(t, r, http.StatusUnauthorized, "token is invalid or expired")
	if st := s.stats(t, c); st.TokenGenerations != 1 || st.AHTAdmitted != agents+1 {
		t.Fatalf("simulator saw %d token generations and %d admitted AHT calls, want 1 and %d", st.TokenGenerations, st.AHTAdmitted, agents+1)
	}
}

// TestReload changes the config under a running proxy with SIGHUP.
func TestReload(t *testing.T) {
	s := startSim(t)
	cfg := proxyConfig{Upstream: s.url(), TTL: "30s"}
	p := startProxy(t, cfg)
	c := newClient(t)

	checkAgentAHT(t, c.aht(p, demoKey, "demo", "agent001"), "agent001", "MISS")
	checkError(t, c.aht(p, demoBasicKey, "demo-basic", "agent002"), http.StatusUnauthorized, cloudagent.MsgInvalidCredentials)

	cfg.TTL = "45s"
	cfg.Accounts = []account{{"demo", demoKey, "token"}, {"demo-basic", demoBasicKey, "apikey"}}
	p.writeConfig(t, cfg.render(p.listen, p.admin))
	p.signal(t, syscall.SIGHUP)
	p.waitLog(t, "config reloaded", 1)

	checkAgentAHT(t, c.aht(p, demoBasicKey, "demo-basic", "agent002"), "agent002", "MISS")
	checkAgentAHT(t, c.aht(p, demoKey, "demo", "agent001"), "agent001", "HIT")
	// A miss of the token account goes upstream with the token it had.
	checkAgentAHT(t, c.aht(p, demoKey, "demo", "agent004"), "agent004", "MISS")
	st := s.stats(t, c)
	if st.TokenGenerations != 1 || st.PerAccount["demo-basic"].AHTAdmitted != 1 {
		t.Fatalf("after the reload the simulator saw %d token generations and %d demo-basic AHT calls, want 1 and 1",
			st.TokenGenerations, st.PerAccount["demo-basic"].AHTAdmitted)
	}

	// An invalid file is refused and the running config stays.
	p.writeConfig(t, cfg.render(p.listen, p.admin)+"cache_ttl: 5s\n")
	p.signal(t, syscall.SIGHUP)
	p.waitLog(t, "reload refused", 1)
	if line := p.logLine("reload refused"); !strings.Contains(line, "cache_ttl") {
		t.Errorf("the refusal does not name the problem: %q", line)
	}
	if p.exited() {
		t.Fatalf("caproxy exited after a refused reload; output:\n%s", p.out.String())
	}
	checkAgentAHT(t, c.aht(p, demoKey, "demo", "agent001"), "agent001", "HIT")
	checkAgentAHT(t, c.aht(p, demoBasicKey, "demo-basic", "agent002"), "agent002", "HIT")
	checkAgentAHT(t, c.aht(p, demoBasicKey, "demo-basic", "agent003"), "agent003", "MISS")
	checkAgentAHT(t, c.aht(p, demoKey, "demo", "agent005"), "agent005", "MISS")
	if st := s.stats(t, c); st.TokenGenerations != 1 {
		t.Fatalf("after the refused reload the simulator saw %d token generations, want 1", st.TokenGenerations)
	}
	if n := strings.Count(p.out.String(), "config reloaded"); n != 1 {
		t.Errorf("%d reloads logged, want 1", n)
	}
}

// TestSIGTERMDrains stops a proxy while a slow upstream call is in flight.
func TestSIGTERMDrains(t *testing.T) {
	s := startSim(t, "-latency", "500ms")
	p := startProxy(t, proxyConfig{Upstream: s.url()})
	c := newClient(t)

	done := make(chan error, 1)
	go func() {
		r, err := c.try(http.MethodPost, p.url(cloudagent.PathAHT), ahtBody("demo", "agent007"), cloudagent.HeaderAPIKey, demoKey)
		if err == nil {
			err = agentAHTProblem(r, "agent007", "MISS")
		}
		done <- err
	}()
	// The request is in flight at the proxy once the simulator has been
	// asked for the token the proxy needs to answer it (every answer of the
	// simulator then takes 500 ms).
	eventually(t, waitEvent, "the simulator to see a token generation", func() bool {
		return s.stats(t, c).TokenGenerations >= 1
	}, p.process)
	select {
	case err := <-done:
		t.Fatalf("the request ended before SIGTERM was sent (simulator too fast for this test): %v", err)
	default:
	}
	p.signal(t, syscall.SIGTERM)

	eventually(t, waitEvent, "new connections to the draining proxy to be refused", func() bool {
		return connRefused(p.listen)
	}, nil)
	if err := <-done; err != nil {
		t.Errorf("in-flight request during drain: %v", err)
	}
	if code := p.wait(t); code != 0 {
		t.Errorf("caproxy exited with %d after SIGTERM, want 0; output:\n%s", code, p.out.String())
	}
	if !connRefused(p.listen) || !connRefused(p.admin) {
		t.Error("caproxy's ports still accept connections after exit")
	}
}

// TestSecretsStayOut runs the proxy at debug level in both log formats
// through token generation, use, rejection and regeneration, and checks that
// no key or token reaches its output. (Every process of the suite is also
// checked when its test ends and when the suite ends.)
func TestSecretsStayOut(t *testing.T) {
	for _, format := range []string{"json", "text"} {
		t.Run(format, func(t *testing.T) {
			s := startSim(t, "-data", writeSimData(t,
				account{"demo", secretDemoKey, "token"},
				account{"demo-basic", secretBasicKey, "apikey"}))
			p := startProxy(t, proxyConfig{
				Upstream: s.url(),
				Accounts: []account{
					{"demo", "${" + envDemoKey + "}", "token"},
					{"demo-basic", "${" + envBasicKey + "}", "apikey"},
				},
				LogLevel:  "debug",
				LogFormat: format,
			}, envDemoKey+"="+secretDemoKey, envBasicKey+"="+secretBasicKey)
			c := newClient(t)

			checkAgentAHT(t, c.aht(p, secretDemoKey, "demo", "agent001"), "agent001", "MISS")
			checkAgentAHT(t, c.aht(p, secretDemoKey, "demo", "agent001"), "agent001", "HIT")
			checkAgentAHT(t, c.aht(p, secretBasicKey, "demo-basic", "agent001"), "agent001", "MISS")
			checkError(t, c.aht(p, secretDemoKey+"-wrong", "demo", "agent001"), http.StatusUnauthorized, cloudagent.MsgInvalidCredentials)
			checkError(t, c.aht(p, secretBasicKey, "demo", "agent001"), http.StatusUnauthorized, cloudagent.MsgInvalidCredentials)

			r := c.do(http.MethodPost, p.url(cloudagent.PathGenerateToken), `{"userName":"demo"}`, cloudagent.HeaderAPIKey, secretDemoKey)
			var tok cloudagent.TokenResponse
			if json.Unmarshal([]byte(r.body), &tok) != nil || tok.Token == "" {
				t.Fatalf("generateToken through caproxy: HTTP %d %s", r.code, r.body)
			}
			addSecret(tok.Token)
			bearer := "Bearer " + tok.Token
			checkAgentAHT(t, c.do(http.MethodPost, p.url(cloudagent.PathAHT), ahtBody("demo", "agent002"), cloudagent.HeaderAuthorization, bearer), "agent002", "MISS")

			// Pass-through with the proxy's upstream token injected.
			r = c.do(http.MethodPost, p.url(sim.PathAgentDetails), `{"userName":"demo"}`, cloudagent.HeaderAuthorization, bearer)
			if r.code != http.StatusOK || !cloudagent.IsSuccess([]byte(r.body)) {
				t.Fatalf("AgentDetails through caproxy: HTTP %d %s", r.code, r.body)
			}

			// Someone else generates a token for the account: the proxy's
			// token is now refused upstream, and the proxy must drop it,
			// generate another and retry, logging all that without tokens.
			r = c.do(http.MethodPost, s.url()+cloudagent.PathGenerateToken, `{"userName":"demo"}`, cloudagent.HeaderAPIKey, secretDemoKey)
			if json.Unmarshal([]byte(r.body), &tok) != nil || tok.Token == "" {
				t.Fatalf("generateToken at the simulator: HTTP %d %s", r.code, r.body)
			}
			addSecret(tok.Token)
			checkAgentAHT(t, c.aht(p, secretDemoKey, "demo", "agent003"), "agent003", "MISS")
			if st := s.stats(t, c); st.TokenGenerations != 3 {
				t.Errorf("simulator saw %d token generations, want 3 (proxy, intruder, proxy again)", st.TokenGenerations)
			}

			p.signal(t, syscall.SIGTERM)
			if code := p.wait(t); code != 0 {
				t.Errorf("caproxy exited with %d, want 0", code)
			}
			out := p.out.String()
			for _, want := range []string{"generated upstream token", "upstream token rejected"} {
				if !strings.Contains(out, want) {
					t.Errorf("output lacks %q, so this test did not exercise what it meant to; output:\n%s", want, out)
				}
			}
			checkOutput(t, "caproxy", out)
		})
	}
}

// TestAdmin covers the admin listener: health, metrics, purge and budget.
func TestAdmin(t *testing.T) {
	p := startProxy(t, proxyConfig{})
	c := newClient(t)

	if r := c.do(http.MethodGet, p.adminURL("/healthz"), ""); r.code != http.StatusOK {
		t.Errorf("/healthz: HTTP %d %s", r.code, r.body)
	}
	if got := remaining(t, c, p); got != 50 {
		t.Errorf("budget before any call: %d remaining, want 50", got)
	}
	checkAgentAHT(t, c.aht(p, demoKey, "demo", "agent001"), "agent001", "MISS")
	if got := remaining(t, c, p); got != 49 {
		t.Errorf("budget after a miss: %d remaining, want 49", got)
	}
	checkAgentAHT(t, c.aht(p, demoKey, "demo", "agent001"), "agent001", "HIT")
	if got := remaining(t, c, p); got != 49 {
		t.Errorf("budget after a hit: %d remaining, want 49 (hits are free)", got)
	}
	if got := metric(t, c, p, "caproxy_requests_total", `route="aht"`, `outcome="hit"`); got != 1 {
		t.Errorf("caproxy_requests_total{route=aht,outcome=hit} = %v after one hit, want 1", got)
	}

	for _, purge := range []string{"/admin/cache/purge?account=demo&agentId=agent001", "/admin/cache/purge?all=true"} {
		if r := c.do(http.MethodPost, p.adminURL(purge), ""); r.code != http.StatusOK {
			t.Fatalf("POST %s: HTTP %d %s", purge, r.code, r.body)
		}
		checkAgentAHT(t, c.aht(p, demoKey, "demo", "agent001"), "agent001", "MISS")
		checkAgentAHT(t, c.aht(p, demoKey, "demo", "agent001"), "agent001", "HIT")
	}
	if got := remaining(t, c, p); got != 47 {
		t.Errorf("budget after three misses: %d remaining, want 47", got)
	}
	if got := metric(t, c, p, "caproxy_requests_total", `route="aht"`, `outcome="miss"`); got != 3 {
		t.Errorf("caproxy_requests_total{route=aht,outcome=miss} = %v, want 3", got)
	}
}

// remaining reads the demo account's remaining budget from /admin/budget.
func remaining(t *testing.T, c *client, p *caproxy) int64 {
	t.Helper()
	r := c.do(http.MethodGet, p.adminURL("/admin/budget"), "")
	var budgets map[string]struct {
		Limit     int64 `json:"limit"`
		Remaining int64 `json:"remaining"`
	}
	if r.code != http.StatusOK || json.Unmarshal([]byte(r.body), &budgets) != nil {
		t.Fatalf("/admin/budget: HTTP %d %s", r.code, r.body)
	}
	b, ok := budgets["demo"]
	if !ok || b.Limit != 50 {
		t.Fatalf("/admin/budget: %s, want the demo account with limit 50", r.body)
	}
	return b.Remaining
}

var sampleRe = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\} (\S+)$`)

// metric returns the value of the sample of name whose labels include all of
// labels (each `key="value"`), from the admin /metrics page.
func metric(t *testing.T, c *client, p *caproxy, name string, labels ...string) float64 {
	t.Helper()
	r := c.do(http.MethodGet, p.adminURL("/metrics"), "")
	if r.code != http.StatusOK {
		t.Fatalf("/metrics: HTTP %d", r.code)
	}
next:
	for _, line := range strings.Split(r.body, "\n") {
		m := sampleRe.FindStringSubmatch(line)
		if m == nil || m[1] != name {
			continue
		}
		have := strings.Split(m[2], ",")
		for _, l := range labels {
			if !slices.Contains(have, l) {
				continue next
			}
		}
		v, err := strconv.ParseFloat(m[3], 64)
		if err != nil {
			t.Fatalf("/metrics: bad sample %q", line)
		}
		return v
	}
	t.Fatalf("/metrics has no %s with %v:\n%s", name, labels, r.body)
	return 0
}
