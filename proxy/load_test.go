package proxy_test

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caproxy/caproxy/cloudagent/sim"
)

// TestBudgetHoldsUnderLoad drives demand far above the budget, with the
// window shortened to 1 s, and checks the simulator (which enforces the
// limit on a trailing window of its own) never had to refuse a call.
func TestBudgetHoldsUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("drives load for several seconds")
	}
	const perWindow = 50
	// caproxy counts a call when it sends it and the simulator when it
	// arrives; the margin covers that delay, as serve.go's does in production.
	h := newHarness(t, setup{
		sim:       sim.Options{Limit: perWindow, Window: time.Second},
		perWindow: perWindow, window: 1250 * time.Millisecond,
		ttl: 300 * time.Millisecond, staleTTL: time.Minute,
	})
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
	// Then steady demand above the budget for several windows: 8 clients
	// cycling over 120 agents.
	deadline := time.Now().Add(4 * time.Second)
	var sent atomic.Int64
	for c := range 8 {
		wg.Go(func() {
			for i := c; time.Now().Before(deadline); i += 8 {
				note(h.aht(apikeyAccount, fmt.Sprintf("agent%03d", i%120+1)))
				sent.Add(1)
			}
		})
	}
	wg.Wait()

	st := h.sim.Stats()
	t.Logf("outcomes %v; upstream admitted %d, limited %d, max arrived in one window %d", outcomes, st.AHTAdmitted, st.AHTLimited, st.MaxArrivalsInWindow)
	if st.AHTLimited != 0 || st.LimitViolations != 0 {
		t.Errorf("the simulator refused %d calls for its limits", st.LimitViolations)
	}
	// MaxInWindow cannot exceed the limit (the simulator refuses first);
	// arrivals, refused ones included, can.
	if st.MaxArrivalsInWindow > perWindow {
		t.Errorf("the simulator saw %d calls arrive in one window, limit %d", st.MaxArrivalsInWindow, perWindow)
	}
	for _, p := range problems[:min(len(problems), 5)] {
		t.Error(p)
	}
	if outcomes["429"] == 0 || outcomes["STALE"] == 0 {
		t.Errorf("demand did not exceed the budget as intended: %v", outcomes)
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
