package proxy_test

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caproxy/caproxy/cloudagent"
)

// sample is the value of the series line name{labels} in /metrics text (the
// labels as client_golang writes them: sorted, quoted); ok is false when
// the series is absent.
func sample(text, series string) (v float64, ok bool) {
	for line := range strings.Lines(text) {
		if rest, found := strings.CutPrefix(line, series+" "); found {
			f, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			return f, err == nil
		}
	}
	return 0, false
}

// TestObservedState: the state metrics read at scrape time say what the
// proxy's budgets, token and refresh scheduler hold.
func TestObservedState(t *testing.T) {
	clock := newFakeClock()
	h := newHarness(t, setup{clock: clock})
	for _, agent := range []string{"agent001", "agent002", "agent003", "agent001"} {
		h.aht(apikeyAccount, agent)
	}
	h.aht(tokenAccount, "agent001")
	text := h.metricsText()
	want := func(series string, v float64) {
		t.Helper()
		if got, ok := sample(text, series); !ok || got != v {
			t.Errorf("%s = %v (exported %v), want %v", series, got, ok, v)
		}
	}
	// Three misses spend three calls; the hit spends none.
	want(`caproxy_budget_used{account="demo-basic",route="aht"}`, 3)
	want(`caproxy_budget_limit{account="demo-basic",route="aht"}`, float64(h.proxy.Budget.Limit()))
	want(`caproxy_budget_remaining{account="demo-basic"}`, float64(h.proxy.Budget.Limit()-3))
	// Every table route's budget, per account, at its configured limit.
	budgets := h.proxy.Budgets()
	if len(budgets) < 2 {
		t.Fatalf("Budgets() = %d, want AHT's and the table routes' with a budget", len(budgets))
	}
	for _, b := range budgets[1:] {
		for _, acct := range []string{"demo", "demo-basic"} {
			want(`caproxy_budget_limit{account="`+acct+`",route="`+b.Route+`"}`, float64(b.Budget.Limit()))
			want(`caproxy_budget_used{account="`+acct+`",route="`+b.Route+`"}`, 0)
		}
	}
	// demo's one miss generated one token; 90 s on, the window's calls
	// have left it, and the token is 90 s old.
	clock.Advance(90 * time.Second)
	text = h.metricsText()
	want(`caproxy_budget_used{account="demo-basic",route="aht"}`, 0)
	want(`caproxy_token_generations_hour{account="demo"}`, 1)
	want(`caproxy_token_generations_hour_limit{account="demo"}`, 10)
	want(`caproxy_token_age_seconds{account="demo"}`, 90)
	if _, ok := sample(text, `caproxy_token_age_seconds{account="demo-basic"}`); ok {
		t.Error("an apikey account has a token age")
	}
	want(`caproxy_ready`, 1)
	// Refresh-ahead is off: nothing tracked, nothing scarce.
	want(`caproxy_refresh_tracked_keys`, 0)
	want(`caproxy_refresh_scarce{account="demo"}`, 0)

	// An hour on, the guard's hour is empty again; the counter is not.
	clock.Advance(time.Hour)
	text = h.metricsText()
	want(`caproxy_token_generations_hour{account="demo"}`, 0)
	want(`caproxy_token_generations_total{account="demo"}`, 1)
}

// TestRefreshTrackedMetric: with refresh-ahead on, each key asked for is
// tracked.
func TestRefreshTrackedMetric(t *testing.T) {
	h := newHarness(t, setup{clock: newFakeClock(), refresh: true})
	for _, agent := range []string{"agent001", "agent002", "agent001"} {
		h.aht(apikeyAccount, agent)
	}
	if got, ok := sample(h.metricsText(), "caproxy_refresh_tracked_keys"); !ok || got != 2 {
		t.Errorf("caproxy_refresh_tracked_keys = %v (%v), want the 2 keys asked for", got, ok)
	}
}

// TestReadyMetricFollowsReadyz: while no token can be generated,
// caproxy_ready is 0 and /readyz 503, and the failed generation still
// counts in the guard's hour (it took its slot before calling CloudAgent).
func TestReadyMetricFollowsReadyz(t *testing.T) {
	h := newHarness(t, setup{clock: newFakeClock(), front: func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == cloudagent.PathGenerateToken {
				cloudagent.WriteError(w, http.StatusServiceUnavailable, "generation down for this test")
				return
			}
			next.ServeHTTP(w, r)
		})
	}})
	if code, _ := h.admin("GET", "/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz before any token is needed: %d", code)
	}
	if got, _ := sample(h.metricsText(), "caproxy_ready"); got != 1 {
		t.Fatalf("caproxy_ready = %v while /readyz is 200", got)
	}
	if r := h.aht(tokenAccount, "agent001"); r.code == http.StatusOK {
		t.Fatalf("miss without a token: %d %s", r.code, r.body)
	}
	code, body := h.admin("GET", "/readyz")
	if code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz after a failed generation: %d %s", code, body)
	}
	text := h.metricsText()
	if got, ok := sample(text, "caproxy_ready"); !ok || got != 0 {
		t.Errorf("caproxy_ready = %v (%v) while /readyz answers %d", got, ok, code)
	}
	if got, _ := sample(text, `caproxy_token_generations_hour{account="demo"}`); got != 1 {
		t.Errorf("caproxy_token_generations_hour = %v after one failed generation, want 1", got)
	}
	if _, ok := sample(text, `caproxy_token_age_seconds{account="demo"}`); ok {
		t.Error("a token age without a token")
	}
}
