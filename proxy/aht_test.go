package proxy_test

import (
	"context"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caproxy/caproxy/cloudagent"
	"github.com/caproxy/caproxy/cloudagent/sim"
	"github.com/caproxy/caproxy/credential"
	"github.com/caproxy/caproxy/limit"
	"github.com/ulule/limiter/v3"
)

func TestLocalValidationMakesNoUpstreamCall(t *testing.T) {
	h := newHarness(t, setup{})
	key := []string{"apiKey", tokenAccount.APIKey}
	cases := []struct {
		name    string
		method  string
		body    string
		headers []string
		code    int
		msg     string // exact message, or a fragment when partial
		partial bool
	}{
		{"userName empty", "POST", `{"userName":"","agentId":"agent001"}`, key, 400, cloudagent.MsgUserNameEmpty, false},
		{"userName missing", "POST", `{"agentId":"agent001"}`, key, 400, cloudagent.MsgUserNameEmpty, false},
		{"both given", "POST", `{"userName":"demo","agentId":"agent001","campaignName":"campaign001"}`, key, 400, cloudagent.MsgBothGiven, false},
		{"both empty", "POST", `{"userName":"demo","agentId":"","campaignName":""}`, key, 400, cloudagent.MsgBothEmpty, false},
		{"both missing", "POST", `{"userName":"demo"}`, key, 400, cloudagent.MsgBothEmpty, false},
		{"apiKey missing", "POST", `{"userName":"demo","agentId":"agent001"}`, nil, 401, cloudagent.MsgAPIKeyEmpty, false},
		{"apiKey wrong", "POST", `{"userName":"demo","agentId":"agent001"}`, []string{"apiKey", "nope"}, 401, cloudagent.MsgInvalidCredentials, false},
		{"other account's key", "POST", `{"userName":"demo","agentId":"agent001"}`, []string{"apiKey", apikeyAccount.APIKey}, 401, cloudagent.MsgInvalidCredentials, false},
		{"account not configured", "POST", `{"userName":"stranger","agentId":"agent001"}`, key, 401, cloudagent.MsgInvalidCredentials, false},
		{"bearer not issued by caproxy", "POST", `{"userName":"demo","agentId":"agent001"}`, []string{"Authorization", "Bearer abc.def"}, 401, credential.MsgTokenInvalid, false},
		{"bare token not issued by caproxy", "POST", `{"userName":"demo","agentId":"agent001"}`, []string{"Authorization", "abc.def"}, 401, credential.MsgTokenInvalid, false},
		{"Basic credentials", "POST", `{"userName":"demo","agentId":"agent001"}`, []string{"Authorization", "Basic ZGVtbzpkZW1vLWtleQ=="}, 401, credential.MsgAuthorizationScheme, false},
		{"malformed JSON", "POST", `{"userName":"demo",`, key, 400, "JSON", true},
		{"not an object", "POST", `["demo"]`, key, 400, "object", true},
		{"empty body", "POST", ``, key, 400, "empty", true},
		{"agentId a number", "POST", `{"userName":"demo","agentId":7}`, key, 400, "agentId", true},
		{"oversized body", "POST", `{"userName":"demo","agentId":"agent001","pad":"` + strings.Repeat("x", 70<<10) + `"}`, key, 413, "larger than", true},
		{"wrong method", "GET", ``, key, 405, "POST", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := h.do(c.method, "/ca_apis/aht", c.body, c.headers...)
			if r.code != c.code {
				t.Errorf("HTTP %d, want %d (body %s)", r.code, c.code, r.body)
			}
			if r.status() != cloudagent.StatusError {
				t.Errorf("status %q, want %q: body %s", r.status(), cloudagent.StatusError, r.body)
			}
			if got := r.message(); (c.partial && !strings.Contains(got, c.msg)) || (!c.partial && got != c.msg) {
				t.Errorf("message %q, want %q", got, c.msg)
			}
		})
	}
	if st := h.sim.Stats(); st.AHTCalls != 0 || st.TokenGenerations != 0 {
		t.Errorf("bad requests reached the upstream: %+v", st)
	}
}

func TestHitMissBypassAndAge(t *testing.T) {
	clock := newFakeClock()
	h := newHarness(t, setup{clock: clock})
	first := h.aht(tokenAccount, "agent001")
	if first.code != 200 || first.header.Get("X-Cache") != "MISS" || first.status() != "success" {
		t.Fatalf("first: %d %s %s", first.code, first.header.Get("X-Cache"), first.body)
	}
	clock.Advance(7 * time.Second)
	hit := h.aht(tokenAccount, "agent001")
	if hit.header.Get("X-Cache") != "HIT" || hit.body != first.body || hit.header.Get("Age") != "7" {
		t.Fatalf("second: X-Cache %s Age %s body %s", hit.header.Get("X-Cache"), hit.header.Get("Age"), hit.body)
	}
	// Field order, spacing and unknown fields do not change the question.
	same := h.do("POST", "/ca_apis/aht", ` { "app":{"x":[1,"}"]}, "agentId" : "agent001", "userName":"demo" } `, "apiKey", tokenAccount.APIKey)
	if same.header.Get("X-Cache") != "HIT" {
		t.Errorf("reordered body: X-Cache %s", same.header.Get("X-Cache"))
	}
	bypass := h.aht(tokenAccount, "agent001", "Cache-Control", "no-cache")
	if bypass.header.Get("X-Cache") != "BYPASS" || bypass.header.Get("Age") != "0" {
		t.Errorf("no-cache: X-Cache %s Age %s", bypass.header.Get("X-Cache"), bypass.header.Get("Age"))
	}
	if got := h.sim.Stats().AHTAdmitted; got != 2 {
		t.Errorf("upstream AHT calls %d, want 2 (miss + bypass)", got)
	}
}

func TestAccountsNeverShareEntries(t *testing.T) {
	h := newHarness(t, setup{})
	for _, a := range []sim.Account{tokenAccount, apikeyAccount, tokenAccount, apikeyAccount} {
		if r := h.aht(a, "agent002"); r.code != 200 || r.status() != "success" {
			t.Fatalf("%s: %d %s", a.UserName, r.code, r.body)
		}
	}
	st := h.sim.Stats()
	for _, a := range []sim.Account{tokenAccount, apikeyAccount} {
		if got := st.PerAccount[a.UserName].AHTAdmitted; got != 1 {
			t.Errorf("%s: %d upstream calls, want 1", a.UserName, got)
		}
	}
}

func TestCoalescing200Waiters(t *testing.T) {
	h := newHarness(t, setup{sim: sim.Options{Latency: 200 * time.Millisecond}})
	const n = 200
	var wg sync.WaitGroup
	bodies := make([]string, n)
	codes := make([]int, n)
	for i := range n {
		wg.Go(func() {
			r := h.aht(tokenAccount, "agent003")
			bodies[i], codes[i] = r.body, r.code
		})
	}
	wg.Wait()
	for i := range n {
		if codes[i] != 200 || bodies[i] != bodies[0] {
			t.Fatalf("waiter %d: %d %s, want 200 %s", i, codes[i], bodies[i], bodies[0])
		}
	}
	if st := h.sim.Stats(); st.AHTAdmitted != 1 || st.TokenGenerations != 1 {
		t.Errorf("upstream saw %d AHT calls and %d token generations, want 1 and 1", st.AHTAdmitted, st.TokenGenerations)
	}
}

func TestNegativeAnswersCachedBriefly(t *testing.T) {
	clock := newFakeClock()
	h := newHarness(t, setup{clock: clock, negTTL: 10 * time.Second})
	for i, want := range []string{"MISS", "HIT"} {
		r := h.aht(tokenAccount, "no-such-agent")
		if r.message() != cloudagent.MsgInvalidAgent || r.header.Get("X-Cache") != want {
			t.Fatalf("call %d: %s %s, want %s", i, r.header.Get("X-Cache"), r.body, want)
		}
	}
	clock.Advance(11 * time.Second)
	if r := h.aht(tokenAccount, "no-such-agent"); r.header.Get("X-Cache") != "MISS" {
		t.Errorf("after negative ttl: X-Cache %s", r.header.Get("X-Cache"))
	}
	if got := h.sim.Stats().AHTAdmitted; got != 2 {
		t.Errorf("upstream calls %d, want 2", got)
	}
}

func TestStaleWhenUpstreamDown(t *testing.T) {
	clock := newFakeClock()
	h := newHarness(t, setup{clock: clock, ttl: 30 * time.Second, staleTTL: time.Minute})
	good := h.aht(tokenAccount, "agent004")
	h.simSrv.CloseClientConnections()
	h.simSrv.Close()

	clock.Advance(45 * time.Second) // past ttl, within stale_ttl
	r := h.aht(tokenAccount, "agent004")
	if r.code != 200 || r.header.Get("X-Cache") != "STALE" || r.body != good.body || r.header.Get("Age") != "45" {
		t.Errorf("stale: %d X-Cache %s Age %s %s", r.code, r.header.Get("X-Cache"), r.header.Get("Age"), r.body)
	}
	if r := h.aht(tokenAccount, "agent005"); r.code != http.StatusBadGateway || r.status() != "error" {
		t.Errorf("nothing stale: %d %s, want 502 with an error body", r.code, r.body)
	}
	clock.Advance(time.Minute) // past ttl + stale_ttl
	if r := h.aht(tokenAccount, "agent004"); r.code != http.StatusBadGateway {
		t.Errorf("past stale_ttl: %d %s, want 502", r.code, r.body)
	}
}

func TestUpstreamTimeoutIs504(t *testing.T) {
	h := newHarness(t, setup{sim: sim.Options{Latency: 2 * time.Second}, timeout: 200 * time.Millisecond})
	r := h.aht(apikeyAccount, "agent006")
	if r.code != http.StatusGatewayTimeout || r.status() != "error" {
		t.Errorf("%d %s, want 504 with an error body", r.code, r.body)
	}
}

func TestUpstream5xxServesStale(t *testing.T) {
	clock := newFakeClock()
	h := newHarness(t, setup{clock: clock})
	if r := h.aht(apikeyAccount, "agent007"); r.code != 200 || r.header.Get("X-Cache") != "MISS" {
		t.Fatalf("warming: %d %s", r.code, r.body)
	}
	clock.Advance(31 * time.Second) // past ttl, within stale_ttl
	h.sim.SetErrorRate(1)           // from now on every upstream AHT call fails
	r := h.aht(apikeyAccount, "agent007")
	if r.code != 200 || r.header.Get("X-Cache") != "STALE" || r.status() != "success" {
		t.Errorf("expired key, upstream failing: %d %s %s, want 200 STALE", r.code, r.header.Get("X-Cache"), r.body)
	}
	// With nothing stale the client gets 502.
	if r := h.aht(apikeyAccount, "agent008"); r.code != http.StatusBadGateway {
		t.Errorf("%d %s, want 502", r.code, r.body)
	}
	if got := h.sim.Stats().AHTInjectedErrors; got != 2 {
		t.Errorf("injected errors %d, want 2", got)
	}
}

func TestBudgetRefusalHeaders(t *testing.T) {
	clock := newFakeClock()
	h := newHarness(t, setup{clock: clock, perWindow: 3, window: time.Minute})
	for i := 1; i <= 3; i++ {
		if r := h.aht(apikeyAccount, "agent00"+strconv.Itoa(i)); r.code != 200 {
			t.Fatalf("call %d: %d %s", i, r.code, r.body)
		}
		clock.Advance(10 * time.Second)
	}
	r := h.aht(apikeyAccount, "agent009")
	if r.code != http.StatusTooManyRequests || r.message() != cloudagent.MsgLimitExceeded || r.status() != "error" {
		t.Fatalf("over budget: %d %s", r.code, r.body)
	}
	// The first slot frees one send window (a minute and its 1 s margin,
	// limit.SendWindow) after the first call, 31 s from now.
	for name, want := range map[string]string{"Retry-After": "31", "RateLimit-Limit": "3", "RateLimit-Remaining": "0", "RateLimit-Reset": "31"} {
		if got := r.header.Get(name); got != want {
			t.Errorf("%s: %q, want %q", name, got, want)
		}
	}
	// Hits stay free while the budget is spent.
	if r := h.aht(apikeyAccount, "agent003"); r.header.Get("X-Cache") != "HIT" {
		t.Errorf("hit while over budget: %d %s", r.code, r.header.Get("X-Cache"))
	}
	// Over budget, a stale entry beats a refusal.
	clock.Advance(25 * time.Second) // agent003 is 35 s old: stale
	if r := h.aht(apikeyAccount, "agent003"); r.header.Get("X-Cache") != "STALE" {
		t.Errorf("over budget with stale entry: %d %s %s", r.code, r.header.Get("X-Cache"), r.body)
	}
	clock.Advance(6 * time.Second) // 61 s after the first call
	if r := h.aht(apikeyAccount, "agent009"); r.code != 200 || r.header.Get("X-Cache") != "MISS" {
		t.Errorf("after a slot freed: %d %s", r.code, r.body)
	}
	if st := h.sim.Stats(); st.AHTLimited != 0 || st.AHTAdmitted != 4 {
		t.Errorf("upstream: %d admitted, %d limited; want 4 and 0", st.AHTAdmitted, st.AHTLimited)
	}
}

func TestMaxWaitWaitsForASlot(t *testing.T) {
	clock := newFakeClock()
	h := newHarness(t, setup{clock: clock, perWindow: 2, window: time.Minute, maxWait: 30 * time.Second})
	for _, agent := range []string{"agent001", "agent002"} {
		if r := h.aht(apikeyAccount, agent); r.code != 200 || r.header.Get("X-Cache") != "MISS" {
			t.Fatalf("%s: %d %s", agent, r.code, r.body)
		}
		clock.Advance(20 * time.Second)
	}
	// 40 s in: the budget is spent and the first slot frees at 61 s (the
	// send window of a minute), within max_wait, so the third miss waits
	// for it rather than failing.
	waiters := clock.Waiters()
	done := make(chan reply, 1)
	go func() { done <- h.aht(apikeyAccount, "agent003") }()
	for clock.Waiters() == waiters {
		select {
		case r := <-done:
			t.Fatalf("the miss did not wait for a slot: %d %s", r.code, r.body)
		default:
			runtime.Gosched()
		}
	}
	clock.Advance(limit.SendWindow(time.Minute) - 40*time.Second)
	if r := <-done; r.code != 200 || r.header.Get("X-Cache") != "MISS" {
		t.Fatalf("after the wait: %d %s", r.code, r.body)
	}
	if st := h.sim.Stats(); st.AHTAdmitted != 3 || st.AHTLimited != 0 {
		t.Errorf("upstream: %+v", st)
	}
}

func TestUpstreamLimitExceededSpendsTheBudget(t *testing.T) {
	h := newHarness(t, setup{sim: sim.Options{Limit: 2}})
	// Another app spends the account's upstream limit outside caproxy.
	for range 2 {
		h.direct(cloudagent.PathAHT, `{"userName":"demo-basic","agentId":"agent001"}`, apikeyAccount)
	}
	r := h.aht(apikeyAccount, "agent002")
	if r.code != http.StatusTooManyRequests || r.message() != cloudagent.MsgLimitExceeded || r.header.Get("Retry-After") == "" {
		t.Fatalf("%d %s", r.code, r.body)
	}
	calls := h.sim.Stats().AHTCalls
	// The budget is now spent for a window: no call goes upstream.
	for _, agent := range []string{"agent003", "agent004"} {
		if r := h.aht(apikeyAccount, agent); r.code != http.StatusTooManyRequests {
			t.Errorf("%s: %d", agent, r.code)
		}
	}
	if got := h.sim.Stats().AHTCalls; got != calls {
		t.Errorf("caproxy retried into the limit: %d upstream calls, want %d", got, calls)
	}
	if !strings.Contains(h.logs.String(), "max limit exceeded") {
		t.Error("no log line about the upstream limit")
	}
}

// panickyStore is a budget store with a bug: Get panics for the AHT budget
// (not the token-generation guard, so a token can still be had).
type panickyStore struct{ *limit.MemoryStore }

func (s panickyStore) Get(ctx context.Context, key string, rate limiter.Rate) (limiter.Context, error) {
	if !strings.HasPrefix(key, "tokengen:") {
		panic("budget store bug")
	}
	return s.MemoryStore.Get(ctx, key, rate)
}

// TestPanicInFetchIs502 checks that a panic inside a coalesced fetch
// reaches every waiter as a CloudAgent-shaped 502, and is logged.
func TestPanicInFetchIs502(t *testing.T) {
	h := newHarness(t, setup{store: panickyStore{limit.NewMemoryStore()}})
	var wg sync.WaitGroup
	replies := make([]reply, 5)
	for i := range replies {
		wg.Go(func() { replies[i] = h.aht(tokenAccount, "agent001") })
	}
	wg.Wait()
	for i, r := range replies {
		if r.code != http.StatusBadGateway || r.status() != "error" || r.message() != "internal error" {
			t.Errorf("waiter %d: %d %q; want 502 with a CloudAgent error body", i, r.code, r.body)
		}
	}
	if !strings.Contains(h.logs.String(), "AHT fetch panicked") || !strings.Contains(h.logs.String(), "budget store bug") {
		t.Errorf("the panic was not logged:\n%s", h.logs.String())
	}
}

// TestUnreachableUpstreamSpendsNoBudget is issue 13's outage: with the
// upstream refusing connections, misses on expired keys are served stale,
// the calls that never reached CloudAgent give their slots back, and the
// upstream is left alone for a moment after each failure.
func TestUnreachableUpstreamSpendsNoBudget(t *testing.T) {
	clock := newFakeClock()
	h := newHarness(t, setup{clock: clock})
	ctx := context.Background()
	agents := []string{"agent001", "agent002", "agent003", "agent004", "agent005"}
	for _, a := range agents {
		if r := h.aht(tokenAccount, a); r.code != 200 {
			t.Fatalf("%s: %d %s", a, r.code, r.body)
		}
	}
	before, _ := h.proxy.Budget.State(ctx, tokenAccount.UserName)
	clock.Advance(31 * time.Second) // past ttl, within the budget window
	h.simSrv.Close()
	sent := h.tokens.sent.Load()
	for i := range 60 {
		if r := h.aht(tokenAccount, agents[i%len(agents)]); r.code != 200 || r.header.Get("X-Cache") != "STALE" {
			t.Fatalf("request %d: %d %s %s", i, r.code, r.header.Get("X-Cache"), r.body)
		}
	}
	after, _ := h.proxy.Budget.State(ctx, tokenAccount.UserName)
	if after.Remaining != before.Remaining {
		t.Errorf("budget: %d remaining before the outage, %d after, with no call reaching the upstream",
			before.Remaining, after.Remaining)
	}
	if n := h.tokens.sent.Load() - sent; n != 1 {
		t.Errorf("%d attempts on the unreachable upstream within one backoff, want 1", n)
	}
	clock.Advance(2 * time.Second)
	h.aht(tokenAccount, "agent001")
	if n := h.tokens.sent.Load() - sent; n != 2 {
		t.Errorf("%d attempts after the backoff, want 2", n)
	}
}

// TestNoCacheCannotDrainTheBudget checks that "Cache-Control: no-cache"
// fetches anew at most once per key per ttl; the other no-cache requests
// get the cached answer.
func TestNoCacheCannotDrainTheBudget(t *testing.T) {
	clock := newFakeClock()
	h := newHarness(t, setup{clock: clock, ttl: 30 * time.Second})
	xcache := map[string]int{}
	for range 50 {
		r := h.aht(tokenAccount, "agent001", "Cache-Control", "no-cache")
		if r.code != 200 || r.status() != "success" {
			t.Fatalf("%d %s", r.code, r.body)
		}
		xcache[r.header.Get("X-Cache")]++
	}
	if n := h.sim.Stats().AHTCalls; n != 1 {
		t.Errorf("50 no-cache requests made %d upstream calls, want 1 (X-Cache: %v)", n, xcache)
	}
	if xcache["BYPASS"] != 1 || xcache["HIT"] != 49 {
		t.Errorf("X-Cache counts %v, want 1 BYPASS and 49 HIT", xcache)
	}
	clock.Advance(30 * time.Second)
	if r := h.aht(tokenAccount, "agent001", "Cache-Control", "no-cache"); r.header.Get("X-Cache") != "BYPASS" {
		t.Errorf("no-cache after ttl: X-Cache %q, want BYPASS", r.header.Get("X-Cache"))
	}
	if n := h.sim.Stats().AHTCalls; n != 2 {
		t.Errorf("%d upstream calls, want 2", n)
	}
}
