package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caproxy/caproxy/cloudagent"
)

// TestClientsConform is the client-conformance table: one row per request
// shape a public CloudAgent client sends in production (DESIGN.md,
// "Production answer shapes and client habits"), described rather than
// copied, sent through the built caproxy binary to "caproxy sim", asserting
// what that client parses from the answer. Between caproxy and the
// simulator sits a recording tap (a plain reverse proxy), so each row also
// checks what reached CloudAgent: the number of upstream calls, and that no
// client credential did (only the account's, in the style the path needs).
func TestClientsConform(t *testing.T) {
	s := startSim(t, "-seed", "18", "-calls-per-agent", "1")
	tap := startTap(t, s.url())
	p := startProxy(t, proxyConfig{Upstream: tap.url(), Accounts: []account{
		{"demo", demoKey, "token"}, {"demo-basic", demoBasicKey, "apikey"}, {"demo2", demo2Key, "token"},
	}})
	c := newClient(t)

	// Token clients get their token from caproxy at either token path,
	// as they would from CloudAgent.
	token := func(path, user, key string) string {
		r := c.do(http.MethodPost, p.url(path), `{"userName":"`+user+`"}`, cloudagent.HeaderAPIKey, key)
		var tr cloudagent.TokenResponse
		if r.code != http.StatusOK || json.Unmarshal([]byte(r.body), &tr) != nil || tr.Token == "" {
			t.Fatalf("generateToken at %s: %d %s", path, r.code, r.body)
		}
		addSecret(tr.Token)
		return tr.Token
	}
	demoAPIsToken := token(cloudagent.PathGenerateToken, "demo", demoKey)
	demoReportsToken := token(cloudagent.PathReportsGenerateToken, "demo", demoKey)
	demo2Token := token(cloudagent.PathGenerateToken, "demo2", demo2Key)
	if n := tap.count(); n != 0 {
		t.Fatalf("generateToken through caproxy reached the upstream %d times", n)
	}
	keys := map[string]string{"demo": demoKey, "demo-basic": demoBasicKey, "demo2": demo2Key}

	now := time.Now()
	yesterday := now.AddDate(0, 0, -1).Format("2006-01-02")
	backfillDay := now.AddDate(0, 0, -20).Format("2006-01-02")
	dayBody := func(user, day, extra string) string {
		return `{"fromDate":"` + day + ` 00:00:00","toDate":"` + day + ` 23:59:59","userName":"` + user + `"` + extra + `}`
	}
	apiKey := func(user string) []string { return []string{cloudagent.HeaderAPIKey, keys[user]} }
	// A UCID read from a CDR answer, for the clients that look one call up.
	var seenUCID string

	rows := []clientRow{{
		name:   "Python requests AHT client: POST aht with a JSON body and the apiKey header",
		method: http.MethodPost, path: cloudagent.PathAHT, account: "demo-basic",
		header: apiKey("demo-basic"), body: ahtBody("demo-basic", "agent001"),
		upstream: 1, parse: parseAgentAHT("agent001"),
	}, {
		name:   "Node token client: generateToken at /ca_apis, then POST aht with Authorization: Bearer <token>",
		method: http.MethodPost, path: cloudagent.PathAHT, account: "demo",
		header: []string{"Authorization", "Bearer " + demoAPIsToken}, body: ahtBody("demo", "agent002"),
		upstream: 1, parse: parseAgentAHT("agent002"),
	}, {
		name:   "TypeScript reporting client: generateToken at /ca_reports, then POST aht with its Bearer token",
		method: http.MethodPost, path: cloudagent.PathAHT, account: "demo",
		header: []string{"Authorization", "Bearer " + demoReportsToken}, body: ahtBody("demo", "agent003"),
		upstream: 1, parse: parseAgentAHT("agent003"),
	}, {
		name:   "Express client: POST aht with the token bare in Authorization (no Bearer)",
		method: http.MethodPost, path: cloudagent.PathAHT, account: "demo2",
		header: []string{"Authorization", demo2Token}, body: ahtBody("demo2", "agent004"),
		upstream: 1, parse: parseAgentAHT("agent004"),
	}, {
		name:   "Python requests CDR exporter: GET fetchCDRDetails with a JSON body (yesterday) and the apiKey header",
		method: http.MethodGet, path: cloudagent.PathFetchCDRDetails, account: "demo-basic",
		header: apiKey("demo-basic"), body: dayBody("demo-basic", yesterday, ""),
		upstream: 1, parse: func(t *testing.T, r response) {
			recs := parseCDRs(t, r, yesterday, false)
			seenUCID = recs[0].UCID
		},
	}, {
		name:   "Node CDR client: POST fetchCDRDetails first, on 405 the same request as GET",
		method: http.MethodPost, path: cloudagent.PathFetchCDRDetails, account: "demo-basic", retryGETOn405: true,
		header: apiKey("demo-basic"), body: dayBody("demo-basic", yesterday, ""),
		upstream: 0, // the retry is the previous row's request: served from cache
		parse:    func(t *testing.T, r response) { parseCDRs(t, r, yesterday, false) },
	}, {
		name:   "Python backfill job: GET fetchCDRDetails for a day 20 days back, past retention",
		method: http.MethodGet, path: cloudagent.PathFetchCDRDetails, account: "demo-basic",
		header: apiKey("demo-basic"), body: dayBody("demo-basic", backfillDay, ""),
		upstream: 1, parse: func(t *testing.T, r response) { parseCDRs(t, r, backfillDay, true) },
	}, {
		name:   "Rails controller: GET fetchCDRDetails with the apiKey header and a Bearer token together",
		method: http.MethodGet, path: cloudagent.PathFetchCDRDetails, account: "demo",
		header:   []string{cloudagent.HeaderAPIKey, demoKey, "Authorization", "Bearer " + demoAPIsToken},
		body:     dayBody("demo", yesterday, ""),
		upstream: 1, parse: func(t *testing.T, r response) { parseCDRs(t, r, yesterday, false) },
	}, {
		name:   "httpx pager: GET fetchCdrByPagination?pageNo=1&pageSize=100 with the day's JSON body",
		method: http.MethodGet, path: cloudagent.PathFetchCdrByPagination, query: "pageNo=1&pageSize=100", account: "demo-basic",
		header: apiKey("demo-basic"), body: dayBody("demo-basic", yesterday, ""),
		upstream: 1, parse: parseCDRPage(yesterday, 100),
	}, {
		name:   "TypeScript call lookup: GET fetchCdrByUCID with a JSON body naming one UCID",
		method: http.MethodGet, path: cloudagent.PathFetchCdrByUCID, account: "demo-basic",
		header: apiKey("demo-basic"), bodyFunc: func() string { return dayBody("demo-basic", yesterday, `,"ucid":"`+seenUCID+`"`) },
		upstream: 1, parse: func(t *testing.T, r response) {
			recs := parseCDRs(t, r, yesterday, false)
			if len(recs) != 1 || recs[0].UCID != seenUCID {
				t.Fatalf("fetchCdrByUCID: %d records, want the one with UCID %s", len(recs), seenUCID)
			}
		},
	}, {
		name:   "Python dashboard: POST summaryReport with the day's JSON body and the apiKey header",
		method: http.MethodPost, path: cloudagent.PathSummaryReport, account: "demo-basic",
		header: apiKey("demo-basic"), body: dayBody("demo-basic", yesterday, ""),
		upstream: 1, parse: parseSummary(yesterday),
	}, {
		name:   "Node dialer: POST AgentManualDial with a JSON body and the apiKey header",
		method: http.MethodPost, path: cloudagent.PathAgentManualDial, account: "demo-basic",
		header:   apiKey("demo-basic"),
		body:     `{"userName":"demo-basic","agentID":"agent001","campaignName":"Outbound_Sales","customerNumber":"9876543210"}`,
		upstream: 1, parse: parseQueued,
	}, {
		name:   "PHP-era dialer: POST /CAServices/AgentManualDial.php, api_key and username in the query, empty body",
		method: http.MethodPost, path: cloudagent.PathLegacyAgentManualDial, account: "demo-basic", legacy: true,
		query:    "api_key=" + demoBasicKey + "&username=demo-basic&agentID=agent001&campaignName=Outbound_Sales&customerNumber=9876543210&format=json",
		upstream: 1, parse: parseQueued,
	}, {
		name:   "Node dialer on the legacy path: apiKey and userName spelled camelCase in the query, empty body",
		method: http.MethodPost, path: cloudagent.PathLegacyAgentManualDial, account: "demo", legacy: true,
		query:    "apiKey=" + demoKey + "&userName=demo&agentID=agent002&campaignName=Outbound_Sales&customerNumber=9876543210&format=json",
		upstream: 1, parse: parseQueued,
	}, {
		name:   "Token client on the legacy path: username in the query, its caproxy token in Authorization, no api_key",
		method: http.MethodPost, path: cloudagent.PathLegacyAgentManualDial, account: "demo", legacy: true,
		header:   []string{"Authorization", "Bearer " + demoAPIsToken},
		query:    "username=demo&agentID=agent003&campaignName=Outbound_Sales&customerNumber=9876543210&format=json",
		upstream: 1, parse: parseQueued,
	}, {
		name:   "Legacy dialer with a mistyped api_key: refused by caproxy in CloudAgent's words, nothing sent upstream",
		method: http.MethodPost, path: cloudagent.PathLegacyAgentManualDial, account: "demo-basic", legacy: true,
		query:    "api_key=not-the-key&username=demo-basic&agentID=agent001&campaignName=Outbound_Sales&customerNumber=9876543210&format=json",
		upstream: 0, parse: parseRefusal(http.StatusUnauthorized, cloudagent.MsgInvalidCredentials),
	}, {
		name:   "Express client still holding a token CloudAgent issued, sent bare: the refusal names the token",
		method: http.MethodPost, path: cloudagent.PathAHT, account: "demo2",
		header: []string{"Authorization", "0123456789abcdef0123456789abcdef"}, body: ahtBody("demo2", "agent004"),
		upstream: 0, parse: parseRefusal(http.StatusUnauthorized, "token is invalid or expired"),
	}, {
		name:   "Express field-agent app: POST PhoneManualDial with a JSON body and a Bearer token",
		method: http.MethodPost, path: cloudagent.PathPhoneManualDial, account: "demo",
		header:   []string{"Authorization", "Bearer " + demoAPIsToken},
		body:     `{"userName":"demo","custNumber":"9876543210","phoneName":"field01","did":"918069000000","campaignName":"Outbound_Sales","uui":"","checkStatus":"true"}`,
		upstream: 1, parse: func(t *testing.T, r response) {
			var a struct{ Status, Message string }
			if err := decodeOK(r, &a); err != nil || a.Status != cloudagent.StatusQueued || !ucidRe.MatchString(a.Message) {
				t.Fatalf("PhoneManualDial: %v %d %s, want status queued and a 17-digit ucid as message", err, r.code, r.body)
			}
		},
	}, {
		name:   "TypeScript call-control client: POST CallControl_V4 HOLD with a JSON body and the apiKey header",
		method: http.MethodPost, path: cloudagent.PathCallControl, account: "demo-basic",
		header: apiKey("demo-basic"), body: `{"userName":"demo-basic","action":"HOLD","ucid":"31733467784618213"}`,
		upstream: 1, parse: func(t *testing.T, r response) {
			var a struct{ Status, Message, UCID string }
			if err := decodeOK(r, &a); err != nil || a.Status != "Success" || a.UCID != "31733467784618213" || a.Message == "" {
				t.Fatalf("CallControl_V4: %v %d %s, want status Success and the ucid back", err, r.code, r.body)
			}
		},
	}, {
		name:   "Python wallboard: POST getAgentLogins with a JSON body and a Bearer token",
		method: http.MethodPost, path: cloudagent.PathGetAgentLogins, account: "demo",
		header: []string{"Authorization", "Bearer " + demoAPIsToken}, body: `{"userName":"demo"}`,
		upstream: 1, parse: func(t *testing.T, r response) {
			var a struct {
				Status  string
				Message []cloudagent.AgentLogin
			}
			if err := decodeOK(r, &a); err != nil || a.Status != cloudagent.StatusSuccess || len(a.Message) == 0 ||
				a.Message[0].AgentID == "" || a.Message[0].AgentState == "" {
				t.Fatalf("getAgentLogins: %v %d %.300s, want a list of agents with AgentId and AgentState", err, r.code, r.body)
			}
		},
	}, {
		name:   "Rails agent console: POST changeAgentState to Ready with a JSON body and the apiKey header",
		method: http.MethodPost, path: cloudagent.PathChangeAgentState, account: "demo-basic",
		header: apiKey("demo-basic"), body: `{"userName":"demo-basic","agentId":"agent001","state":"Ready","phoneName":"agent001","pauseReason":""}`,
		upstream: 1, parse: func(t *testing.T, r response) {
			var a struct{ Status, Message string }
			if err := decodeOK(r, &a); err != nil || a.Status != cloudagent.StatusSuccess || !strings.Contains(a.Message, "READY") {
				t.Fatalf("changeAgentState: %v %d %s, want status success and the agent READY", err, r.code, r.body)
			}
		},
	}, {
		name:   "OzonetelService-style client: GET v2/agents/{id}/status with the apiKey header and a Bearer token, no body",
		method: http.MethodGet, path: cloudagent.AgentStatusPrefix + "agent005/status", account: "demo",
		header:   []string{cloudagent.HeaderAPIKey, demoKey, "Authorization", "Bearer " + demoAPIsToken},
		upstream: 1, parse: func(t *testing.T, r response) {
			var raw struct {
				Status  string
				Message map[string]string
			}
			if err := decodeOK(r, &raw); err != nil || raw.Status != cloudagent.StatusSuccess ||
				raw.Message["AgentId"] != "agent005" || raw.Message["State"] == "" {
				t.Fatalf("v2 agent status: %v %d %s, want status success, AgentId agent005 and a State", err, r.code, r.body)
			}
		},
	}}

	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			before := tap.count()
			r := row.send(t, c, p)
			row.parse(t, r)
			// caproxy generates an upstream token for a token account
			// when it first needs one: its own call, not the row's.
			calls := 0
			for _, u := range tap.since(before) {
				if cloudagent.IsTokenPath(u.path) {
					continue
				}
				calls++
				if err := u.carriesOnly(row.account, keys[row.account], row.legacy); err != nil {
					t.Error(err)
				}
			}
			if calls != row.upstream {
				t.Fatalf("%d upstream calls, want %d: %v", calls, row.upstream, tap.since(before))
			}
		})
	}

	st := s.stats(t, c)
	// One upstream token per token account (demo, demo2), however many
	// clients asked caproxy for one.
	if st.LimitViolations != 0 || st.ReportAuthFailed != 0 || st.AHTAuthFailed != 0 || st.TokenGenerations > 2 {
		t.Fatalf("the simulator refused calls: %+v", st)
	}
}

// clientRow is one request shape of a public client and what it reads.
type clientRow struct {
	name         string
	method, path string
	query        string   // raw query, without "?"
	header       []string // name, value pairs
	body         string
	bodyFunc     func() string // a body built from an earlier row's answer
	// retryGETOn405 is the habit of clients that POST to a GET-only path
	// first: the answer must be a CloudAgent-shaped 405, then the same
	// request is sent as GET and that answer parsed.
	retryGETOn405 bool
	// account is the CloudAgent account the request acts for, whose
	// credentials alone may reach the upstream; legacy marks a path that
	// takes them in the query string.
	account string
	legacy  bool
	// upstream is how many calls the row makes upstream.
	upstream int
	parse    func(t *testing.T, r response)
}

// send makes the row's request the way the client does.
func (row clientRow) send(t *testing.T, c *client, p *caproxy) response {
	t.Helper()
	u := p.url(row.path)
	if row.query != "" {
		u += "?" + row.query
	}
	body := row.body
	if row.bodyFunc != nil {
		body = row.bodyFunc()
	}
	r := c.do(row.method, u, body, row.header...)
	if !row.retryGETOn405 {
		return r
	}
	if _, ok := cloudagent.ErrorMessage([]byte(r.body)); r.code != http.StatusMethodNotAllowed || !ok {
		t.Fatalf("%s first: %d %s, want 405 in CloudAgent's shape (the client retries with GET on 405 only)", row.method, r.code, r.body)
	}
	return c.do(http.MethodGet, u, body, row.header...)
}

var (
	ucidRe = regexp.MustCompile(`^\d{17}$`)
	dateRe = regexp.MustCompile(`^\d{4}-\d\d-\d\d$`)
)

// decodeOK decodes a 200 answer's JSON body into v.
func decodeOK(r response, v any) error {
	if r.code != http.StatusOK {
		return fmt.Errorf("HTTP %d", r.code)
	}
	return json.Unmarshal([]byte(r.body), v)
}

// parseAgentAHT reads an agent's AHT as AHT clients do.
func parseAgentAHT(agent string) func(*testing.T, response) {
	return func(t *testing.T, r response) {
		t.Helper()
		if err := agentAHTProblem(r, agent, ""); err != nil {
			t.Fatal(err)
		}
	}
}

// cdrFields are the 46 field names of a production CDR record.
var cdrFields = func() []string {
	var names []string
	rt := reflect.TypeFor[cloudagent.CDRRecord]()
	for i := range rt.NumField() {
		names = append(names, rt.Field(i).Tag.Get("json"))
	}
	return names
}()

// parseCDRs reads a CDR answer as the clients do: status and message
// "success", records under "details", every field present and a string,
// CallID and UCID 17-digit strings, the day's date, HH:MM:SS times. An
// empty day must still be a success with "details":[] (a backfill reads
// it as no calls, not as an error).
func parseCDRs(t *testing.T, r response, day string, wantEmpty bool) []cloudagent.CDRRecord {
	t.Helper()
	var env struct {
		Status, Message string
		Details         []map[string]any
	}
	if err := decodeOK(r, &env); err != nil || env.Status != cloudagent.StatusSuccess || env.Message != cloudagent.MsgSuccess || env.Details == nil {
		t.Fatalf("CDR answer: %v %d %.300s, want status and message success and a details list", err, r.code, r.body)
	}
	if wantEmpty != (len(env.Details) == 0) {
		t.Fatalf("CDR answer for %s: %d records, want empty=%v", day, len(env.Details), wantEmpty)
	}
	recs := make([]cloudagent.CDRRecord, len(env.Details))
	for i, d := range env.Details {
		for _, f := range cdrFields {
			if _, ok := d[f].(string); !ok {
				t.Fatalf("record %d: field %s is %T (%v), want a string", i, f, d[f], d[f])
			}
		}
		if len(d) != len(cdrFields) {
			t.Fatalf("record %d has %d fields, want %d", i, len(d), len(cdrFields))
		}
		b, _ := json.Marshal(d)
		json.Unmarshal(b, &recs[i])
		rec := recs[i]
		switch {
		case !ucidRe.MatchString(rec.CallID) || !ucidRe.MatchString(rec.UCID):
			t.Fatalf("record %d: CallID %q UCID %q, want 17-digit strings", i, rec.CallID, rec.UCID)
		case rec.CallDate != day || !dateRe.MatchString(rec.CallDate):
			t.Fatalf("record %d: CallDate %q, want %s", i, rec.CallDate, day)
		case !hmsRe.MatchString(rec.StartTime) || !hmsRe.MatchString(rec.EndTime) || !hmsRe.MatchString(rec.Duration):
			t.Fatalf("record %d: StartTime %q EndTime %q Duration %q, want HH:MM:SS", i, rec.StartTime, rec.EndTime, rec.Duration)
		case rec.Status != cloudagent.CallAnswered && rec.Status != cloudagent.CallUnanswered:
			t.Fatalf("record %d: Status %q", i, rec.Status)
		case rec.CallAudio != "" && !strings.HasPrefix(rec.CallAudio, "http"):
			t.Fatalf("record %d: CallAudio %q, want a URL or empty", i, rec.CallAudio)
		}
	}
	return recs
}

// parseCDRPage reads a page as paging clients do: details (at most
// pageSize) and the day's totalCount, a number.
func parseCDRPage(day string, pageSize int) func(*testing.T, response) {
	return func(t *testing.T, r response) {
		t.Helper()
		recs := parseCDRs(t, r, day, false)
		var page struct {
			TotalCount *int `json:"totalCount"`
		}
		if err := json.Unmarshal([]byte(r.body), &page); err != nil || page.TotalCount == nil {
			t.Fatalf("page: %v, no numeric totalCount in %.300s", err, r.body)
		}
		if want := min(pageSize, *page.TotalCount); len(recs) != want {
			t.Fatalf("page of %d records with totalCount %d, want %d", len(recs), *page.TotalCount, want)
		}
	}
}

// parseSummary reads summaryReport rows as dashboards do.
func parseSummary(day string) func(*testing.T, response) {
	return func(t *testing.T, r response) {
		t.Helper()
		var a cloudagent.SummaryAnswer
		if err := decodeOK(r, &a); err != nil || a.Status != cloudagent.StatusSuccess || len(a.Details) == 0 {
			t.Fatalf("summaryReport: %v %d %.300s, want status success and details rows", err, r.code, r.body)
		}
		for _, row := range a.Details {
			if row.AgentName == "" || row.CallDate != day || !hmsRe.MatchString(row.TotalLoginDuration) {
				t.Fatalf("summary row %+v, want AgentName, CallDate %s and TotalLoginDuration HH:MM:SS", row, day)
			}
		}
	}
}

// parseRefusal reads a refusal as clients do: the HTTP status and
// CloudAgent's error shape with msg.
func parseRefusal(code int, msg string) func(*testing.T, response) {
	return func(t *testing.T, r response) {
		t.Helper()
		checkError(t, r, code, msg)
	}
}

// parseQueued reads a manual dial's answer as dialers do: the status must
// be "queued successfully" and ucid is kept.
func parseQueued(t *testing.T, r response) {
	t.Helper()
	var a cloudagent.ManualDialAnswer
	if err := decodeOK(r, &a); err != nil || a.Status != cloudagent.StatusQueuedSuccessfully || !ucidRe.MatchString(a.UCID) {
		t.Fatalf("manual dial: %v %d %s, want status %q and a 17-digit ucid", err, r.code, r.body, cloudagent.StatusQueuedSuccessfully)
	}
}

// tapped is one request caproxy sent upstream.
type tapped struct {
	method, path string
	query        url.Values
	header       http.Header
}

func (u tapped) String() string { return u.method + " " + u.path }

// carriesOnly checks that u carries the account's credentials and no
// client's: on a legacy path exactly one api_key, the account's, and its
// username, and no header credentials; elsewhere no query credentials and
// an Authorization header, if any, holding an upstream token (never a
// caproxy-issued one, which has a "."), an apiKey header, if any, being
// the account's.
func (u tapped) carriesOnly(user, key string, legacy bool) error {
	for name := range u.query {
		if strings.EqualFold(name, "apiKey") || (strings.EqualFold(name, "api_key") && !legacy) {
			return fmt.Errorf("%v: query parameter %s went upstream", u, name)
		}
	}
	if legacy {
		if k := u.query["api_key"]; len(k) != 1 || k[0] != key {
			return fmt.Errorf("%v: upstream query has api_key %d times, want once with the account's key", u, len(k))
		}
		if n := u.query["username"]; len(n) != 1 || n[0] != user || u.query.Has("userName") {
			return fmt.Errorf("%v: upstream query names %v / %v, want username=%s alone", u, n, u.query["userName"], user)
		}
		if u.header.Get("Authorization") != "" {
			return fmt.Errorf("%v: an Authorization header went upstream", u)
		}
	}
	if a := u.header.Get("Authorization"); a != "" && !upstreamBearerRe.MatchString(a) {
		return fmt.Errorf("%v: Authorization upstream is not a simulator-issued Bearer token (a client's token leaked through)", u)
	}
	if k := u.header.Values(cloudagent.HeaderAPIKey); len(k) > 1 || (len(k) == 1 && k[0] != key) {
		return fmt.Errorf("%v: the apiKey header upstream is not the account's", u)
	}
	return nil
}

var upstreamBearerRe = regexp.MustCompile(`^Bearer [0-9a-f]{32}$`)

// tap is a recording reverse proxy between caproxy and the simulator.
type tap struct {
	addr string
	mu   sync.Mutex // protects seen
	seen []tapped
}

func (tp *tap) url() string { return "http://" + tp.addr }

func (tp *tap) count() int {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	return len(tp.seen)
}

// since returns the requests recorded after the first n.
func (tp *tap) since(n int) []tapped {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	return append([]tapped(nil), tp.seen[n:]...)
}

// startTap starts a tap forwarding to target on a loopback port of this
// suite's range, stopped when the test ends (and after at most waitTap).
func startTap(t *testing.T, target string) *tap {
	t.Helper()
	to, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	tp := &tap{}
	rp := httputil.NewSingleHostReverseProxy(to)
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !strings.HasPrefix(r.URL.Path, "/sim/") {
				tp.mu.Lock()
				tp.seen = append(tp.seen, tapped{r.Method, r.URL.Path, r.URL.Query(), r.Header.Clone()})
				tp.mu.Unlock()
			}
			rp.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: waitEvent,
	}
	ln := listenInRange(t)
	tp.addr = ln.Addr().String()
	go srv.Serve(ln)
	stop := time.AfterFunc(waitTap, func() { srv.Close() })
	t.Cleanup(func() {
		stop.Stop()
		ctx, cancel := context.WithTimeout(context.Background(), waitExit)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return tp
}

// waitTap bounds a tap's life, should a test never end.
const waitTap = 10 * time.Minute

// Ports of this test's own listeners (the tap): the range set aside for
// the client-conformance work, so parallel suites on one machine do not
// collide.
const tapPortLo, tapPortHi = 28000, 28999

// listenInRange listens on a free loopback port in [tapPortLo, tapPortHi].
func listenInRange(t *testing.T) net.Listener {
	t.Helper()
	n := tapPortHi - tapPortLo + 1
	start := rand.IntN(n)
	var err error
	for i := range n {
		var ln net.Listener
		ln, err = net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", tapPortLo+(start+i)%n))
		if err == nil {
			return ln
		}
	}
	t.Fatal(errors.Join(errors.New("no free port for the tap"), err))
	return nil
}
