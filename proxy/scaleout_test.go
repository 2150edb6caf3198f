package proxy_test

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caproxy/caproxy/cloudagent/sim"
	"github.com/caproxy/caproxy/internal/redistest"
)

// TestReplicasShareOneBudgetThroughRedis runs two proxies, each with its
// own cache, in front of one simulator, their budgets in one real Redis:
// together they stay within the account's limit.
func TestReplicasShareOneBudgetThroughRedis(t *testing.T) {
	if testing.Short() {
		t.Skip("drives load for several seconds")
	}
	const perWindow = 30
	// The Redis budget keeps Redis's time, not the fake clock, so this
	// runs on the wall clock. What it checks is the sharing, so the
	// simulator's window is 40% shorter than caproxy's: on a loaded
	// machine (a full -race suite beside other work) a call was seen to
	// take over 250 ms from its slot to the simulator, far beyond
	// production's 1/60 margin (the margin itself is
	// TestSendWindowMarginAbsorbsOneWayDelay's, on the fake clock), while
	// two replicas not sharing send their budgets in one burst each, twice
	// the limit within milliseconds, which any window catches.
	base := setup{
		sim:       sim.Options{Limit: perWindow, Window: 750 * time.Millisecond},
		perWindow: perWindow, window: 1250 * time.Millisecond,
		ttl:   200 * time.Millisecond,
		redis: "redis://" + redistest.Start(t), // budget, tokens and cache shared, as the daemon wires them
	}
	first := newHarness(t, base)
	b := base
	b.upstream = first
	second := newHarness(t, b)

	deadline := time.Now().Add(3 * time.Second)
	var wg sync.WaitGroup
	var mu sync.Mutex
	codes := map[int]int{}
	for c := range 8 {
		h := first
		if c%2 == 1 {
			h = second
		}
		wg.Go(func() {
			for i := c; time.Now().Before(deadline); i += 8 {
				r := h.aht(apikeyAccount, fmt.Sprintf("agent%03d", i%200+1))
				mu.Lock()
				codes[r.code]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	st := first.sim.Stats()
	t.Logf("client statuses %v; upstream admitted %d, limited %d, max in one window %d", codes, st.AHTAdmitted, st.AHTLimited, st.MaxInWindow)
	if st.AHTLimited != 0 || st.LimitViolations != 0 || st.MaxArrivalsInWindow > perWindow {
		t.Errorf("two replicas went over the shared budget: %d limited, %d arrived in one window (limit %d)", st.AHTLimited, st.MaxArrivalsInWindow, perWindow)
	}
	if codes[http.StatusTooManyRequests] == 0 {
		t.Errorf("demand never exceeded the budget: %v", codes)
	}
	for code, n := range codes {
		if code >= 500 {
			t.Errorf("%d answers with HTTP %d", n, code)
		}
	}
}

func TestClientLimitPerClient(t *testing.T) {
	h := newHarness(t, setup{clientRate: 3})
	for i := 1; i <= 4; i++ {
		r := h.aht(apikeyAccount, "agent001")
		if i <= 3 && (r.code != 200 || r.header.Get("X-RateLimit-Remaining") != fmt.Sprint(3-i)) {
			t.Errorf("request %d: %d remaining %q", i, r.code, r.header.Get("X-RateLimit-Remaining"))
		}
		if i == 4 && (r.code != http.StatusTooManyRequests || r.header.Get("X-RateLimit-Limit") != "3") {
			t.Errorf("request 4: %d %v", r.code, r.header)
		}
		// Every 429 says when to come back, as the budget's refusal does:
		// within the fixed minute the client limit counts in.
		if i == 4 {
			if secs, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || secs < 1 || secs > 60 {
				t.Errorf("request 4: Retry-After %q, want 1 to 60 seconds", r.header.Get("Retry-After"))
			}
			if r.message() != "max limit exceeded" {
				t.Errorf("request 4: body %s", r.body)
			}
		}
	}
	// Another account from the same address has its own allowance.
	if r := h.aht(tokenAccount, "agent001"); r.code != 200 {
		t.Errorf("other account: %d %s", r.code, r.body)
	}
}

// TestReplicasShareTheCache: what one replica fetched, another serves as a
// hit without an upstream call, and a purge on one reaches the other.
func TestReplicasShareTheCache(t *testing.T) {
	addr := "redis://" + redistest.Start(t)
	first := newHarness(t, setup{redis: addr})
	second := newHarness(t, setup{redis: addr, upstream: first})

	a := first.aht(apikeyAccount, "agent001")
	b := second.aht(apikeyAccount, "agent001")
	if a.header.Get("X-Cache") != "MISS" || b.header.Get("X-Cache") != "HIT" || a.body != b.body {
		t.Fatalf("first %s, second %s (%s vs %s)", a.header.Get("X-Cache"), b.header.Get("X-Cache"), a.body, b.body)
	}
	if got := first.sim.Stats().AHTAdmitted; got != 1 {
		t.Errorf("upstream calls %d, want 1", got)
	}
	// Now held locally by the second replica too.
	if r := second.aht(apikeyAccount, "agent001"); r.header.Get("X-Cache") != "HIT" {
		t.Errorf("second replica, again: %s", r.header.Get("X-Cache"))
	}
	if !strings.Contains(second.metricsText(), `caproxy_shared_cache_lookups_total{result="hit"} 1`) {
		t.Error("shared hit not counted")
	}

	if code, body := first.admin("POST", "/admin/cache/purge?account=demo-basic"); code != 200 || !strings.Contains(body, `"removed_shared":1`) {
		t.Fatalf("purge: %d %s", code, body)
	}
	second.proxy.Cache.Purge() // the other replica's memory; the shared level is gone already
	if r := second.aht(apikeyAccount, "agent001"); r.header.Get("X-Cache") != "MISS" {
		t.Errorf("after purge: %s", r.header.Get("X-Cache"))
	}
}
