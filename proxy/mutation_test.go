package proxy_test

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/caproxy/caproxy/cloudagent"
	"github.com/caproxy/caproxy/cloudagent/sim"
	"github.com/caproxy/caproxy/config"
	"github.com/caproxy/caproxy/daemon"
)

// TestRouteKeyHoldsTheAccount: a cached route's answers are filed under
// their account, so purging the account drops them (and no other account
// can be served them). Catches the account left out of a route's key.
func TestRouteKeyHoldsTheAccount(t *testing.T) {
	h := newHarness(t, setup{})
	ask := func() string {
		r := h.cdr(apikeyAccount, "2026-11-27", "apiKey", apikeyAccount.APIKey)
		if r.code != http.StatusOK {
			t.Fatalf("%d %s", r.code, r.body)
		}
		return r.header.Get("X-Cache")
	}
	if got := ask() + " " + ask(); got != "MISS HIT" {
		t.Fatalf("X-Cache %s; want MISS HIT", got)
	}
	code, body := h.admin("POST", "/admin/cache/purge?account="+apikeyAccount.UserName)
	var out struct{ Removed int }
	if code != http.StatusOK || json.Unmarshal([]byte(body), &out) != nil || out.Removed != 1 {
		t.Fatalf("purge %s: %d %s; want 1 removed", apikeyAccount.UserName, code, body)
	}
	if got := ask(); got != "MISS" {
		t.Fatalf("after purging the account: X-Cache %s; want MISS", got)
	}
}

// TestRouteErrorAnswerNeverCached: a route's error answer that comes with
// HTTP 200 ("status":"false") is served, never stored as a success. The
// simulator answers its report errors with real statuses, so the stand-in
// (see oddUpstream) gives the 200.
func TestRouteErrorAnswerNeverCached(t *testing.T) {
	odd := &oddUpstream{path: cloudagent.PathFetchCDRDetails, status: http.StatusOK, ctype: "application/json",
		body: `{"status":"false","message":"No Data Found"}`}
	h := newHarness(t, setup{front: odd.front})
	for i := range 2 {
		r := h.cdr(apikeyAccount, "2026-11-27", "apiKey", apikeyAccount.APIKey)
		if r.code != http.StatusOK || r.body != odd.body || r.header.Get("X-Cache") != "MISS" {
			t.Fatalf("call %d: %d X-Cache %q %s; want the error as sent, MISS", i, r.code, r.header.Get("X-Cache"), r.body)
		}
	}
	if got := odd.calls.Load(); got != 2 {
		t.Fatalf("%d upstream calls for 2 requests: the error answer was cached", got)
	}
}

// TestTimedOutCallKeepsItsSlot: a call that timed out may have reached
// CloudAgent, so its budget slot stays spent: with one call a window, the
// next miss is refused here instead of calling again.
func TestTimedOutCallKeepsItsSlot(t *testing.T) {
	h := newHarness(t, setup{sim: sim.Options{Latency: 2 * time.Second}, timeout: 200 * time.Millisecond, perWindow: 1})
	if r := h.aht(apikeyAccount, "agent001"); r.code != http.StatusGatewayTimeout {
		t.Fatalf("first: %d %s; want 504", r.code, r.body)
	}
	if r := h.aht(apikeyAccount, "agent002"); r.code != http.StatusTooManyRequests || r.message() != cloudagent.MsgLimitExceeded {
		t.Fatalf("second: %d %s; want 429: the timed-out call gave its slot back", r.code, r.body)
	}
	if got := h.sim.Stats().AHTCalls; got != 1 {
		t.Fatalf("%d upstream AHT calls; want 1", got)
	}
}

// TestWriteRouteNeverCached: a write (a placed call) is never answered
// from a cache: two identical dials place two calls; and a write route
// with a cache_ttl is refused at start.
func TestWriteRouteNeverCached(t *testing.T) {
	h := newHarness(t, setup{})
	body := `{"userName":"demo-basic","agentID":"agent1","customerNumber":"9999"}`
	for i := range 2 {
		if r := h.do(http.MethodPost, cloudagent.PathAgentManualDial, body, "apiKey", apikeyAccount.APIKey); r.code != http.StatusOK || r.header.Get("X-Cache") != "" {
			t.Fatalf("dial %d: %d X-Cache %q %s", i, r.code, r.header.Get("X-Cache"), r.body)
		}
	}
	if got := h.sim.Stats().ManualDials; got != 2 {
		t.Fatalf("%d calls placed for 2 dials", got)
	}
	s := setup{routes: []config.Route{{Name: "manual_dial", Path: cloudagent.PathAgentManualDial,
		Methods: []string{http.MethodPost}, Write: true, CacheTTL: time.Minute}}}
	cfg := s.config(h.simSrv.URL)
	cfg.Accounts = []config.Account{{UserName: apikeyAccount.UserName, APIKey: apikeyAccount.APIKey, Auth: apikeyAccount.Auth}}
	if d, err := daemon.New(context.Background(), cfg, daemon.Options{Log: h.logs}); err == nil {
		d.Close()
		t.Fatal("a cached write route was accepted")
	}
}
