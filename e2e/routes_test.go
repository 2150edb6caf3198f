package e2e

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caproxy/caproxy/cloudagent"
)

// TestReportingAppDropIn: through the built binary, an app gets its token
// at the reporting token path, reads a day's CDRs (GET + JSON body) for a
// token-mode account with it, then asks for AHT: all work, with exactly one
// upstream token generation and no reporting call refused upstream. An
// oversized header is refused before it reaches the upstream.
func TestReportingAppDropIn(t *testing.T) {
	s := startSim(t)
	p := startProxy(t, proxyConfig{Upstream: s.url()})
	c := newClient(t)

	r := c.do(http.MethodPost, p.url(cloudagent.PathReportsGenerateToken), `{"userName":"demo"}`, cloudagent.HeaderAPIKey, demoKey)
	var tr cloudagent.TokenResponse
	if r.code != http.StatusOK || json.Unmarshal([]byte(r.body), &tr) != nil || tr.Token == "" {
		t.Fatalf("generateToken: %d %s", r.code, r.body)
	}
	day := time.Now().Format("2006-01-02")
	body := `{"fromDate":"` + day + ` 00:00:00","toDate":"` + day + ` 23:59:59","userName":"demo"}`
	for i, want := range []string{"MISS", "HIT"} {
		r = c.do(http.MethodGet, p.url(cloudagent.PathFetchCDRDetails), body, "Authorization", "Bearer "+tr.Token)
		if r.code != http.StatusOK || !strings.Contains(r.body, `"status":"success"`) || r.header.Get("X-Cache") != want {
			t.Fatalf("fetchCDRDetails %d: %d %v %s", i, r.code, r.header.Get("X-Cache"), r.body)
		}
	}
	r = c.do(http.MethodPost, p.url("/ca_apis/aht/"), `{"userName":"demo","agentId":"agent001"}`, "Authorization", "Bearer "+tr.Token)
	if r.code != http.StatusOK || !strings.Contains(r.body, `"status":"success"`) {
		t.Fatalf("AHT: %d %s", r.code, r.body)
	}

	r = c.do(http.MethodPost, p.url(cloudagent.PathAHT), `{"userName":"demo","agentId":"agent002"}`,
		cloudagent.HeaderAPIKey, demoKey, "X-Padding", strings.Repeat("x", 100<<10))
	if r.code != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("100 KiB header: %d %s", r.code, r.body)
	}

	st := s.stats(t, c)
	if st.TokenGenerations != 1 || st.ReportAdmitted != 1 || st.ReportAuthFailed != 0 || st.AHTCalls != 1 {
		t.Fatalf("upstream saw %+v", st)
	}
}

// TestDocumentedLimitsAreBudgeted: through the built binary, in front of
// "caproxy sim -seed -calls-per-agent", fetchCdrByUCID (documented 2 a
// minute, GET with a JSON body) and getAgentLogins (5 a minute) have
// their own budgets rather than the catch-all's none: the call past each
// limit is refused by caproxy in the API's shape, a body sent as query
// parameters never leaves caproxy, and the simulator refuses nothing.
func TestDocumentedLimitsAreBudgeted(t *testing.T) {
	s := startSim(t, "-seed", "9", "-calls-per-agent", "2")
	p := startProxy(t, proxyConfig{Upstream: s.url(), Accounts: []account{{"demo", demoKey, "token"}, {"demo-basic", demoBasicKey, "apikey"}}})
	c := newClient(t)
	key := []string{cloudagent.HeaderAPIKey, demoBasicKey}

	day := time.Now().AddDate(0, 0, -1).Format("2006-01-02")
	dayBody := `{"fromDate":"` + day + ` 00:00:00","toDate":"` + day + ` 23:59:59","userName":"demo-basic"`
	r := c.do(http.MethodGet, p.url(cloudagent.PathFetchCDRDetails), dayBody+"}", key...)
	var cdr cloudagent.CDRAnswer
	if r.code != http.StatusOK || json.Unmarshal([]byte(r.body), &cdr) != nil || len(cdr.Details) != 2*302 {
		t.Fatalf("fetchCDRDetails: %d %.300s", r.code, r.body)
	}
	for i := range 3 {
		r = c.do(http.MethodGet, p.url(cloudagent.PathFetchCdrByUCID), dayBody+`,"ucid":"`+cdr.Details[i].UCID+`"}`, key...)
		var one cloudagent.CDRAnswer
		switch {
		case i < cloudagent.CDRByUCIDLimit:
			if r.code != http.StatusOK || json.Unmarshal([]byte(r.body), &one) != nil || len(one.Details) != 1 || one.Details[0] != cdr.Details[i] {
				t.Fatalf("fetchCdrByUCID %d: %d %s", i, r.code, r.body)
			}
		case r.code != http.StatusTooManyRequests || !strings.Contains(r.body, `"status":"false"`) || r.header.Get("Retry-After") == "":
			t.Fatalf("fetchCdrByUCID past the limit: %d %v %s", r.code, r.header, r.body)
		}
	}
	r = c.do(http.MethodGet, p.url(cloudagent.PathFetchCdrByUCID)+"?userName=demo-basic&ucid=1", "", key...)
	if r.code != http.StatusBadRequest || !strings.Contains(r.body, cloudagent.MsgInvalidJSONPassValid) {
		t.Fatalf("fetchCdrByUCID, query only: %d %s", r.code, r.body)
	}

	for i := range cloudagent.AgentLoginsLimit + 1 {
		r = c.do(http.MethodPost, p.url(cloudagent.PathGetAgentLogins), `{"userName":"demo-basic"}`, key...)
		if i < cloudagent.AgentLoginsLimit && (r.code != http.StatusOK || !strings.Contains(r.body, `"AgentState"`)) {
			t.Fatalf("getAgentLogins %d: %d %.300s", i, r.code, r.body)
		}
	}
	if r.code != http.StatusTooManyRequests || r.header.Get("Retry-After") == "" {
		t.Fatalf("getAgentLogins past the limit: %d %v %s", r.code, r.header, r.body)
	}

	st := s.stats(t, c)
	if st.LimitViolations != 0 || st.ReportAdmitted != 1+cloudagent.CDRByUCIDLimit || st.ControlCalls != cloudagent.AgentLoginsLimit {
		t.Fatalf("upstream saw %+v", st)
	}
}
