package proxy_test

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caproxy/caproxy/cloudagent"
	"github.com/caproxy/caproxy/cloudagent/sim"
	"github.com/caproxy/caproxy/config"
	"github.com/caproxy/caproxy/limit"
	"github.com/caproxy/caproxy/proxy"
	"github.com/caproxy/caproxy/route"
)

// TestEveryTokenPathIsLocal: generateToken at either of CloudAgent's token
// paths, in any spelling, gets a caproxy token and never reaches upstream.
func TestEveryTokenPathIsLocal(t *testing.T) {
	h := newHarness(t, setup{})
	for _, path := range []string{
		cloudagent.PathGenerateToken, cloudagent.PathReportsGenerateToken,
		"//ca_reports/CAToken/generateToken/", "/ca_reports/./CAToken/%67enerateToken",
	} {
		for _, a := range h.accounts {
			r := h.do(http.MethodPost, path, `{"userName":"`+a.UserName+`"}`, "apiKey", a.APIKey)
			if r.code != http.StatusOK || field(r.body, "token") == "" {
				t.Fatalf("%s for %s: %d %s", path, a.UserName, r.code, r.body)
			}
			// The token is caproxy's: it opens AHT through caproxy.
			tok := field(r.body, "token")
			if r := h.do(http.MethodPost, cloudagent.PathAHT, `{"userName":"`+a.UserName+`","campaignName":"Outbound_Sales"}`,
				"Authorization", "Bearer "+tok); r.code != http.StatusOK {
				t.Fatalf("AHT with the token from %s: %d %s", path, r.code, r.body)
			}
		}
	}
	// Only the AHT calls above needed an upstream token (one, for demo).
	if st := h.sim.Stats(); st.TokenGenerations != 1 || st.TokenRejected != 0 {
		t.Fatalf("upstream token calls: %+v", st)
	}
}

// TestOddSpellingsOfAHTShareItsBudget: 70 concurrent requests for new
// agents, spelled four ways, are all AHT to caproxy: never more than 50
// upstream calls in the window, none refused by the upstream.
func TestOddSpellingsOfAHTShareItsBudget(t *testing.T) {
	h := newHarness(t, setup{})
	spellings := []string{"/ca_apis/aht/", "//ca_apis/aht", "/ca_apis/./aht", "/ca_apis/%61ht"}
	var wg sync.WaitGroup
	codes := make([]int, 70)
	for i := range 70 {
		wg.Go(func() {
			body := `{"userName":"demo-basic","agentId":"new-agent-` + strconv.Itoa(i) + `"}`
			codes[i] = h.do(http.MethodPost, spellings[i%len(spellings)], body, "apiKey", apikeyAccount.APIKey).code
		})
	}
	wg.Wait()
	st := h.sim.Stats()
	if st.AHTLimited != 0 || st.LimitViolations != 0 || st.AHTAdmitted > 50 || st.AHTCalls > 50 {
		t.Fatalf("upstream saw %d AHT calls, %d admitted, %d refused for its limit", st.AHTCalls, st.AHTAdmitted, st.AHTLimited)
	}
	limited := 0
	for _, c := range codes {
		if c == http.StatusTooManyRequests {
			limited++
		}
	}
	if limited != 70-int(st.AHTCalls) {
		t.Fatalf("%d answered 429, %d upstream calls; want the 70 split between them", limited, st.AHTCalls)
	}
}

// TestUncleanablePathIsRefused: a path caproxy cannot clean safely is
// answered 400 and never forwarded.
func TestUncleanablePathIsRefused(t *testing.T) {
	h := newHarness(t, setup{})
	for _, path := range []string{"/ca_apis%2Faht", "/ca_apis/aht;x=1", "/../ca_apis/aht"} {
		r := h.do(http.MethodPost, path, `{"userName":"demo-basic","agentId":"a"}`, "apiKey", apikeyAccount.APIKey)
		if r.code != http.StatusBadRequest || r.status() != cloudagent.StatusError {
			t.Fatalf("%s: %d %s", path, r.code, r.body)
		}
	}
	if st := h.sim.Stats(); st.AHTCalls+st.OtherCalls != 0 {
		t.Fatalf("refused paths reached the upstream: %+v", st)
	}
}

// cdr asks fetchCDRDetails for day as an app does: GET with a JSON body.
func (h *harness) cdr(a sim.Account, day string, headers ...string) reply {
	h.t.Helper()
	body := `{"fromDate":"` + day + ` 00:00:00","toDate":"` + day + ` 23:59:59","userName":"` + a.UserName + `"}`
	return h.do(http.MethodGet, cloudagent.PathFetchCDRDetails, body, headers...)
}

// TestReportingAppWorksUnchanged: an app that gets its token at the
// reporting token path, reads CDRs with it for a token-mode account (which
// the reporting API would refuse as a bearer token), then asks for AHT,
// works through caproxy with exactly one upstream token generation.
func TestReportingAppWorksUnchanged(t *testing.T) {
	c := newFakeClock()
	h := newHarness(t, setup{clock: c})
	r := h.do(http.MethodPost, cloudagent.PathReportsGenerateToken, `{"userName":"demo"}`, "apiKey", tokenAccount.APIKey)
	tok := field(r.body, "token")
	if r.code != http.StatusOK || tok == "" {
		t.Fatalf("generateToken: %d %s", r.code, r.body)
	}
	r = h.cdr(tokenAccount, "2026-11-27", "Authorization", "Bearer "+tok)
	if r.code != http.StatusOK || r.status() != cloudagent.StatusSuccess || r.header.Get("X-Cache") != "MISS" {
		t.Fatalf("fetchCDRDetails: %d %v %s", r.code, r.header, r.body)
	}
	r = h.do(http.MethodPost, cloudagent.PathAHT, `{"userName":"demo","campaignName":"Outbound_Sales"}`, "Authorization", "Bearer "+tok)
	if r.code != http.StatusOK || r.status() != cloudagent.StatusSuccess {
		t.Fatalf("AHT: %d %s", r.code, r.body)
	}
	st := h.sim.Stats()
	if st.TokenGenerations != 1 || st.ReportAdmitted != 1 || st.ReportAuthFailed != 0 || st.AHTAdmitted != 1 {
		t.Fatalf("upstream saw %+v", st)
	}
}

// TestTwoAppsPollingCDRStayUnderTheLimit: apps polling fetchCDRDetails for
// different days every 10 s for three minutes cause at most 2 upstream
// calls in any minute, none refused upstream; repeats come from the cache;
// a third day with no call left is answered 429 in the reporting API's
// shape, with Retry-After.
func TestTwoAppsPollingCDRStayUnderTheLimit(t *testing.T) {
	c := newFakeClock()
	h := newHarness(t, setup{clock: c})
	key := []string{"apiKey", apikeyAccount.APIKey}
	misses := 0
	for round := range 18 {
		for _, day := range []string{"2026-11-26", "2026-11-27"} {
			r := h.cdr(apikeyAccount, day, key...)
			if r.code != http.StatusOK || r.status() != cloudagent.StatusSuccess {
				t.Fatalf("round %d, %s: %d %s", round, day, r.code, r.body)
			}
			switch r.header.Get("X-Cache") {
			case "MISS":
				misses++
			case "HIT", "STALE":
			default:
				t.Fatalf("X-Cache %q", r.header.Get("X-Cache"))
			}
		}
		if round == 0 {
			r := h.cdr(apikeyAccount, "2026-11-25", key...)
			if r.code != http.StatusTooManyRequests || r.status() != cloudagent.StatusFalse || r.header.Get("Retry-After") == "" {
				t.Fatalf("third day: %d %v %s", r.code, r.header, r.body)
			}
		}
		c.Advance(10 * time.Second)
	}
	st := h.sim.Stats()
	if st.ReportLimited != 0 || st.LimitViolations != 0 || st.MaxReportInWindow > cloudagent.CDRLimit {
		t.Fatalf("upstream refused %d calls, max %d in a window", st.ReportLimited, st.MaxReportInWindow)
	}
	// 3 minutes, a one-minute cache: a handful of upstream calls (each
	// day's first and one a minute after), the rest from the cache.
	if st.ReportAdmitted > 6 || int64(misses) != st.ReportAdmitted {
		t.Fatalf("%d upstream calls, %d misses of 36", st.ReportAdmitted, misses)
	}
}

// TestReportingRouteRefusesLocally: a POST, and a body caproxy could read
// differently from CloudAgent, never reach the upstream.
func TestReportingRouteRefusesLocally(t *testing.T) {
	h := newHarness(t, setup{clock: newFakeClock()})
	key := []string{"apiKey", apikeyAccount.APIKey}
	r := h.do(http.MethodPost, cloudagent.PathFetchCDRDetails, `{"userName":"demo-basic"}`, key...)
	if r.code != http.StatusMethodNotAllowed || r.status() != cloudagent.StatusFalse {
		t.Fatalf("POST: %d %s", r.code, r.body)
	}
	for _, body := range []string{
		`{"userName":"demo-basic","userName":"demo"}`,
		`{"userName":"demo-basic","username":"demo"}`,
		`{"userName":"demo-basic"} {}`,
		"{\"userName\":\"demo-basic\",\"x\":\"\xff\"}",
	} {
		r := h.do(http.MethodGet, cloudagent.PathFetchCDRDetails, body, key...)
		if r.code != http.StatusBadRequest {
			t.Fatalf("%q: %d %s", body, r.code, r.body)
		}
	}
	// The body's fields as query parameters: CloudAgent's own answer, here.
	r = h.do(http.MethodGet, cloudagent.PathFetchCDRDetails+"?userName=demo-basic&fromDate=2026-11-27+00:00:00&toDate=2026-11-27+23:59:59", "", key...)
	if r.code != http.StatusBadRequest || r.message() != cloudagent.MsgInvalidJSONPassValid || r.status() != cloudagent.StatusFalse {
		t.Fatalf("query, no body: %d %s", r.code, r.body)
	}
	r = h.do(http.MethodGet, cloudagent.PathFetchCDRDetails+"?userName=demo", `{"userName":"demo-basic"}`, key...)
	if r.code != http.StatusBadRequest {
		t.Fatalf("two accounts: %d %s", r.code, r.body)
	}
	if st := h.sim.Stats(); st.ReportCalls != 0 {
		t.Fatalf("refused requests reached the upstream: %+v", st)
	}
}

// TestCDRKeyIsCanonical: the same question spelled differently (key order,
// space, escapes, query order) is one cache entry and one upstream call.
func TestCDRKeyIsCanonical(t *testing.T) {
	h := newHarness(t, setup{clock: newFakeClock()})
	key := []string{"apiKey", apikeyAccount.APIKey}
	for i, body := range []string{
		`{"fromDate":"2026-11-27 00:00:00","toDate":"2026-11-27 23:59:59","userName":"demo-basic"}`,
		`{ "userName" : "demo-basic", "toDate":"2026-11-27 23:59:59", "fromDate":"2026-11-27 00:00:00" }`,
		`{"userName":"demo-b\u0061sic","fromDate":"2026-11-27 00:00:00","toDate":"2026-11-27 23:59:59"}`,
	} {
		r := h.do(http.MethodGet, cloudagent.PathFetchCdrByPagination+"?page=1&size=10", body, key...)
		if i > 0 {
			r = h.do(http.MethodGet, "//ca_reports/fetchCdrByPagination/?size=10&page=1", body, key...)
		}
		if r.code != http.StatusOK || r.status() != cloudagent.StatusSuccess {
			t.Fatalf("%d: %d %s", i, r.code, r.body)
		}
	}
	if st := h.sim.Stats(); st.ReportAdmitted != 1 {
		t.Fatalf("%d upstream calls for one question", st.ReportAdmitted)
	}
}

// TestManualDialIsNeverCachedOrCoalesced: every dial is an upstream call.
func TestManualDialIsNeverCachedOrCoalesced(t *testing.T) {
	h := newHarness(t, setup{})
	body := `{"userName":"demo","agentID":"agent1","customerNumber":"9999"}`
	var wg sync.WaitGroup
	for range 5 {
		wg.Go(func() {
			if r := h.do(http.MethodPost, cloudagent.PathAgentManualDial, body, "apiKey", tokenAccount.APIKey); r.code != http.StatusOK {
				t.Errorf("dial: %d %s", r.code, r.body)
			}
		})
	}
	wg.Wait()
	if st := h.sim.Stats(); st.ManualDials != 5 {
		t.Fatalf("5 dials, %d placed", st.ManualDials)
	}
	if r := h.do(http.MethodGet, cloudagent.PathAgentManualDial, body, "apiKey", tokenAccount.APIKey); r.code != http.StatusMethodNotAllowed {
		t.Fatalf("GET dial: %d %s", r.code, r.body)
	}
}

// TestConfiguredRouteOverridesDefault: a route of a default's name replaces
// it; a budget on an uncached route applies to pass-through.
func TestConfiguredRouteOverridesDefault(t *testing.T) {
	h := newHarness(t, setup{clock: newFakeClock(), routes: []config.Route{{
		Name: "manual_dial", Path: cloudagent.PathAgentManualDial, Methods: []string{"POST"},
		Write: true, Budget: 1,
	}}})
	body := `{"userName":"demo-basic","agentID":"agent1","customerNumber":"9999"}`
	if r := h.do(http.MethodPost, cloudagent.PathAgentManualDial, body, "apiKey", apikeyAccount.APIKey); r.code != http.StatusOK {
		t.Fatalf("first dial: %d %s", r.code, r.body)
	}
	r := h.do(http.MethodPost, cloudagent.PathAgentManualDial, body, "apiKey", apikeyAccount.APIKey)
	if r.code != http.StatusTooManyRequests || r.message() != cloudagent.MsgLimitExceeded || r.header.Get("Retry-After") == "" {
		t.Fatalf("second dial: %d %v %s", r.code, r.header, r.body)
	}
	if st := h.sim.Stats(); st.ManualDials != 1 {
		t.Fatalf("%d dials placed", st.ManualDials)
	}
}

func TestRouteTableRefusesBadRoutes(t *testing.T) {
	for _, rt := range []proxy.Route{
		{Name: "x", Path: "/ca_apis//x"},
		{Name: "Bad-Name", Path: "/ca_apis/x"},
		{Name: "aht", Path: "/ca_apis/x"},
		{Name: "x", Path: cloudagent.PathAHT},
		{Name: "x", Path: cloudagent.PathReportsGenerateToken},
		{Name: "x", Path: "/ca_apis/x", Auth: "bearer"},
		{Name: "x", Path: "/ca_apis/x", Write: true, CacheTTL: time.Second, Methods: []string{"POST"}},
		{Name: "x", Path: "/ca_apis/x", CacheTTL: time.Second},
	} {
		if _, err := route.NewTable([]route.Route{rt}, limit.NewMemoryStore()); err == nil {
			t.Errorf("%+v accepted", rt)
		}
	}
}

// TestPassThroughBodyOverLimitSendsNothing: a pass-through body over
// MaxBodyBytes is answered 413 before anything reaches the upstream, with a
// known length or chunked (issue 13 item 9).
func TestPassThroughBodyOverLimitSendsNothing(t *testing.T) {
	h := newHarness(t, setup{})
	big := `{"userName":"demo-basic","pad":"` + strings.Repeat("x", proxy.MaxBodyBytes) + `"}`
	r := h.do(http.MethodPost, sim.PathAgentDetails+"?userName=demo-basic", big, "apiKey", apikeyAccount.APIKey)
	if r.code != http.StatusRequestEntityTooLarge {
		t.Fatalf("known length: %d %s", r.code, r.body)
	}
	req, _ := http.NewRequest(http.MethodPost, h.url+sim.PathAgentDetails+"?userName=demo-basic",
		io.MultiReader(strings.NewReader(big))) // no length: chunked
	req.Header.Set("apiKey", apikeyAccount.APIKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("chunked: %d", resp.StatusCode)
	}
	if st := h.sim.Stats(); st.OtherCalls != 0 {
		t.Fatalf("%d calls reached the upstream", st.OtherCalls)
	}
}

// TestPassThroughIsBounded: a pass-through whose upstream does not answer
// in time gets 504, not an endless wait (issue 13 item 9).
func TestPassThroughIsBounded(t *testing.T) {
	h := newHarness(t, setup{sim: sim.Options{Latency: 3 * time.Second}, timeout: 200 * time.Millisecond})
	r := h.do(http.MethodPost, sim.PathAgentDetails, `{"userName":"demo-basic"}`, "apiKey", apikeyAccount.APIKey)
	if r.code != http.StatusGatewayTimeout || r.status() != cloudagent.StatusError {
		t.Fatalf("%d %s", r.code, r.body)
	}
}

// TestRefuseUnknownPaths: with the policy set, a path outside the table is
// answered 404 and never forwarded with the account's credentials.
func TestRefuseUnknownPaths(t *testing.T) {
	h := newHarness(t, setup{refuseUnknown: true})
	r := h.do(http.MethodPost, "/ca_apis/AgentStatus", `{"userName":"demo-basic"}`, "apiKey", apikeyAccount.APIKey)
	if r.code != http.StatusNotFound || r.message() != proxy.MsgUnknownPath {
		t.Fatalf("%d %s", r.code, r.body)
	}
	// Table routes still work.
	body := `{"userName":"demo-basic","agentID":"agent1","customerNumber":"9999"}`
	if r := h.do(http.MethodPost, cloudagent.PathAgentManualDial, body, "apiKey", apikeyAccount.APIKey); r.code != http.StatusOK {
		t.Fatalf("dial: %d %s", r.code, r.body)
	}
	if st := h.sim.Stats(); st.OtherCalls != 0 || st.ManualDials != 1 {
		t.Fatalf("upstream saw %+v", st)
	}
}

// TestOtherReportingPathsUseTheAPIKey: a token-mode account's call to any
// reporting path carries its apiKey, never a bearer token, and needs no
// upstream token.
func TestOtherReportingPathsUseTheAPIKey(t *testing.T) {
	h := newHarness(t, setup{})
	r := h.do(http.MethodGet, "/ca_reports/fetchSomethingElse?userName=demo", "", "apiKey", tokenAccount.APIKey)
	if r.code != http.StatusNotFound { // the simulator serves no such report
		t.Fatalf("%d %s", r.code, r.body)
	}
	if st := h.sim.Stats(); st.TokenGenerations != 0 || len(h.tokens.seen()) != 0 {
		t.Fatalf("a bearer token was made or sent for the reporting API: %+v", st)
	}
}

// TestOtherAPIsStayUnderTheirDocumentedLimits: apps sharing an account
// hammer AgentDetails (10 a minute) and the summary report (5 a minute)
// through caproxy; CloudAgent never refuses a call for its limit, and the
// apps get caproxy's 429 in each API's own shape instead.
func TestOtherAPIsStayUnderTheirDocumentedLimits(t *testing.T) {
	h := newHarness(t, setup{clock: newFakeClock()})
	day := h.clock.Now().Format("2006-01-02")
	summary := `{"fromDate":"` + day + ` 00:00:00","toDate":"` + day + ` 10:00:00","userName":"demo-basic"}`
	type result struct {
		path string
		r    reply
	}
	results := make(chan result, 60)
	var wg sync.WaitGroup
	for i := range 60 {
		wg.Go(func() {
			if i%2 == 0 {
				results <- result{sim.PathAgentDetails, h.do(http.MethodPost, sim.PathAgentDetails, `{"userName":"demo-basic"}`, "apiKey", apikeyAccount.APIKey)}
			} else {
				results <- result{cloudagent.PathSummaryReport, h.do(http.MethodPost, cloudagent.PathSummaryReport, summary, "apiKey", apikeyAccount.APIKey)}
			}
		})
	}
	wg.Wait()
	close(results)
	ok := map[string]int{}
	for res := range results {
		switch {
		case res.r.code == http.StatusOK:
			ok[res.path]++
		case res.r.code == http.StatusTooManyRequests && res.r.header.Get("Retry-After") != "":
			want := cloudagent.StatusError
			if res.path == cloudagent.PathSummaryReport {
				want = cloudagent.StatusFalse
			}
			if res.r.status() != want || res.r.message() != cloudagent.MsgLimitExceeded {
				t.Errorf("%s refusal %s, want status %q and %q", res.path, res.r.body, want, cloudagent.MsgLimitExceeded)
			}
		default:
			t.Errorf("%s: %d %v %s", res.path, res.r.code, res.r.header, res.r.body)
		}
	}
	if ok[sim.PathAgentDetails] != cloudagent.AgentDetailsLimit || ok[cloudagent.PathSummaryReport] != cloudagent.SummaryReportLimit {
		t.Errorf("answered %v, want %d AgentDetails and %d summaries", ok, cloudagent.AgentDetailsLimit, cloudagent.SummaryReportLimit)
	}
	if v := h.sim.Stats().LimitViolations; v != 0 {
		t.Errorf("CloudAgent refused %d calls for its limit", v)
	}
}

// TestPassedThroughRouteSaysNothingOfACache checks that a route without a
// cache (AgentDetails: 10 a minute, passed through) does not claim an
// X-Cache outcome on its refusals, while AHT's refusal still says MISS.
func TestPassedThroughRouteSaysNothingOfACache(t *testing.T) {
	h := newHarness(t, setup{clock: newFakeClock()})
	details := func() reply {
		return h.do("POST", "/ca_apis/AgentDetails", `{"userName":"`+apikeyAccount.UserName+`"}`, "apiKey", apikeyAccount.APIKey)
	}
	for i := range 10 {
		if r := details(); r.code != http.StatusOK || r.header.Get("X-Cache") != "" {
			t.Fatalf("call %d: %d X-Cache %q %s", i+1, r.code, r.header.Get("X-Cache"), r.body)
		}
	}
	r := details()
	if r.code != http.StatusTooManyRequests || r.header.Get("Retry-After") == "" {
		t.Fatalf("11th call: %d %v %s, want 429 with Retry-After", r.code, r.header, r.body)
	}
	if got := r.header.Get("X-Cache"); got != "" {
		t.Errorf("passed-through route's 429 says X-Cache %q; it has no cache", got)
	}
}
