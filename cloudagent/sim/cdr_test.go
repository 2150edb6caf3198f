package sim

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/caproxy/caproxy/cloudagent"
)

var (
	digits17    = regexp.MustCompile(`^[1-9]\d{16}$`)
	datePattern = regexp.MustCompile(`^\d{4}-\d\d-\d\d$`)
)

// cdrFields are the 46 fields of the February 2026 production record
// (DESIGN.md, "Production answer shapes").
var cdrFields = []string{"AgentDialStatus", "AgentID", "AgentName", "CallAudio", "CallDate", "CallFlow",
	"CallID", "CallerConfAudioFile", "CallerID", "CampaignName", "Comments", "ConferenceDuration",
	"CustomerDialStatus", "CustomerRingTime", "DID", "DialOutName", "DialStatus", "DialedNumber",
	"Disposition", "Duration", "DynamicDID", "E164", "EndTime", "Event", "HandlingTime", "HangupBy",
	"HoldDuration", "Location", "PickupTime", "QueueTime", "Rating", "RatingComments", "Skill",
	"StartTime", "Status", "TalkTime", "TimeToAnswer", "TransferType", "TransferredTo", "Type", "UCID",
	"UUI", "VideoRecordingURL", "WrapUpEndTime", "WrapUpStartTime", "WrapupDuration"}

// wantCDRs checks a CDR answer's envelope and every record's fields and
// value formats as a client parses them (from raw JSON, not our struct),
// and returns it decoded.
func wantCDRs(t *testing.T, code int, body []byte) cloudagent.CDRAnswer {
	t.Helper()
	var raw struct {
		Status  string           `json:"status"`
		Message string           `json:"message"`
		Details []map[string]any `json:"details"`
	}
	if code != http.StatusOK || json.Unmarshal(body, &raw) != nil || raw.Status != "success" || raw.Message != "success" || raw.Details == nil {
		t.Fatalf("HTTP %d, not a CDR answer: %.300s", code, body)
	}
	for i, rec := range raw.Details {
		if len(rec) != len(cdrFields) {
			t.Fatalf("record %d has %d fields, want %d: %v", i, len(rec), len(cdrFields), rec)
		}
		str := map[string]string{}
		for _, f := range cdrFields {
			v, isString := rec[f].(string)
			if !isString {
				t.Fatalf("record %d: %s = %#v, want a string", i, f, rec[f])
			}
			str[f] = v
		}
		check := func(ok bool, what string) {
			t.Helper()
			if !ok {
				t.Fatalf("record %d: %s: %v", i, what, rec)
			}
		}
		check(digits17.MatchString(str["CallID"]) && str["UCID"] == str["CallID"], "CallID/UCID 17 digits")
		check(datePattern.MatchString(str["CallDate"]), "CallDate YYYY-MM-DD")
		for _, f := range []string{"StartTime", "EndTime", "Duration", "TalkTime", "TimeToAnswer", "HandlingTime",
			"HoldDuration", "CustomerRingTime", "QueueTime", "ConferenceDuration", "WrapupDuration"} {
			check(hmsPattern.MatchString(str[f]), f+" HH:MM:SS")
		}
		switch str["Status"] {
		case cloudagent.CallAnswered:
			check(len(str["CallAudio"]) > 8 && str["CallAudio"][:8] == "https://", "answered: CallAudio a URL")
			for _, f := range []string{"PickupTime", "WrapUpStartTime", "WrapUpEndTime"} {
				check(hmsPattern.MatchString(str[f]), f+" HH:MM:SS")
			}
		case cloudagent.CallUnanswered:
			check(str["CallAudio"] == "" && str["PickupTime"] == "" && str["WrapUpStartTime"] == "", "unanswered: unset fields empty")
		default:
			check(false, "Status Answered/Unanswered")
		}
		check(str["UUI"] == "" && str["TransferType"] == "" && str["VideoRecordingURL"] == "", "unset fields empty")
		check(str["AgentID"] != "" && str["AgentName"] != "", "agent named")
	}
	var ans cloudagent.CDRAnswer
	if err := json.Unmarshal(body, &ans); err != nil {
		t.Fatal(err)
	}
	return ans
}

// dayBody is a CDR body for user covering day (YYYY-MM-DD) whole.
func dayBody(user, day string, extra ...string) string {
	b := `{"fromDate":"` + day + ` 00:00:00","toDate":"` + day + ` 23:59:59","userName":"` + user + `"`
	for i := 0; i+1 < len(extra); i += 2 {
		b += `,"` + extra[i] + `":"` + extra[i+1] + `"`
	}
	return b + "}"
}

// someAgents returns n agents "a00".."a(n-1)".
func someAgents(n int) map[string]string {
	m := make(map[string]string, n)
	for i := range n {
		m[fmt.Sprintf("a%02d", i)] = fmt.Sprintf("Agent %02d", i)
	}
	return m
}

// TestCDRAnswersInProductionShape: every CDR path answers the envelope and
// the 46 string fields with production's value formats.
func TestCDRAnswersInProductionShape(t *testing.T) {
	h := newHarness(t, Options{Agents: someAgents(4), CallsPerAgent: 5, Limit: -1})
	day := epoch.AddDate(0, 0, -1).Format("2006-01-02")
	code, _, b := h.do(http.MethodGet, cloudagent.PathFetchCDRDetails, basicAuth, dayBody("demo-basic", day))
	full := wantCDRs(t, code, b)
	if len(full.Details) != 20 || full.TotalCount != nil {
		t.Fatalf("%d records, totalCount %v; want 20 and none", len(full.Details), full.TotalCount)
	}
	some := full.Details[7]
	for _, c := range []struct {
		name, path, body string
		want             int
	}{
		{"pagination", cloudagent.PathFetchCdrByPagination + "?pageNo=1&pageSize=100", dayBody("demo-basic", day), 20},
		{"by UCID", cloudagent.PathFetchCdrByUCID, dayBody("demo-basic", day, "ucid", some.UCID), 1},
		{"unknown UCID", cloudagent.PathFetchCdrByUCID, dayBody("demo-basic", day, "ucid", "31767139200000999"), 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, _, b := h.do(http.MethodGet, c.path, basicAuth, c.body)
			ans := wantCDRs(t, code, b)
			if len(ans.Details) != c.want {
				t.Fatalf("%d records, want %d", len(ans.Details), c.want)
			}
			if c.want == 1 && ans.Details[0] != some {
				t.Fatalf("by UCID: %+v, want %+v", ans.Details[0], some)
			}
		})
	}
	// Records are in time order, every call id distinct.
	seen := map[string]bool{}
	for i, r := range full.Details {
		if seen[r.CallID] || (i > 0 && r.StartTime < full.Details[i-1].StartTime) {
			t.Fatalf("record %d out of order or repeated: %+v", i, r)
		}
		seen[r.CallID] = true
	}
}

// TestCDRDataIsDeterministic: the same seed gives the same bytes (so
// caches and load tests can compare answers); another seed other data.
func TestCDRDataIsDeterministic(t *testing.T) {
	day := epoch.AddDate(0, 0, -3).Format("2006-01-02")
	get := func(seed int64) []byte {
		h := newHarness(t, Options{Seed: seed, CallsPerAgent: 3})
		code, _, b := h.do(http.MethodGet, cloudagent.PathFetchCDRDetails, basicAuth, dayBody("demo-basic", day))
		wantCDRs(t, code, b)
		return b
	}
	a, b := get(42), get(42)
	if !bytes.Equal(a, b) {
		t.Fatal("seed 42 gave two different answers")
	}
	if bytes.Equal(a, get(43)) {
		t.Fatal("seeds 42 and 43 gave the same answer")
	}
}

// TestBusyDayRunsToMegabytes: 50 agents × 100 calls a day, as a busy
// account has, is over a MiB of JSON, all of it in one answer.
func TestBusyDayRunsToMegabytes(t *testing.T) {
	h := newHarness(t, Options{Agents: someAgents(50), CallsPerAgent: 100})
	day := epoch.AddDate(0, 0, -1).Format("2006-01-02")
	code, _, b := h.do(http.MethodGet, cloudagent.PathFetchCDRDetails, basicAuth, dayBody("demo-basic", day))
	var ans cloudagent.CDRAnswer // the shape of every record is TestCDRAnswersInProductionShape's
	if code != http.StatusOK || json.Unmarshal(b, &ans) != nil || len(ans.Details) != 5000 || len(b) <= 1<<20 {
		t.Fatalf("%d records in %d bytes; want 5000 in over 1 MiB", len(ans.Details), len(b))
	}
	t.Logf("busy day: %d records, %d bytes", len(ans.Details), len(b))
}

// TestCDRPagination: pageNo/pageSize pages cover the day exactly once,
// totalCount is the day's count on every page, a page past the end is
// empty, and a page that is not a positive number is refused.
func TestCDRPagination(t *testing.T) {
	h := newHarness(t, Options{Agents: someAgents(7), CallsPerAgent: 9, Window: time.Millisecond})
	day := epoch.AddDate(0, 0, -2).Format("2006-01-02")
	body := dayBody("demo-basic", day)
	code, _, b := h.do(http.MethodGet, cloudagent.PathFetchCDRDetails, basicAuth, body)
	whole := wantCDRs(t, code, b).Details
	var paged []cloudagent.CDRRecord
	for page := 1; ; page++ {
		h.clock.Advance(time.Second) // the 2-a-minute limit, on a 1 ms window
		code, _, b := h.do(http.MethodGet, cloudagent.PathFetchCdrByPagination+"?pageNo="+strconv.Itoa(page)+"&pageSize=10", basicAuth, body)
		ans := wantCDRs(t, code, b)
		if ans.TotalCount == nil || *ans.TotalCount != 63 {
			t.Fatalf("page %d: totalCount %v, want 63", page, ans.TotalCount)
		}
		if len(ans.Details) == 0 {
			if page != 8 {
				t.Fatalf("empty page %d", page)
			}
			break
		}
		paged = append(paged, ans.Details...)
	}
	if len(paged) != len(whole) {
		t.Fatalf("pages hold %d records, the day %d", len(paged), len(whole))
	}
	for i := range whole {
		if paged[i] != whole[i] {
			t.Fatalf("record %d differs: %+v vs %+v", i, paged[i], whole[i])
		}
	}
	for _, q := range []string{"pageNo=0", "pageNo=x", "pageSize=-1"} {
		h.clock.Advance(time.Second)
		code, _, b := h.do(http.MethodGet, cloudagent.PathFetchCdrByPagination+"?"+q, basicAuth, body)
		if code != http.StatusBadRequest {
			t.Fatalf("%s: HTTP %d %s", q, code, b)
		}
		wantTokenError(t, b, MsgCDRBadPage)
	}
}

// TestCDRRetentionAnswersEmpty: a backfill of the retained days, one day
// per call, meets records up to 15 days back and an empty success (not an
// error) before that, on both day paths.
func TestCDRRetentionAnswersEmpty(t *testing.T) {
	h := newHarness(t, Options{Agents: someAgents(2), CallsPerAgent: 2, Window: time.Millisecond})
	for back := 1; back <= cloudagent.CDRRetentionDays+3; back++ {
		day := epoch.AddDate(0, 0, -back).Format("2006-01-02")
		for _, path := range []string{cloudagent.PathFetchCDRDetails, cloudagent.PathFetchCdrByPagination} {
			h.clock.Advance(time.Second)
			code, _, b := h.do(http.MethodGet, path, basicAuth, dayBody("demo-basic", day))
			ans := wantCDRs(t, code, b)
			// Retention counts from the time of the request: a day whose
			// fromDate is more than 15 days before now (the 15th day back,
			// from midnight) is out.
			if kept := back < cloudagent.CDRRetentionDays; kept != (len(ans.Details) == 4) || (back > cloudagent.CDRRetentionDays && len(ans.Details) != 0) {
				t.Fatalf("%d days back, %s: %d records", back, path, len(ans.Details))
			}
		}
	}
	if st := h.sim.Stats(); st.ReportLimited != 0 || st.LimitViolations != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// TestCDRTodayHoldsEndedCallsOnly: today's records are the calls already
// over, and grow as the day goes on; a future day has none.
func TestCDRTodayHoldsEndedCallsOnly(t *testing.T) {
	h := newHarness(t, Options{Agents: someAgents(3), CallsPerAgent: 10, Window: time.Millisecond})
	today := epoch.Format("2006-01-02")
	count := func() int {
		h.clock.Advance(time.Second)
		code, _, b := h.do(http.MethodGet, cloudagent.PathFetchCDRDetails, basicAuth, dayBody("demo-basic", today))
		return len(wantCDRs(t, code, b).Details)
	}
	morning := count() // 09:00: the working day has just begun
	h.clock.Advance(5 * time.Hour)
	noon := count()
	h.clock.Advance(10 * time.Hour)
	night := count()
	if morning != 0 || noon <= morning || noon >= night || night != 30 {
		t.Fatalf("calls over at 09:00 %d, 14:00 %d, 24:00 %d", morning, noon, night)
	}
	tomorrow := epoch.AddDate(0, 0, 2).Format("2006-01-02")
	code, _, b := h.do(http.MethodGet, cloudagent.PathFetchCDRDetails, basicAuth, dayBody("demo-basic", tomorrow))
	if n := len(wantCDRs(t, code, b).Details); n != 0 {
		t.Fatalf("a future day has %d records", n)
	}
}

// TestFetchCdrByUCIDContract: the reporting API's rules hold on the UCID
// path too: apiKey only, a JSON body (query parameters refused), GET only,
// the ucid required, one day, 2 calls a minute.
func TestFetchCdrByUCIDContract(t *testing.T) {
	h := newHarness(t, Options{})
	day := epoch.AddDate(0, 0, -1).Format("2006-01-02")
	body := dayBody("demo", day, "ucid", "31767139200000001")
	tok := h.token("demo", "demo-key")
	for _, c := range []struct {
		name, method, path string
		header             hdr
		body               string
		code               int
		msg                string
	}{
		{"bearer", http.MethodGet, cloudagent.PathFetchCdrByUCID, bearer(tok), body, http.StatusUnauthorized, cloudagent.MsgMissingUserNameOrAPIKey},
		{"wrong key", http.MethodGet, cloudagent.PathFetchCdrByUCID, hdr{"apiKey": "nope"}, body, http.StatusUnauthorized, cloudagent.MsgMissingUserNameOrAPIKey},
		{"query", http.MethodGet, cloudagent.PathFetchCdrByUCID + "?userName=demo&ucid=1&fromDate=" + url.QueryEscape(day+" 00:00:00"), demoKey, "", http.StatusBadRequest, cloudagent.MsgInvalidJSONPassValid},
		{"POST", http.MethodPost, cloudagent.PathFetchCdrByUCID, demoKey, body, http.StatusMethodNotAllowed, MsgMethodNotAllowed},
		{"no ucid", http.MethodGet, cloudagent.PathFetchCdrByUCID, demoKey, dayBody("demo", day), http.StatusBadRequest, MsgCDRNoUCID},
		{"two days", http.MethodGet, cloudagent.PathFetchCdrByUCID, demoKey, `{"fromDate":"2025-12-30 00:00:00","toDate":"2025-12-31 00:00:00","userName":"demo","ucid":"1"}`, http.StatusBadRequest, MsgCDROneDay},
		{"third in a minute", http.MethodGet, cloudagent.PathFetchCdrByUCID, demoKey, body, http.StatusTooManyRequests, MsgReportsLimited},
	} {
		code, _, b := h.do(c.method, c.path, c.header, c.body)
		if code != c.code {
			t.Fatalf("%s: HTTP %d %s", c.name, code, b)
		}
		wantTokenError(t, b, c.msg)
	}
	if st := h.sim.Stats(); st.ReportAdmitted != 2 || st.ReportLimited != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// TestSummaryReportRows: one row per agent per day with the documented
// fields, deterministic, filtered by agentId.
func TestSummaryReportRows(t *testing.T) {
	h := newHarness(t, Options{Agents: someAgents(3), Window: time.Millisecond})
	body := `{"fromDate":"2025-12-30 00:00:00","toDate":"2025-12-31 23:59:59","userName":"demo-basic"}`
	var raw struct {
		Status, Message string
		Details         []map[string]string
	}
	code, _, b := h.do(http.MethodPost, cloudagent.PathSummaryReport, basicAuth, body)
	if code != http.StatusOK || json.Unmarshal(b, &raw) != nil || raw.Status != "success" || raw.Message != "success" || len(raw.Details) != 6 {
		t.Fatalf("HTTP %d %.300s", code, b)
	}
	for _, row := range raw.Details {
		if len(row) != 11 || !datePattern.MatchString(row["CallDate"]) || row["AgentName"] == "" || row["ModeType"] == "" {
			t.Fatalf("row %v", row)
		}
		for _, f := range []string{"TotalBusyTime", "TotalDialTime", "TotalIdleTime", "TotalLoginDuration", "TotalPauseTime", "TotalWrapupTime"} {
			if !hmsPattern.MatchString(row[f]) {
				t.Fatalf("%s in %v", f, row)
			}
		}
	}
	h.clock.Advance(time.Second)
	_, _, again := h.do(http.MethodGet, cloudagent.PathSummaryReport, basicAuth, body)
	if !bytes.Equal(again, b) {
		t.Fatal("the same summary answered differently")
	}
	h.clock.Advance(time.Second)
	code, _, b = h.do(http.MethodPost, cloudagent.PathSummaryReport, basicAuth,
		`{"fromDate":"2025-12-31 00:00:00","toDate":"2025-12-31 23:59:59","userName":"demo-basic","agentId":"a01, nobody"}`)
	if json.Unmarshal(b, &raw) != nil || len(raw.Details) != 1 || raw.Details[0]["AgentUniqueID"] != "a01" {
		t.Fatalf("filtered: HTTP %d %s", code, b)
	}
}

// TestManualDialAnswers: both dial APIs answer what clients check, a
// 17-digit ucid and "queued successfully"; PhoneManualDial answers
// "queued" with the ucid as its message. Each is one placed call.
func TestManualDialAnswers(t *testing.T) {
	h := newHarness(t, Options{})
	code, b := h.post(cloudagent.PathAgentManualDial, basicAuth, `{"userName":"demo-basic","agentID":"agent001","campaignName":"Outbound_Sales","customerNumber":"9876543210"}`)
	var md cloudagent.ManualDialAnswer
	if code != http.StatusOK || json.Unmarshal(b, &md) != nil || md.Status != "queued successfully" || !digits17.MatchString(md.UCID) {
		t.Fatalf("AgentManualDial: HTTP %d %s", code, b)
	}
	code, b = h.post(cloudagent.PathPhoneManualDial, basicAuth, `{"userName":"demo-basic","custNumber":"9876543210","phoneName":"desk1","did":"08041234567"}`)
	var pd struct{ Status, Message string }
	if code != http.StatusOK || json.Unmarshal(b, &pd) != nil || pd.Status != "queued" || !digits17.MatchString(pd.Message) || pd.Message == md.UCID {
		t.Fatalf("PhoneManualDial: HTTP %d %s", code, b)
	}
	_, b = h.post(cloudagent.PathPhoneManualDial, basicAuth, `{"userName":"demo-basic","custNumber":"9876543210"}`)
	wantError(t, b, MsgPhoneDialMissing)
	if code, _, _ := h.do(http.MethodGet, cloudagent.PathPhoneManualDial, basicAuth, ""); code != http.StatusMethodNotAllowed {
		t.Fatalf("GET PhoneManualDial: %d", code)
	}
	if st := h.sim.Stats(); st.ManualDials != 2 || st.PerAccount["demo-basic"].ManualDials != 2 {
		t.Fatalf("stats %+v", st)
	}
}

// TestLegacyManualDialChecksQueryCredentials: the legacy path takes the
// account's apiKey and userName from the query string (either spelling),
// ignores headers and body, and places a call only for good ones.
func TestLegacyManualDialChecksQueryCredentials(t *testing.T) {
	h := newHarness(t, Options{})
	const rest = "&agentID=agent001&campaignName=Outbound_Sales&customerNumber=9876543210&format=json"
	for _, c := range []struct {
		name, query string
		header      hdr
		status, msg string // msg "" for a placed call
	}{
		{"api_key and username", "api_key=demo-basic-key&username=demo-basic" + rest, nil, "queued successfully", ""},
		{"apiKey and userName", "apiKey=demo-basic-key&userName=demo-basic" + rest, nil, "queued successfully", ""},
		{"token-mode account's key", "api_key=demo-key&username=demo" + rest, nil, "queued successfully", ""},
		{"wrong key", "api_key=nope&username=demo-basic" + rest, nil, "fail", MsgLegacyBadCredentials},
		{"another account's key", "api_key=demo-key&username=demo-basic" + rest, nil, "fail", MsgLegacyBadCredentials},
		{"no key, header only", "username=demo-basic" + rest, basicAuth, "fail", MsgLegacyBadCredentials},
		{"unknown user", "api_key=demo-basic-key&username=ghost" + rest, nil, "fail", MsgLegacyBadCredentials},
		{"no customer", "api_key=demo-basic-key&username=demo-basic&agentID=agent001&campaignName=Outbound_Sales", nil, "Fail", MsgLegacyMissing},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, _, b := h.do(http.MethodPost, cloudagent.PathLegacyAgentManualDial+"?"+c.query, c.header, "")
			var got struct{ Status, Message, UCID string }
			if code != http.StatusOK || json.Unmarshal(b, &got) != nil || got.Status != c.status || got.Message != c.msg {
				t.Fatalf("HTTP %d %s", code, b)
			}
			if c.msg == "" && !digits17.MatchString(got.UCID) {
				t.Fatalf("ucid %q", got.UCID)
			}
		})
	}
	if st := h.sim.Stats(); st.ManualDials != 3 {
		t.Fatalf("%d calls placed, want 3", st.ManualDials)
	}
}

// TestAgentAndCallControlAPIs: getAgentLogins (5 a minute), changeAgentState,
// CallControl_V4 and the v2 agent status answer in their documented (or,
// for v2, plausible) shapes, in the account's own auth mode.
func TestAgentAndCallControlAPIs(t *testing.T) {
	h := newHarness(t, Options{Agents: someAgents(3)})
	tok := h.token("demo", "demo-key")
	var logins struct {
		Status  string
		Message []cloudagent.AgentLogin
	}
	for i := range cloudagent.AgentLoginsLimit {
		code, b := h.post(cloudagent.PathGetAgentLogins, bearer(tok), `{"userName":"demo"}`)
		if code != http.StatusOK || json.Unmarshal(b, &logins) != nil || logins.Status != "success" || len(logins.Message) != 3 ||
			logins.Message[0].AgentID != "a00" || logins.Message[0].AgentState == "" || logins.Message[0].PhoneNumber == "" {
			t.Fatalf("getAgentLogins %d: HTTP %d %s", i, code, b)
		}
	}
	_, b := h.post(cloudagent.PathGetAgentLogins, bearer(tok), `{"userName":"demo"}`)
	wantError(t, b, cloudagent.MsgLimitExceeded)
	_, b = h.post(cloudagent.PathGetAgentLogins, hdr{"apiKey": "demo-key"}, `{"userName":"demo"}`)
	wantTokenError(t, b, cloudagent.MsgTokenInvalid) // a token-mode account needs its token

	for _, c := range []struct {
		name, path, body, want string
	}{
		{"pause", cloudagent.PathChangeAgentState, `{"userName":"demo-basic","agentId":"a01","state":"Pause"}`, `"status":"success"`},
		{"bad state", cloudagent.PathChangeAgentState, `{"userName":"demo-basic","agentId":"a01","state":"Away"}`, MsgBadAgentState},
		{"unknown agent", cloudagent.PathChangeAgentState, `{"userName":"demo-basic","agentId":"zz","state":"Ready"}`, cloudagent.MsgInvalidAgent},
		{"hold", cloudagent.PathCallControl, `{"userName":"demo-basic","action":"HOLD","ucid":"31767139200000001"}`, `{"status":"Success","message":"User hold is successful","ucid":"31767139200000001"}`},
		{"bad action", cloudagent.PathCallControl, `{"userName":"demo-basic","action":"SING","ucid":"1"}`, `"status":"Error"`},
	} {
		code, b := h.post(c.path, basicAuth, c.body)
		if code != http.StatusOK || !bytes.Contains(b, []byte(c.want)) {
			t.Fatalf("%s: HTTP %d %s", c.name, code, b)
		}
	}
	_, b = h.post(cloudagent.PathCallControl, hdr{"apiKey": "nope"}, `{"userName":"demo-basic","action":"HOLD","ucid":"1"}`)
	wantError(t, b, cloudagent.MsgInvalidCredentials)

	for _, c := range []struct {
		name   string
		header hdr
		path   string
		want   string
	}{
		{"token", bearer(tok), "/ca_apis/v2/agents/a02/status", `"AgentId":"a02"`},
		{"apiKey", basicAuth, "/ca_apis/v2/agents/a00/status", `"AgentName":"Agent 00"`},
		{"unknown agent", basicAuth, "/ca_apis/v2/agents/zz/status", cloudagent.MsgInvalidAgent},
		{"no credentials", nil, "/ca_apis/v2/agents/a00/status", cloudagent.MsgAPIKeyEmpty},
	} {
		code, _, b := h.do(http.MethodGet, c.path, c.header, "")
		if code != http.StatusOK || !bytes.Contains(b, []byte(c.want)) {
			t.Fatalf("v2 status, %s: HTTP %d %s", c.name, code, b)
		}
	}
	for _, c := range []struct{ method, path string }{
		{http.MethodGet, cloudagent.PathGetAgentLogins},
		{http.MethodGet, cloudagent.PathChangeAgentState},
		{http.MethodGet, cloudagent.PathCallControl},
		{http.MethodPost, "/ca_apis/v2/agents/a00/status"},
	} {
		if code, _, b := h.do(c.method, c.path, basicAuth, ""); code != http.StatusMethodNotAllowed {
			t.Fatalf("%s %s: HTTP %d %s", c.method, c.path, code, b)
		}
	}
	if st := h.sim.Stats(); st.ControlCalls == 0 || st.LimitViolations != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// TestAppendCDRAnswerMatchesMarshal: the fast encoder writes exactly what
// encoding/json does, for generated records and for values json escapes.
func TestAppendCDRAnswerMatchesMarshal(t *testing.T) {
	s := New(Options{Agents: someAgents(3), CallsPerAgent: 4})
	day := epoch.AddDate(0, 0, -1)
	recs := s.calls.day("demo", day, day, day.Add(24*time.Hour-time.Second), epoch)
	recs[0].AgentName = "Ravi \"R\" <Kumar> & Søn\\\n"
	recs[1].Comments = "\u2028 tab\t"
	total := 12
	for _, ans := range []cloudagent.CDRAnswer{
		{Status: "success", Message: "success", Details: recs},
		{Status: "success", Message: "success", Details: recs[:0], TotalCount: &total},
		{Status: "success", Message: "success", Details: []cloudagent.CDRRecord{}},
	} {
		want, err := json.Marshal(ans)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendCDRAnswer(nil, &ans); !bytes.Equal(got, want) {
			t.Fatalf("appendCDRAnswer:\n%s\nwant\n%s", got, want)
		}
	}
}
