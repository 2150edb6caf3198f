package proxy_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/caproxy/caproxy/cloudagent/sim"
	"github.com/caproxy/caproxy/observe"
	"github.com/caproxy/caproxy/proxy"
)

// admin calls the admin handler of h's proxy.
func (h *harness) admin(method, target string) (int, string) {
	rec := httptest.NewRecorder()
	h.daemon.AdminHandler().ServeHTTP(rec, httptest.NewRequest(method, target, nil))
	b, _ := io.ReadAll(rec.Body)
	return rec.Code, string(b)
}

func TestAdminPurge(t *testing.T) {
	h := newHarness(t, setup{})
	warm := func() {
		for _, a := range []string{"agent001", "agent002"} {
			h.aht(tokenAccount, a)
			h.aht(apikeyAccount, a)
		}
	}
	xcache := func(acct int, agent string) string {
		a := tokenAccount
		if acct == 1 {
			a = apikeyAccount
		}
		return h.aht(a, agent).header.Get("X-Cache")
	}
	warm()
	cases := []struct {
		name    string
		target  string
		removed int
		// which (account index, agent) miss afterwards; the rest hit
		misses map[string]bool
	}{
		{"one key", "/admin/cache/purge?account=demo&agentId=agent001", 1, map[string]bool{"0agent001": true}},
		{"one account", "/admin/cache/purge?account=demo-basic", 2, map[string]bool{"1agent001": true, "1agent002": true}},
		{"all", "/admin/cache/purge?all=true", 4, map[string]bool{"0agent001": true, "0agent002": true, "1agent001": true, "1agent002": true}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			warm()
			code, body := h.admin("POST", c.target)
			var out struct{ Removed int }
			if code != 200 || json.Unmarshal([]byte(body), &out) != nil || out.Removed != c.removed {
				t.Fatalf("%d %s, want removed %d", code, body, c.removed)
			}
			for _, acct := range []int{0, 1} {
				for _, agent := range []string{"agent001", "agent002"} {
					want := "HIT"
					if c.misses[string(rune('0'+acct))+agent] {
						want = "MISS"
					}
					if got := xcache(acct, agent); got != want {
						t.Errorf("account %d %s: %s, want %s", acct, agent, got, want)
					}
				}
			}
		})
	}
	if code, _ := h.admin("POST", "/admin/cache/purge?agentId=agent001"); code != 400 {
		t.Errorf("key without account: %d, want 400", code)
	}
}

// TestAdminPurgeRefusesUnknownParameters checks that a misspelt purge
// parameter, an empty account= (an unset shell variable), no parameter at
// all or a bad all= is refused rather than read as "purge everything".
func TestAdminPurgeRefusesUnknownParameters(t *testing.T) {
	h := newHarness(t, setup{})
	h.aht(apikeyAccount, "agent001")
	h.aht(tokenAccount, "agent001")
	for _, query := range []string{"?acount=" + apikeyAccount.UserName, "?account=" + apikeyAccount.UserName + "&agentid=agent001",
		"?account=", "", "?all=1", "?all=true&account=" + apikeyAccount.UserName} {
		if code, body := h.admin("POST", "/admin/cache/purge"+query); code != http.StatusBadRequest {
			t.Errorf("purge%s: %d %s, want 400", query, code, body)
		}
	}
	for _, a := range []sim.Account{apikeyAccount, tokenAccount} {
		if r := h.aht(a, "agent001"); r.header.Get("X-Cache") != "HIT" {
			t.Errorf("%s after refused purges: X-Cache %q, want HIT (nothing purged)", a.UserName, r.header.Get("X-Cache"))
		}
	}
}

func TestAdminBudgetAndProbes(t *testing.T) {
	h := newHarness(t, setup{clock: newFakeClock()})
	h.aht(apikeyAccount, "agent001")
	if r := h.cdr(apikeyAccount, "2026-11-27", "apiKey", apikeyAccount.APIKey); r.code != http.StatusOK {
		t.Fatalf("fetchCDRDetails: %d %s", r.code, r.body)
	}
	code, body := h.admin("GET", "/admin/budget")
	var out map[string]observe.BudgetState
	if code != 200 || json.Unmarshal([]byte(body), &out) != nil {
		t.Fatalf("%d %s", code, body)
	}
	if b := out["demo-basic"]; b.Limit != 50 || b.Remaining != 49 {
		t.Errorf("demo-basic: %+v, want limit 50 remaining 49", b)
	}
	if b := out["demo"]; b.Remaining != 50 {
		t.Errorf("demo: %+v, want remaining 50", b)
	}
	// Route budgets are the account's too, each with its own count.
	for _, c := range []struct {
		account, route string
		remaining      int64
	}{
		{"demo-basic", "cdr_details", 1},
		{"demo-basic", "cdr_pages", 2},
		{"demo", "cdr_details", 2},
	} {
		rb, ok := out[c.account].Routes[c.route]
		if !ok || rb.Limit != 2 || rb.Remaining != c.remaining || rb.Mode != proxy.BudgetLocal {
			t.Errorf("%s %s: %+v (present %v), want limit 2 remaining %d mode %s", c.account, c.route, rb, ok, c.remaining, proxy.BudgetLocal)
		}
	}
	if _, ok := out["demo"].Routes["manual_dial"]; ok {
		t.Error("manual_dial has no budget, yet /admin/budget shows one")
	}
	for _, p := range []string{"/healthz", "/readyz"} {
		if code, body := h.admin("GET", p); code != http.StatusOK {
			t.Errorf("%s: %d %s", p, code, body)
		}
	}
	if code, body := h.admin("GET", "/metrics"); code != 200 || !strings.Contains(body, "caproxy_requests_total") {
		t.Errorf("/metrics: %d", code)
	}
}

func TestNotReadyWithoutSettings(t *testing.T) {
	p := &proxy.Proxy{}
	if p.Ready() {
		t.Error("ready before settings were installed")
	}
}

// TestAdminToken checks that with an admin token set, everything on the
// admin listener but the probes asks for it, and that profiles are
// bounded in length.
func TestAdminToken(t *testing.T) {
	const token = "0123456789abcdef-admin"
	h := newHarness(t, setup{adminToken: token})
	handler := h.daemon.AdminHandler()
	call := func(method, target, auth string) int {
		req := httptest.NewRequest(method, target, nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, req)
		return rec.Code
	}
	for _, p := range []string{"/healthz", "/readyz"} {
		if code := call("GET", p, ""); code != http.StatusOK {
			t.Errorf("%s without a token: %d, want 200", p, code)
		}
	}
	for _, c := range []struct{ method, target string }{
		{"GET", "/metrics"}, {"GET", "/admin/budget"}, {"POST", "/admin/cache/purge"},
		{"GET", "/debug/pprof/"}, {"GET", "/debug/pprof/profile?seconds=1"},
	} {
		for _, auth := range []string{"", "Bearer wrong", token} {
			if code := call(c.method, c.target, auth); code != http.StatusUnauthorized {
				t.Errorf("%s %s with Authorization %q: %d, want 401", c.method, c.target, auth, code)
			}
		}
	}
	for _, c := range []struct{ method, target string }{
		{"GET", "/metrics"}, {"GET", "/admin/budget"}, {"POST", "/admin/cache/purge?all=true"}, {"GET", "/debug/pprof/"},
	} {
		if code := call(c.method, c.target, "Bearer "+token); code != http.StatusOK {
			t.Errorf("%s %s with the token: %d, want 200", c.method, c.target, code)
		}
	}
	for _, s := range []string{"45", "0", "x"} {
		if code := call("GET", "/debug/pprof/profile?seconds="+s, "Bearer "+token); code != http.StatusBadRequest {
			t.Errorf("profile of %s seconds: %d, want 400", s, code)
		}
	}
}

// TestMetricsListedInREADMEAreExported checks that every caproxy_ metric the
// README lists appears on /metrics from the start, before anything has
// happened: a labelled counter that is never touched is not exported at all,
// so a dashboard or check looking for it would find nothing rather than 0.
func TestMetricsListedInREADMEAreExported(t *testing.T) {
	h := newHarness(t, setup{})
	code, body := h.admin("GET", "/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d", code)
	}
	for _, series := range []string{
		`caproxy_requests_total{outcome="hit",route="aht"} 0`,
		`caproxy_shared_cache_lookups_total{result="hit"} 0`,
		`caproxy_shared_cache_lookups_total{result="miss"} 0`,
		`caproxy_shared_cache_lookups_total{result="error"} 0`,
		`caproxy_refreshes_total{reason="missing"} 0`,
		`caproxy_refreshes_total{reason="stale"} 0`,
		`caproxy_refreshes_total{reason="ahead"} 0`,
		`caproxy_coalesced_requests_total 0`,
		`caproxy_access_log_dropped_total 0`,
	} {
		if !strings.Contains(body, series) {
			t.Errorf("/metrics lacks %s", series)
		}
	}
}
