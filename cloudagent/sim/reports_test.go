package sim

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caproxy/caproxy/cloudagent"
)

// cdrBody is a fetchCDRDetails body for the token-mode account on day.
func cdrBody(user, day string) string {
	return `{"fromDate":"` + day + ` 00:00:00","toDate":"` + day + ` 23:59:59","userName":"` + user + `"}`
}

var demoKey = hdr{"apiKey": "demo-key"}

func TestBothTokenPathsShareOneAccountState(t *testing.T) {
	h := newHarness(t, Options{})
	first := h.token("demo", "demo-key")
	code, b := h.post(cloudagent.PathReportsGenerateToken, demoKey, `{"userName":"demo"}`)
	if code != http.StatusOK || !strings.Contains(string(b), `"token"`) {
		t.Fatalf("reports generateToken: %d %s", code, b)
	}
	// The token from the reporting path invalidated the first one.
	_, b = h.post(cloudagent.PathAHT, bearer(first), `{"userName":"demo","campaignName":"Sales"}`)
	wantTokenError(t, b, cloudagent.MsgTokenExpired)
	// Both paths count toward the hourly limit: 2 used, 8 left.
	for i := range 8 {
		path := cloudagent.TokenPaths[i%2]
		if code, b := h.post(path, demoKey, `{"userName":"demo"}`); code != http.StatusOK || strings.Contains(string(b), "false") {
			t.Fatalf("generation %d at %s: %d %s", i+3, path, code, b)
		}
	}
	_, b = h.post(cloudagent.PathReportsGenerateToken, demoKey, `{"userName":"demo"}`)
	wantTokenError(t, b, MsgTokenGenLimit)
	if got := h.sim.Stats().TokenGenerations; got != 10 {
		t.Fatalf("TokenGenerations = %d, want 10", got)
	}
}

func TestFetchCDRDetailsContract(t *testing.T) {
	h := newHarness(t, Options{})
	day := epoch.Format("2006-01-02")
	tok := h.token("demo", "demo-key")

	// A valid bearer token is refused by the reporting API.
	code, _, b := h.do(http.MethodGet, cloudagent.PathFetchCDRDetails, bearer(tok), cdrBody("demo", day))
	if code != http.StatusUnauthorized {
		t.Fatalf("bearer: HTTP %d %s", code, b)
	}
	wantTokenError(t, b, cloudagent.MsgMissingUserNameOrAPIKey)
	// So is the bearer token beside a good apiKey.
	code, _, b = h.do(http.MethodGet, cloudagent.PathFetchCDRDetails, hdr{"apiKey": "demo-key", "Authorization": "Bearer " + tok}, cdrBody("demo", day))
	if code != http.StatusUnauthorized {
		t.Fatalf("bearer+apiKey: HTTP %d %s", code, b)
	}
	// A wrong key, and no key.
	for _, hd := range []hdr{{"apiKey": "nope"}, {}} {
		code, _, b = h.do(http.MethodGet, cloudagent.PathFetchCDRDetails, hd, cdrBody("demo", day))
		if code != http.StatusUnauthorized {
			t.Fatalf("%v: HTTP %d %s", hd, code, b)
		}
		wantTokenError(t, b, cloudagent.MsgMissingUserNameOrAPIKey)
	}
	// Query parameters instead of a body.
	code, _, b = h.do(http.MethodGet, cloudagent.PathFetchCDRDetails+"?userName=demo&fromDate=x&toDate=y", demoKey, "")
	if code != http.StatusBadRequest {
		t.Fatalf("query: HTTP %d %s", code, b)
	}
	wantTokenError(t, b, cloudagent.MsgInvalidJSONPassValid)
	// POST is not allowed.
	code, _, b = h.do(http.MethodPost, cloudagent.PathFetchCDRDetails, demoKey, cdrBody("demo", day))
	if code != http.StatusMethodNotAllowed {
		t.Fatalf("POST: HTTP %d %s", code, b)
	}
	if st := h.sim.Stats(); st.ReportAdmitted != 0 {
		t.Fatalf("refused calls were admitted: %+v", st)
	}

	// GET with a body and the apiKey, for a token-mode account: works.
	code, _, b = h.do(http.MethodGet, cloudagent.PathFetchCDRDetails, demoKey, cdrBody("demo", day))
	if code != http.StatusOK || !strings.Contains(string(b), `"status":"success"`) {
		t.Fatalf("good call: HTTP %d %s", code, b)
	}
	// The second call in the minute spans two days: counted, then refused.
	code, _, b = h.do(http.MethodGet, cloudagent.PathFetchCDRDetails, demoKey,
		`{"fromDate":"`+day+` 00:00:00","toDate":"2026-01-02 00:00:00","userName":"demo"}`)
	if code != http.StatusBadRequest {
		t.Fatalf("two days: HTTP %d %s", code, b)
	}
	wantTokenError(t, b, MsgCDROneDay)
	// Third in the minute: 429.
	code, _, b = h.do(http.MethodGet, cloudagent.PathFetchCDRDetails, demoKey, cdrBody("demo", day))
	if code != http.StatusTooManyRequests {
		t.Fatalf("third: HTTP %d %s", code, b)
	}
	wantTokenError(t, b, MsgReportsLimited)
	// The window trails: a minute later there is room again. A day past
	// retention answers an empty success, as production does (it used to
	// pin a 400 "data is kept for 15 days only", which production never
	// answers).
	h.clock.Advance(time.Minute)
	old := epoch.AddDate(0, 0, -16).Format("2006-01-02")
	code, _, b = h.do(http.MethodGet, cloudagent.PathFetchCDRDetails, demoKey, cdrBody("demo", old))
	if code != http.StatusOK || string(b) != `{"status":"success","message":"success","details":[]}` {
		t.Fatalf("old day: HTTP %d %s", code, b)
	}
	st := h.sim.Stats()
	if st.ReportAdmitted != 3 || st.ReportLimited != 1 || st.MaxReportInWindow != 2 || st.LimitViolations != 1 {
		t.Fatalf("stats = %+v", st)
	}
}

// TestFetchCdrByPaginationReadsBodyAndQuery: the body carries the
// question, the query the page (pageNo, pageSize), and the answer the
// day's totalCount. (It used to pin an echoed "page" that no client sends.)
func TestFetchCdrByPaginationReadsBodyAndQuery(t *testing.T) {
	h := newHarness(t, Options{CallsPerAgent: 2})
	day := epoch.AddDate(0, 0, -1).Format("2006-01-02")
	code, _, b := h.do(http.MethodGet, cloudagent.PathFetchCdrByPagination+"?pageNo=2&pageSize=7", demoKey, cdrBody("demo", day))
	ans := wantCDRs(t, code, b)
	if ans.TotalCount == nil || *ans.TotalCount != 2*len(DefaultAgents()) || len(ans.Details) != 7 {
		t.Fatalf("HTTP %d: totalCount %v, %d records", code, ans.TotalCount, len(ans.Details))
	}
	code, _, b = h.do(http.MethodGet, cloudagent.PathFetchCdrByPagination+"?pageNo=2&userName=demo", demoKey, "")
	if code != http.StatusBadRequest {
		t.Fatalf("no body: HTTP %d %s", code, b)
	}
}

func TestAgentManualDialIsCountedWrite(t *testing.T) {
	h := newHarness(t, Options{})
	body := `{"userName":"demo-basic","agentID":"agent1","customerNumber":"9999"}`
	for range 2 {
		if code, b := h.post(cloudagent.PathAgentManualDial, basicAuth, body); code != http.StatusOK || !strings.Contains(string(b), `"status":"queued successfully"`) {
			t.Fatalf("HTTP %d %s", code, b)
		}
	}
	_, b := h.post(cloudagent.PathAgentManualDial, hdr{"apiKey": "wrong"}, body)
	wantError(t, b, cloudagent.MsgInvalidCredentials)
	if st := h.sim.Stats(); st.ManualDials != 2 || st.PerAccount["demo-basic"].ManualDials != 2 {
		t.Fatalf("stats = %+v", st)
	}
}

// TestSummaryReportContract: GET or POST with a JSON body, the apiKey
// header only, the documented date checks, and 5 calls a minute.
func TestSummaryReportContract(t *testing.T) {
	h := newHarness(t, Options{})
	day := epoch.Format("2006-01-02")
	body := cdrBody("demo", day)
	tok := h.token("demo", "demo-key")
	code, _, b := h.do(http.MethodPost, cloudagent.PathSummaryReport, bearer(tok), body)
	if code != http.StatusUnauthorized {
		t.Fatalf("bearer: HTTP %d %s", code, b)
	}
	wantTokenError(t, b, cloudagent.MsgMissingUserNameOrAPIKey)
	if code, _, b := h.do(http.MethodPut, cloudagent.PathSummaryReport, demoKey, body); code != http.StatusMethodNotAllowed {
		t.Fatalf("PUT: HTTP %d %s", code, b)
	}
	for _, c := range []struct{ body, msg string }{
		{`{"fromDate":"` + day + `","toDate":"` + day + ` 10:00:00","userName":"demo"}`, MsgSummaryBadDate},
		{`{"fromDate":"` + day + ` 11:00:00","toDate":"` + day + ` 10:00:00","userName":"demo"}`, MsgSummaryFromTo},
		{`{"fromDate":"2025-01-01 00:00:00","toDate":"` + day + ` 10:00:00","userName":"demo"}`, MsgSummaryTooLong},
	} {
		_, _, b := h.do(http.MethodPost, cloudagent.PathSummaryReport, demoKey, c.body)
		wantError(t, b, c.msg)
	}
	// Three calls above spent three of the five; GET and POST both count.
	for i, m := range []string{http.MethodGet, http.MethodPost} {
		if code, _, b := h.do(m, cloudagent.PathSummaryReport, demoKey, body); code != http.StatusOK || !strings.Contains(string(b), `"success"`) {
			t.Fatalf("call %d (%s): HTTP %d %s", i+4, m, code, b)
		}
	}
	code, _, b = h.do(http.MethodPost, cloudagent.PathSummaryReport, demoKey, body)
	if code != http.StatusTooManyRequests {
		t.Fatalf("6th call in a minute: HTTP %d %s", code, b)
	}
	if v := h.sim.Stats().LimitViolations; v != 1 {
		t.Fatalf("LimitViolations = %d, want 1", v)
	}
}
