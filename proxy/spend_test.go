package proxy_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/caproxy/caproxy/cloudagent"
	"github.com/caproxy/caproxy/cloudagent/sim"
	"github.com/caproxy/caproxy/config"
	"github.com/caproxy/caproxy/credential"
	"github.com/caproxy/caproxy/limit"
	"github.com/caproxy/caproxy/observe"
	"github.com/caproxy/caproxy/route"
)

// routeRemaining is what /admin/budget says is left of account's budget on
// route.
func (h *harness) routeRemaining(account, route string) int64 {
	h.t.Helper()
	code, body := h.admin("GET", "/admin/budget")
	var out map[string]observe.BudgetState
	if code != http.StatusOK || json.Unmarshal([]byte(body), &out) != nil {
		h.t.Fatalf("/admin/budget: %d %s", code, body)
	}
	rb, ok := out[account].Routes[route]
	if !ok {
		h.t.Fatalf("/admin/budget has no %s budget for %s: %s", route, account, body)
	}
	return rb.Remaining
}

// agentDetailsRoute is a table route on the simulator's AgentDetails
// endpoint with an upstream token and a budget of one call a minute;
// cached or passed through.
func agentDetailsRoute(cached bool) config.Route {
	rt := config.Route{Name: "agent_details", Path: sim.PathAgentDetails, Methods: []string{http.MethodPost},
		Auth: route.AuthToken, Budget: 1, Window: time.Minute}
	if cached {
		rt.CacheTTL = time.Minute
	}
	return rt
}

// TestRouteCallsSpendOnlyWhatReachesCloudAgent is issue 13's items 2 and 3
// for table routes, cached and passed through, as for AHT: a token that
// cannot be generated spends no slot and gets CloudAgent's reason; a call
// to an upstream refusing connections gives its slot back, and the
// upstream is left alone for a moment.
func TestRouteCallsSpendOnlyWhatReachesCloudAgent(t *testing.T) {
	for _, cached := range []bool{true, false} {
		name := map[bool]string{true: "cached", false: "passed"}[cached]
		t.Run(name+"/token refused", func(t *testing.T) {
			h := newHarness(t, setup{clock: newFakeClock(), routes: []config.Route{agentDetailsRoute(cached)}})
			upstream, _ := url.Parse(h.simSrv.URL)
			h.proxy.Settings().Accounts[tokenAccount.UserName].Upstream = &credential.TokenSource{
				UserName: tokenAccount.UserName, APIKey: "not-the-key", Endpoint: upstream,
			}
			r := h.do(http.MethodPost, sim.PathAgentDetails, `{"userName":"demo"}`, "apiKey", tokenAccount.APIKey)
			if r.code != http.StatusBadGateway || !strings.Contains(r.message(), cloudagent.MsgTokenInvalidCredentials) {
				t.Errorf("%d %s; want 502 naming CloudAgent's refusal %q", r.code, r.body, cloudagent.MsgTokenInvalidCredentials)
			}
			if n := h.routeRemaining("demo", "agent_details"); n != 1 {
				t.Errorf("%d of 1 left after a call that never went out", n)
			}
			if st := h.sim.Stats(); st.OtherCalls != 0 {
				t.Errorf("%d calls went upstream without a token", st.OtherCalls)
			}
		})
		t.Run(name+"/upstream down", func(t *testing.T) {
			clock := newFakeClock()
			h := newHarness(t, setup{clock: clock, routes: []config.Route{agentDetailsRoute(cached)}})
			// No request before the close: a kept-alive connection the
			// transport has not yet seen closed would be reused, and a
			// call that may have reached CloudAgent keeps its slot.
			h.simSrv.Close()
			sent := h.tokens.sent.Load()
			body := `{"userName":"demo-basic"}`
			r := h.do(http.MethodPost, sim.PathAgentDetails, body, "apiKey", apikeyAccount.APIKey)
			if r.code != http.StatusBadGateway || r.message() != "upstream unreachable" {
				t.Errorf("%d %s; want 502 upstream unreachable", r.code, r.body)
			}
			if n := h.routeRemaining("demo-basic", "agent_details"); n != 1 {
				t.Errorf("%d of 1 left after a call that never reached the upstream", n)
			}
			if cached {
				// Within the backoff nothing is tried; after it, again.
				h.do(http.MethodPost, sim.PathAgentDetails, body, "apiKey", apikeyAccount.APIKey)
				if n := h.tokens.sent.Load() - sent; n != 1 {
					t.Errorf("%d attempts on the unreachable upstream within one backoff, want 1", n)
				}
				clock.Advance(2 * time.Second)
				h.do(http.MethodPost, sim.PathAgentDetails, body, "apiKey", apikeyAccount.APIKey)
				if n := h.tokens.sent.Load() - sent; n != 2 {
					t.Errorf("%d attempts after the backoff, want 2", n)
				}
			}
		})
	}
}

// closeIdle drops the upstream transport's kept-alive connections, so the
// next call dials (a closed upstream then refuses it: a call never sent).
func (r *tokenRecorder) closeIdle() {
	if c, ok := r.next.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// TestWaitedCallGivesBackItsOwnSlot: a miss that waited for a slot
// (max_wait) and then could not reach CloudAgent gives back the slot it
// took when it woke, not the newest one taken before its wait, which
// another call really spent.
func TestWaitedCallGivesBackItsOwnSlot(t *testing.T) {
	clock := newFakeClock()
	h := newHarness(t, setup{clock: clock, perWindow: 2, window: time.Minute, maxWait: 90 * time.Second})
	ctx := context.Background()
	start := clock.Now()
	h.aht(apikeyAccount, "agent001") // a slot at start
	clock.Advance(10 * time.Second)
	h.aht(apikeyAccount, "agent002") // a slot at start+10s: the budget is spent
	clock.Advance(10 * time.Second)
	h.simSrv.Close()
	h.tokens.closeIdle()
	done := make(chan reply, 1)
	go func() { done <- h.aht(apikeyAccount, "agent003") }()
	for deadline := time.Now().Add(10 * time.Second); clock.Waiters() == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the miss never waited for a slot")
		}
	}
	clock.Set(start.Add(limit.SendWindow(time.Minute))) // agent001's slot frees
	if r := <-done; r.code != http.StatusBadGateway {
		t.Fatalf("miss on an unreachable upstream: %d %s, want 502", r.code, r.body)
	}
	// Once agent002's slot (start+10s) has left the window, nothing of
	// these calls is left: agent003's own slot was given back.
	clock.Set(start.Add(10*time.Second + limit.SendWindow(time.Minute) + time.Second))
	if st, err := h.proxy.Budget.State(ctx, apikeyAccount.UserName); err != nil || st.Remaining != 2 {
		t.Errorf("budget %+v, %v: want 2 of 2 free once agent002's call left the window", st, err)
	}
}
