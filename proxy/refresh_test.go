package proxy_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caproxy/caproxy/internal/fakeclock"
	"github.com/caproxy/caproxy/internal/redistest"
	"github.com/caproxy/caproxy/refresh"
)

// TestRefreshAheadKeepsHotKeyHit: a key asked for often is refreshed
// shortly before it expires, so its clients never wait on the upstream.
func TestRefreshAheadKeepsHotKeyHit(t *testing.T) {
	clock := newFakeClock()
	h := newHarness(t, setup{clock: clock, ttl: 30 * time.Second, refresh: true, reserve: 2})
	ctx := context.Background()
	if r := h.aht(apikeyAccount, "agent001"); r.header.Get("X-Cache") != "MISS" {
		t.Fatalf("first ask: %s", r.header.Get("X-Cache"))
	}
	for range 3 {
		h.aht(apikeyAccount, "agent001")
	}
	// Not due yet (lead 7.5 s): nothing to refresh.
	clock.Advance(20 * time.Second)
	if reason, _, ok := h.proxy.RefreshNext(ctx); ok {
		t.Fatalf("refreshed (%s) 20 s into a 30 s ttl", reason)
	}
	clock.Advance(5 * time.Second)
	h.aht(apikeyAccount, "agent001")
	reason, res, ok := h.proxy.RefreshNext(ctx)
	if !ok || reason != refresh.ReasonAhead || res != refresh.Refreshed {
		t.Fatalf("RefreshNext 25 s in = %q %v %v, want ahead, refreshed", reason, res, ok)
	}
	// Past the first answer's expiry: still a hit, 10 s old.
	clock.Advance(10 * time.Second)
	r := h.aht(apikeyAccount, "agent001")
	if r.header.Get("X-Cache") != "HIT" || r.header.Get("Age") != "10" {
		t.Fatalf("35 s in: X-Cache %s Age %s, want HIT 10", r.header.Get("X-Cache"), r.header.Get("Age"))
	}
	if n := h.sim.Stats().AHTAdmitted; n != 2 {
		t.Fatalf("simulator admitted %d calls, want 2 (the miss and one refresh)", n)
	}
	text := h.metricsText()
	if !strings.Contains(text, `caproxy_refreshes_total{reason="ahead"} 1`) {
		t.Errorf("refresh not counted:\n%s", grep(text, "caproxy_refreshes_total"))
	}
	if !strings.Contains(text, "caproxy_served_age_seconds_count 6") {
		t.Errorf("served ages not all observed:\n%s", grep(text, "caproxy_served_age_seconds_count"))
	}
}

// TestRefreshLeavesReserve: refreshes never take the last reserve slots;
// a client miss still can.
func TestRefreshLeavesReserve(t *testing.T) {
	clock := newFakeClock()
	h := newHarness(t, setup{clock: clock, ttl: 30 * time.Second, perWindow: 4, window: time.Minute, refresh: true, reserve: 2})
	ctx := context.Background()
	for _, a := range []string{"agent001", "agent002"} {
		for range 3 {
			h.aht(apikeyAccount, a)
		}
	}
	// Two calls spent, two left: both reserved.
	clock.Advance(25 * time.Second)
	h.aht(apikeyAccount, "agent001")
	h.aht(apikeyAccount, "agent002")
	reason, res, ok := h.proxy.RefreshNext(ctx)
	if !ok || res != refresh.NoBudget {
		t.Fatalf("RefreshNext with only the reserve left = %q %v %v, want no budget", reason, res, ok)
	}
	if r := h.aht(apikeyAccount, "agent003"); r.header.Get("X-Cache") != "MISS" || r.code != 200 {
		t.Fatalf("a client miss with the reserve free: %d %s", r.code, r.header.Get("X-Cache"))
	}
	if n := h.sim.Stats().AHTAdmitted; n != 3 {
		t.Fatalf("simulator admitted %d, want 3", n)
	}
}

// TestRefreshUnderScarcity: when the budget cannot keep every key fresh,
// clients of stale keys get STALE at once (no budget spent, true Age) and
// the refresher spends the budget on the oldest popular key first.
// scarce returns a refreshing proxy whose window's 3 calls went to
// agent001, agent002 and agent003, a second apart, all stale by now.
func scarce(t *testing.T) (*harness, *fakeclock.Clock) {
	clock := newFakeClock()
	h := newHarness(t, setup{clock: clock, ttl: 10 * time.Second, perWindow: 3, window: time.Minute, refresh: true, reserve: 1})
	for _, a := range []string{"agent001", "agent002", "agent003"} {
		h.aht(apikeyAccount, a)
		clock.Advance(time.Second)
	}
	clock.Advance(20 * time.Second)
	return h, clock
}

func TestRefreshUnderScarcity(t *testing.T) {
	h, clock := scarce(t) // agent001 fetched first (oldest)
	ctx := context.Background()
	// agent003 asked most.
	for range 4 {
		h.aht(apikeyAccount, "agent003")
	}
	h.aht(apikeyAccount, "agent001")
	h.aht(apikeyAccount, "agent002")
	// No slot: the refresher learns the budget is short.
	if _, res, ok := h.proxy.RefreshNext(ctx); !ok || res != refresh.NoBudget {
		t.Fatalf("RefreshNext with the budget spent = %v %v, want no budget", res, ok)
	}
	admitted := h.sim.Stats().AHTAdmitted
	r := h.aht(apikeyAccount, "agent002")
	if r.header.Get("X-Cache") != "STALE" || r.header.Get("Age") != "22" {
		t.Fatalf("a stale key's client under scarcity: %s Age %s, want STALE 22", r.header.Get("X-Cache"), r.header.Get("Age"))
	}
	// The window turns: 2 refresh slots (3 less the reserve), paced.
	clock.Advance(40 * time.Second)
	for _, a := range []string{"agent001", "agent002", "agent003", "agent003", "agent003", "agent003"} {
		h.aht(apikeyAccount, a)
	}
	if got := h.sim.Stats().AHTAdmitted; got != admitted {
		t.Fatalf("clients of stale keys under scarcity spent %d calls, want 0", got-admitted)
	}
	// Demand in the last ttl × age: agent003 (4+1) × 61 s, then agent001
	// (1+1) × 63 s, then agent002 (1+1) × 62 s.
	var order []string
	// 2 refreshes a minute, paced: one every 30 s.
	for range 15 {
		if _, res, ok := h.proxy.RefreshNext(ctx); ok && res == refresh.Refreshed {
			for _, a := range []string{"agent001", "agent002", "agent003"} {
				if r := h.aht(apikeyAccount, a); r.header.Get("Age") == "0" && !contains(order, a) {
					order = append(order, a)
				}
			}
		}
		clock.Advance(5 * time.Second)
	}
	if strings.Join(order, " ") != "agent003 agent001 agent002" {
		t.Fatalf("refresh order %v, want agent003 agent001 agent002", order)
	}
}

// TestRefreshNeverSeenKeyFirst: under scarcity a key with no answer at
// all (its client got 429) is refreshed before stale keys asked far more,
// as soon as a slot frees, and its next client gets a hit.
func TestRefreshNeverSeenKeyFirst(t *testing.T) {
	h, clock := scarce(t)
	ctx := context.Background()
	for range 5 {
		for _, a := range []string{"agent001", "agent002", "agent003"} {
			h.aht(apikeyAccount, a)
		}
	}
	if r := h.aht(apikeyAccount, "agent010"); r.code != http.StatusTooManyRequests {
		t.Fatalf("never-seen key with the budget spent: %d, want 429", r.code)
	}
	if _, res, ok := h.proxy.RefreshNext(ctx); !ok || res != refresh.NoBudget {
		t.Fatalf("RefreshNext with the budget spent = %v %v, want no budget", res, ok)
	}
	clock.Advance(40 * time.Second) // the window turns
	reason, res, ok := h.proxy.RefreshNext(ctx)
	if !ok || res != refresh.Refreshed || reason != refresh.ReasonMissing {
		t.Fatalf("first refresh once a slot freed = %q %v %v, want missing, refreshed", reason, res, ok)
	}
	if r := h.aht(apikeyAccount, "agent010"); r.code != http.StatusOK || r.header.Get("X-Cache") != "HIT" {
		t.Fatalf("never-seen key after the refresh: %d %s, want 200 HIT", r.code, r.header.Get("X-Cache"))
	}
}

// TestRefreshOffLeavesSchedulerAlone: with cache.refresh_ahead off, hits,
// misses and stale answers never reach the scheduler.
func TestRefreshOffLeavesSchedulerAlone(t *testing.T) {
	clock := newFakeClock()
	h := newHarness(t, setup{clock: clock, ttl: 10 * time.Second})
	for range 3 {
		h.aht(apikeyAccount, "agent001") // a miss, then hits
	}
	clock.Advance(20 * time.Second)
	h.aht(apikeyAccount, "agent001") // expired
	if n := h.proxy.Refresher.Len(); n != 0 {
		t.Fatalf("the scheduler tracks %d keys with refresh_ahead off, want 0", n)
	}
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// grep returns the lines of text containing s.
func grep(text, s string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestRefreshOneReplicaThroughRedis: two replicas sharing Redis (budget,
// cache) both want to refresh a hot key; the lease lets one call the
// upstream, and the other serves its answer from the shared cache.
func TestRefreshOneReplicaThroughRedis(t *testing.T) {
	clock := newFakeClock()
	// Budget, cache and refresh lease in Redis, as the daemon wires them
	// from redis.url.
	base := setup{clock: clock, ttl: 30 * time.Second, refresh: true, reserve: 2, redis: "redis://" + redistest.Start(t)}
	first := newHarness(t, base)
	b := base
	b.upstream = first
	second := newHarness(t, b)
	ctx := context.Background()

	for _, h := range []*harness{first, second, first, second, first, second} {
		h.aht(apikeyAccount, "agent001")
	}
	if n := first.sim.Stats().AHTAdmitted; n != 1 {
		t.Fatalf("simulator admitted %d before any refresh, want 1", n)
	}
	clock.Advance(25 * time.Second) // due: the last quarter of the ttl
	first.aht(apikeyAccount, "agent001")
	second.aht(apikeyAccount, "agent001")
	if _, res, ok := first.proxy.RefreshNext(ctx); !ok || res != refresh.Refreshed {
		t.Fatalf("first replica's refresh = %v %v, want refreshed", res, ok)
	}
	if _, res, ok := second.proxy.RefreshNext(ctx); !ok || res != refresh.Skipped {
		t.Fatalf("second replica's refresh = %v %v, want skipped (lease held by the first)", res, ok)
	}
	if n := first.sim.Stats().AHTAdmitted; n != 2 {
		t.Fatalf("simulator admitted %d, want 2 (one refresh for both replicas)", n)
	}
	// Past the first answer's ttl the second replica finds the refreshed
	// answer in the shared cache.
	clock.Advance(10 * time.Second)
	r := second.aht(apikeyAccount, "agent001")
	if r.header.Get("X-Cache") != "HIT" || r.header.Get("Age") != "10" {
		t.Fatalf("second replica after the refresh: %s Age %s, want HIT 10", r.header.Get("X-Cache"), r.header.Get("Age"))
	}
	if n := first.sim.Stats().AHTAdmitted; n != 2 {
		t.Fatalf("simulator admitted %d, want still 2", n)
	}
}
