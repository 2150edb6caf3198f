package proxy_test

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestBudgetHoldsUnderLoad drives demand far above the budget with
// production's numbers (50 calls a minute, the send window's margin, a 30 s
// ttl) against a simulator enforcing CloudAgent's 50 in any trailing
// minute, and checks the simulator never saw more than 50 arrive in one
// minute and never had to refuse a call.
//
// It runs on the fake clock, in rounds: each round eight clients ask at
// once, then the clock moves half a second. No time passes between
// caproxy taking a slot and the call arriving, so the check is exactly
// the budget's logic under concurrent demand; on the wall clock a loaded
// machine's scheduling delays between send and arrival were measured too,
// and made the test flaky. That the send window's margin absorbs a real
// one-way delay is TestSendWindowMarginAbsorbsOneWayDelay's job.
func TestBudgetHoldsUnderLoad(t *testing.T) {
	const perWindow = 50
	clock := newFakeClock()
	start := clock.Now()
	h := newHarness(t, setup{clock: clock, perWindow: perWindow, window: time.Minute, ttl: 30 * time.Second})
	var (
		mu       sync.Mutex
		outcomes = map[string]int{}
		problems []string
	)
	note := func(r reply) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case r.code == 200:
			outcomes[r.header.Get("X-Cache")]++
		case r.code == http.StatusTooManyRequests:
			outcomes["429"]++
			if s, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || s < 1 {
				problems = append(problems, "429 without a valid Retry-After: "+r.header.Get("Retry-After"))
			}
		default:
			problems = append(problems, fmt.Sprintf("HTTP %d %s", r.code, r.body))
		}
	}
	// A burst of 80 distinct agents at once.
	var wg sync.WaitGroup
	for i := range 80 {
		wg.Go(func() { note(h.aht(apikeyAccount, fmt.Sprintf("agent%03d", i+1))) })
	}
	wg.Wait()
	// Then demand above the budget for three minutes: 8 clients at once
	// every half second, cycling over 120 agents (each asked every 7.5 s,
	// so each needs 4 calls a minute to stay fresh: 480, against 50).
	const run = 3 * time.Minute
	for round := 0; clock.Now().Sub(start) < run; round++ {
		clock.Advance(500 * time.Millisecond)
		for c := range 8 {
			wg.Go(func() { note(h.aht(apikeyAccount, fmt.Sprintf("agent%03d", (round*8+c)%120+1))) })
		}
		wg.Wait()
	}

	st := h.sim.Stats()
	t.Logf("outcomes %v; upstream admitted %d, limited %d, max arrived in one window %d", outcomes, st.AHTAdmitted, st.AHTLimited, st.MaxArrivalsInWindow)
	if st.AHTLimited != 0 || st.LimitViolations != 0 || st.MaxArrivalsInWindow > perWindow {
		t.Errorf("the simulator refused %d calls for its limits and saw %d arrive in one minute, limit %d",
			st.LimitViolations, st.MaxArrivalsInWindow, perWindow)
	}
	for _, p := range problems[:min(len(problems), 5)] {
		t.Error(p)
	}
	if outcomes["429"] == 0 || outcomes["STALE"] == 0 {
		t.Errorf("demand did not exceed the budget as intended: %v", outcomes)
	}
	// The budget is spent, not merely never exceeded: the full 50 in each
	// send window begun during the run (at 0, 61 s and 122 s).
	if want := int64(perWindow * 3); st.AHTAdmitted != want {
		t.Errorf("upstream admitted %d calls in %v, want %d: 50 per send window", st.AHTAdmitted, run, want)
	}
}

func TestMetricsMove(t *testing.T) {
	h := newHarness(t, setup{})
	h.aht(apikeyAccount, "agent001")
	h.aht(apikeyAccount, "agent001")
	h.aht(apikeyAccount, "agent001", "Cache-Control", "no-cache")
	h.do("POST", "/ca_apis/aht", `{"userName":"demo-basic"}`, "apiKey", apikeyAccount.APIKey)
	h.do("POST", "/ca_apis/aht", `{"userName":"demo-basic","agentId":"agent001"}`)
	text := h.metricsText()
	for _, outcome := range []string{"miss", "hit", "bypass", "invalid", "unauthorized"} {
		want := `caproxy_requests_total{outcome="` + outcome + `",route="aht"} 1`
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	for _, want := range []string{
		`caproxy_upstream_requests_total{route="aht",status="200"} 2`,
		`caproxy_cache_entries 1`,
		`caproxy_budget_remaining{account="demo-basic"} 48`,
		`caproxy_upstream_duration_seconds_count{route="aht"} 2`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	h.aht(tokenAccount, "agent001")
	if !strings.Contains(h.metricsText(), `caproxy_token_generations_total{account="demo"} 1`) {
		t.Error("token generation not counted")
	}
	if strings.Contains(text, "agent001") {
		t.Error("an agent id is a metric label")
	}
}

// metricsText is what a Prometheus scrape of the harness's registry returns.
func (h *harness) metricsText() string {
	_, body := h.admin("GET", "/metrics")
	return body
}
