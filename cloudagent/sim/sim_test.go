package sim

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caproxy/caproxy/cloudagent"
	"github.com/caproxy/caproxy/internal/fakeclock"
)

// epoch is where each harness's clock starts; tests set it to epoch+d.
var epoch = time.Date(2026, 1, 1, 9, 0, 0, 0, time.UTC)

// harness is a simulator behind a real loopback HTTP server.
type harness struct {
	t     *testing.T
	sim   *Server
	srv   *httptest.Server
	clock *fakeclock.Clock
}

func newHarness(t *testing.T, opts Options) *harness {
	t.Helper()
	c := fakeclock.New(epoch)
	if opts.Now == nil {
		opts.Now = c.Now
	}
	s := New(opts)
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return &harness{t: t, sim: s, srv: srv, clock: c}
}

type hdr map[string]string

func (h *harness) do(method, path string, header hdr, body string) (int, http.Header, []byte) {
	h.t.Helper()
	req, err := http.NewRequest(method, h.srv.URL+path, strings.NewReader(body))
	if err != nil {
		h.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := h.srv.Client().Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

func (h *harness) post(path string, header hdr, body string) (int, []byte) {
	h.t.Helper()
	code, _, b := h.do(http.MethodPost, path, header, body)
	return code, b
}

// token generates a token for user with key and fails the test otherwise.
func (h *harness) token(user, key string) string {
	h.t.Helper()
	code, b := h.post(cloudagent.PathGenerateToken, hdr{"apiKey": key}, `{"userName":"`+user+`"}`)
	var tr cloudagent.TokenResponse
	if code != http.StatusOK || json.Unmarshal(b, &tr) != nil || tr.Token == "" {
		h.t.Fatalf("generateToken(%s): %d %s", user, code, b)
	}
	return tr.Token
}

func bearer(token string) hdr { return hdr{"Authorization": "Bearer " + token} }

var basicAuth = hdr{"apiKey": "demo-basic-key"}

// aht calls the AHT API for the apikey account and a campaign.
func (h *harness) campaignAHT(campaign string) []byte {
	h.t.Helper()
	code, b := h.post(cloudagent.PathAHT, basicAuth, `{"userName":"demo-basic","campaignName":"`+campaign+`"}`)
	if code != http.StatusOK {
		h.t.Fatalf("aht: HTTP %d %s", code, b)
	}
	return b
}

// wantError fails unless body is exactly CloudAgent's error body for msg.
func wantError(t *testing.T, body []byte, msg string) {
	t.Helper()
	if want := cloudagent.ErrorBody(msg); !bytes.Equal(body, want) {
		t.Fatalf("body = %s, want %s", body, want)
	}
}

// wantTokenError fails unless body is exactly the token API's error for msg.
func wantTokenError(t *testing.T, body []byte, msg string) {
	t.Helper()
	if want := cloudagent.TokenErrorBody(msg); !bytes.Equal(body, want) {
		t.Fatalf("body = %s, want %s", body, want)
	}
}

var hmsPattern = regexp.MustCompile(`^\d\d:\d\d:\d\d$`)

// TestContract walks every row of DESIGN.md's contract table, in both auth
// modes, plus the simulator's own token and JSON checks.
func TestContract(t *testing.T) {
	h := newHarness(t, Options{})
	tok := h.token("demo", "demo-key")
	const tokenPlaceholder = "{token}"

	tests := []struct {
		name   string
		header hdr
		body   string
		// Exactly one of these describes the answer.
		wantMsg      string // CloudAgent error body {"status":"error",...}
		wantTokenMsg string // token error body {"status":"false",...}
		wantAgent    *cloudagent.AgentAHT
		wantCampaign *cloudagent.CampaignAHT
	}{
		{name: "campaign/apikey", header: basicAuth,
			body:         `{"userName":"demo-basic","campaignName":"campaign001"}`,
			wantCampaign: &cloudagent.CampaignAHT{CampaignID: "10001", CampaignName: "campaign001"}},
		{name: "agent/apikey", header: basicAuth,
			body:      `{"userName":"demo-basic","agentId":"agent007"}`,
			wantAgent: &cloudagent.AgentAHT{AgentID: "agent007", AgentName: "Agent 007"}},
		{name: "campaign/token", header: bearer(tokenPlaceholder),
			body:         `{"userName":"demo","campaignName":"Outbound_Sales"}`,
			wantCampaign: &cloudagent.CampaignAHT{CampaignID: "20001", CampaignName: "Outbound_Sales"}},
		{name: "agent/token", header: bearer(tokenPlaceholder),
			body:      `{"userName":"demo","agentId":"ravi"}`,
			wantAgent: &cloudagent.AgentAHT{AgentID: "ravi", AgentName: "Ravi Kumar"}},
		{name: "userName empty", header: basicAuth,
			body: `{"userName":"","agentId":"agent001"}`, wantMsg: cloudagent.MsgUserNameEmpty},
		{name: "userName missing", body: `{"agentId":"agent001"}`, wantMsg: cloudagent.MsgUserNameEmpty},
		{name: "apiKey empty", body: `{"userName":"demo-basic","agentId":"agent001"}`,
			wantMsg: cloudagent.MsgAPIKeyEmpty},
		{name: "unknown user without credentials", body: `{"userName":"nobody","agentId":"agent001"}`,
			wantMsg: cloudagent.MsgAPIKeyEmpty},
		{name: "both given", header: basicAuth,
			body:    `{"userName":"demo-basic","agentId":"agent001","campaignName":"campaign001"}`,
			wantMsg: cloudagent.MsgBothGiven},
		{name: "both given/token", header: bearer(tokenPlaceholder),
			body:    `{"userName":"demo","agentId":"agent001","campaignName":"campaign001"}`,
			wantMsg: cloudagent.MsgBothGiven},
		{name: "both missing", header: basicAuth, body: `{"userName":"demo-basic"}`,
			wantMsg: cloudagent.MsgBothEmpty},
		{name: "both empty", header: basicAuth, body: `{"userName":"demo-basic","agentId":"","campaignName":""}`,
			wantMsg: cloudagent.MsgBothEmpty},
		{name: "bad apiKey", header: hdr{"apiKey": "wrong"},
			body: `{"userName":"demo-basic","agentId":"agent001"}`, wantMsg: cloudagent.MsgInvalidCredentials},
		{name: "bad userName", header: basicAuth,
			body: `{"userName":"nobody","agentId":"agent001"}`, wantMsg: cloudagent.MsgInvalidCredentials},
		{name: "unknown user with bearer", header: bearer(tokenPlaceholder),
			body: `{"userName":"nobody","agentId":"agent001"}`, wantMsg: cloudagent.MsgInvalidCredentials},
		{name: "unknown agent", header: basicAuth,
			body: `{"userName":"demo-basic","agentId":"agent999"}`, wantMsg: cloudagent.MsgInvalidAgent},
		{name: "unknown campaign", header: basicAuth,
			body: `{"userName":"demo-basic","campaignName":"nope"}`, wantMsg: cloudagent.MsgInvalidCampaign},
		{name: "unknown agent/token", header: bearer(tokenPlaceholder),
			body: `{"userName":"demo","agentId":"agent999"}`, wantMsg: cloudagent.MsgInvalidAgent},
		{name: "token account without bearer",
			body: `{"userName":"demo","agentId":"agent001"}`, wantTokenMsg: cloudagent.MsgTokenInvalid},
		{name: "token account with apiKey only", header: hdr{"apiKey": "demo-key"},
			body: `{"userName":"demo","agentId":"agent001"}`, wantTokenMsg: cloudagent.MsgTokenInvalid},
		{name: "unknown token", header: bearer("deadbeef"),
			body: `{"userName":"demo","agentId":"agent001"}`, wantTokenMsg: cloudagent.MsgTokenInvalid},
		{name: "not a bearer", header: hdr{"Authorization": "Basic " + tokenPlaceholder},
			body: `{"userName":"demo","agentId":"agent001"}`, wantTokenMsg: cloudagent.MsgTokenInvalid},
		{name: "apikey account with bearer only", header: bearer(tokenPlaceholder),
			body: `{"userName":"demo-basic","agentId":"agent001"}`, wantMsg: cloudagent.MsgAPIKeyEmpty},
		{name: "malformed JSON", header: basicAuth, body: `{"userName":`, wantMsg: MsgInvalidJSON},
		{name: "JSON not an object", header: basicAuth, body: `[1]`, wantMsg: MsgInvalidJSON},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			header := hdr{}
			for k, v := range tc.header {
				header[k] = strings.ReplaceAll(v, tokenPlaceholder, tok)
			}
			code, rh, body := h.do(http.MethodPost, cloudagent.PathAHT, header, tc.body)
			if code != http.StatusOK {
				t.Fatalf("HTTP %d, want 200; body %s", code, body)
			}
			if ct := rh.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q", ct)
			}
			switch {
			case tc.wantMsg != "":
				wantError(t, body, tc.wantMsg)
			case tc.wantTokenMsg != "":
				wantTokenError(t, body, tc.wantTokenMsg)
			case tc.wantAgent != nil:
				var got successBody[cloudagent.AgentAHT]
				if err := json.Unmarshal(body, &got); err != nil {
					t.Fatalf("%v: %s", err, body)
				}
				if got.Status != cloudagent.StatusSuccess || got.Message.AgentID != tc.wantAgent.AgentID ||
					got.Message.AgentName != tc.wantAgent.AgentName || !hmsPattern.MatchString(got.Message.AHT) {
					t.Fatalf("got %s, want agent %+v", body, *tc.wantAgent)
				}
				if !cloudagent.IsSuccess(body) {
					t.Fatalf("IsSuccess(%s) = false", body)
				}
			case tc.wantCampaign != nil:
				var got successBody[cloudagent.CampaignAHT]
				if err := json.Unmarshal(body, &got); err != nil {
					t.Fatalf("%v: %s", err, body)
				}
				if got.Status != cloudagent.StatusSuccess || got.Message.CampaignID != tc.wantCampaign.CampaignID ||
					got.Message.CampaignName != tc.wantCampaign.CampaignName || !hmsPattern.MatchString(got.Message.AHT) {
					t.Fatalf("got %s, want campaign %+v", body, *tc.wantCampaign)
				}
			}
		})
	}
}

func TestAHTDeterministicAndDrifting(t *testing.T) {
	h := newHarness(t, Options{})
	first := h.campaignAHT("campaign042")
	if again := h.campaignAHT("campaign042"); !bytes.Equal(first, again) {
		t.Fatalf("same campaign, same time: %s then %s", first, again)
	}
	// Another server gives the same answer: AHT depends on id and time only.
	other := newHarness(t, Options{})
	if b := other.campaignAHT("campaign042"); !bytes.Equal(first, b) {
		t.Fatalf("second simulator answered %s, first %s", b, first)
	}

	seconds := func(b []byte) int {
		var got successBody[cloudagent.CampaignAHT]
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatal(err)
		}
		tm, err := time.Parse("15:04:05", got.Message.AHT)
		if err != nil {
			t.Fatal(err)
		}
		return tm.Hour()*3600 + tm.Minute()*60 + tm.Second()
	}
	prev, changed := seconds(first), false
	for range 24 { // four hours in ten-minute steps; stay under the AHT limit
		h.clock.Advance(10 * time.Minute)
		cur := seconds(h.campaignAHT("campaign042"))
		if d := cur - prev; d < -5 || d > 5 {
			t.Fatalf("AHT jumped %d s in ten minutes", d)
		}
		changed = changed || cur != prev
		prev = cur
	}
	if !changed {
		t.Fatal("AHT never drifted over four hours")
	}
}

func TestFormatHMS(t *testing.T) {
	for sec, want := range map[int64]string{0: "00:00:00", 27: "00:00:27", 157: "00:02:37", 3661: "01:01:01"} {
		if got := formatHMS(sec); got != want {
			t.Errorf("formatHMS(%d) = %q, want %q", sec, got, want)
		}
	}
}

func TestTokenExpiry(t *testing.T) {
	h := newHarness(t, Options{})
	tok := h.token("demo", "demo-key")
	body := `{"userName":"demo","agentId":"agent001"}`
	h.clock.Advance(59 * time.Minute)
	if _, b := h.post(cloudagent.PathAHT, bearer(tok), body); !cloudagent.IsSuccess(b) {
		t.Fatalf("at 59 min: %s", b)
	}
	h.clock.Advance(2 * time.Minute)
	_, b := h.post(cloudagent.PathAHT, bearer(tok), body)
	wantTokenError(t, b, cloudagent.MsgTokenExpired)
	if msg, _ := cloudagent.ErrorMessage(b); !cloudagent.IsTokenProblem(msg) {
		t.Fatalf("IsTokenProblem(%q) = false", msg)
	}
	if st := h.sim.Stats(); st.AHTAuthFailed != 1 || st.AHTAdmitted != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestTokenTTLOption(t *testing.T) {
	h := newHarness(t, Options{TokenTTL: time.Minute})
	tok := h.token("demo", "demo-key")
	h.clock.Advance(time.Minute)
	_, b := h.post(cloudagent.PathAHT, bearer(tok), `{"userName":"demo","agentId":"agent001"}`)
	wantTokenError(t, b, cloudagent.MsgTokenExpired)
}

func TestTokenGenerationLimitSlides(t *testing.T) {
	h := newHarness(t, Options{})
	gen := func() []byte {
		_, b := h.post(cloudagent.PathGenerateToken, hdr{"apiKey": "demo-key"}, `{"userName":"demo"}`)
		return b
	}
	for i := range 10 { // one a minute, t = 0..9 min
		h.clock.Set(epoch.Add(time.Duration(i) * time.Minute))
		h.token("demo", "demo-key")
	}
	h.clock.Set(epoch.Add(10 * time.Minute))
	wantTokenError(t, gen(), MsgTokenGenLimit)
	h.clock.Set(epoch.Add(59*time.Minute + 59*time.Second))
	wantTokenError(t, gen(), MsgTokenGenLimit)
	// The generation at t=0 leaves the trailing hour at t=60 min; the one at
	// t=1 min has not, so only one more fits.
	h.clock.Set(epoch.Add(60 * time.Minute))
	h.token("demo", "demo-key")
	wantTokenError(t, gen(), MsgTokenGenLimit)
	// Another account has its own allowance.
	h.token("demo2", "demo2-key")

	st := h.sim.Stats()
	if st.TokenGenerations != 12 || st.TokenRejected != 3 ||
		st.PerAccount["demo"].TokenGenerations != 11 || st.PerAccount["demo2"].TokenGenerations != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestTokenRequestRefusals(t *testing.T) {
	h := newHarness(t, Options{})
	tests := []struct {
		name   string
		header hdr
		body   string
		msg    string
	}{
		{"wrong key", hdr{"apiKey": "nope"}, `{"userName":"demo"}`, cloudagent.MsgTokenInvalidCredentials},
		{"missing key", nil, `{"userName":"demo"}`, cloudagent.MsgTokenInvalidCredentials},
		{"unknown user", hdr{"apiKey": "demo-key"}, `{"userName":"nobody"}`, cloudagent.MsgTokenInvalidCredentials},
		{"empty user", hdr{"apiKey": "demo-key"}, `{}`, cloudagent.MsgTokenInvalidCredentials},
		{"other account's key", hdr{"apiKey": "demo2-key"}, `{"userName":"demo"}`, cloudagent.MsgTokenInvalidCredentials},
		{"malformed JSON", hdr{"apiKey": "demo-key"}, `{`, MsgInvalidJSON},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, b := h.post(cloudagent.PathGenerateToken, tc.header, tc.body)
			if code != http.StatusOK {
				t.Fatalf("HTTP %d", code)
			}
			wantTokenError(t, b, tc.msg)
		})
	}
	if st := h.sim.Stats(); st.TokenRejected != int64(len(tests)) || st.TokenGenerations != 0 {
		t.Fatalf("stats %+v", st)
	}
	// Refusals do not use up the allowance: all ten generations remain.
	for range 10 {
		h.token("demo", "demo-key")
	}
}

func TestApikeyAccountMayGenerateToken(t *testing.T) {
	h := newHarness(t, Options{})
	tok := h.token("demo-basic", "demo-basic-key")
	// The account still authenticates by apiKey; a bearer alone is not enough.
	_, b := h.post(cloudagent.PathAHT, bearer(tok), `{"userName":"demo-basic","agentId":"agent001"}`)
	wantError(t, b, cloudagent.MsgAPIKeyEmpty)
}

func TestRegenerationInvalidatesEarlierTokens(t *testing.T) {
	h := newHarness(t, Options{})
	body := `{"userName":"demo","agentId":"agent001"}`
	first := h.token("demo", "demo-key")
	second := h.token("demo", "demo-key")
	third := h.token("demo", "demo-key")
	for _, old := range []string{first, second} {
		_, b := h.post(cloudagent.PathAHT, bearer(old), body)
		wantTokenError(t, b, cloudagent.MsgTokenExpired)
	}
	if _, b := h.post(cloudagent.PathAHT, bearer(third), body); !cloudagent.IsSuccess(b) {
		t.Fatalf("newest token refused: %s", b)
	}
	// A token belongs to its account only.
	other := h.token("demo2", "demo2-key")
	_, b := h.post(cloudagent.PathAHT, bearer(other), body)
	wantTokenError(t, b, cloudagent.MsgTokenInvalid)
	// demo2's generation did not touch demo's token.
	if _, b := h.post(cloudagent.PathAHT, bearer(third), body); !cloudagent.IsSuccess(b) {
		t.Fatalf("demo's token refused after demo2 generated: %s", b)
	}
}

func TestLimitIsTrailingWindow(t *testing.T) {
	h := newHarness(t, Options{})
	call := func() []byte {
		_, b := h.post(cloudagent.PathAHT, basicAuth, `{"userName":"demo-basic","campaignName":"campaign001"}`)
		return b
	}
	h.clock.Set(epoch.Add(59 * time.Second))
	for i := range 50 {
		if b := call(); !cloudagent.IsSuccess(b) {
			t.Fatalf("call %d at 59 s: %s", i+1, b)
		}
	}
	wantError(t, call(), cloudagent.MsgLimitExceeded)
	// A fixed-minute counter would reset at 60 s; a trailing window does not.
	h.clock.Set(epoch.Add(61 * time.Second))
	wantError(t, call(), cloudagent.MsgLimitExceeded)
	h.clock.Set(epoch.Add(118*time.Second + 999*time.Millisecond))
	wantError(t, call(), cloudagent.MsgLimitExceeded)
	h.clock.Set(epoch.Add(119*time.Second + 500*time.Millisecond))
	for i := range 50 {
		if b := call(); !cloudagent.IsSuccess(b) {
			t.Fatalf("call %d at 119.5 s: %s", i+1, b)
		}
	}
	wantError(t, call(), cloudagent.MsgLimitExceeded)

	st := h.sim.Stats()
	// Arrivals count refused calls too: (59.5 s, 119.5 s] holds the
	// refusals at 61 s and 118.999 s and the 51 calls at 119.5 s.
	want := Stats{AHTCalls: 104, AHTAdmitted: 100, AHTLimited: 4, MaxInWindow: 50, MaxArrivalsInWindow: 53, LimitViolations: 4}
	if st.AHTCalls != want.AHTCalls || st.AHTAdmitted != want.AHTAdmitted || st.AHTLimited != want.AHTLimited ||
		st.MaxInWindow != want.MaxInWindow || st.MaxArrivalsInWindow != want.MaxArrivalsInWindow || st.LimitViolations != want.LimitViolations {
		t.Fatalf("stats %+v, want %+v", st, want)
	}
	if pa := st.PerAccount["demo-basic"]; pa.AHTAdmitted != 100 || pa.AHTLimited != 4 {
		t.Fatalf("per account %+v", pa)
	}
}

func TestLimitRecordsOnlyAdmittedCalls(t *testing.T) {
	h := newHarness(t, Options{Limit: 5, Window: 10 * time.Second})
	call := func() []byte {
		_, b := h.post(cloudagent.PathAHT, basicAuth, `{"userName":"demo-basic","agentId":"agent001"}`)
		return b
	}
	for range 5 {
		call()
	}
	h.clock.Set(epoch.Add(5 * time.Second))
	for range 20 { // refused, so they must not push the window out
		wantError(t, call(), cloudagent.MsgLimitExceeded)
	}
	h.clock.Set(epoch.Add(10*time.Second + time.Nanosecond))
	for i := range 5 {
		if b := call(); !cloudagent.IsSuccess(b) {
			t.Fatalf("call %d after the window slid: %s", i+1, b)
		}
	}
	if st := h.sim.Stats(); st.MaxInWindow != 5 || st.LimitViolations != 20 {
		t.Fatalf("MaxInWindow = %d, LimitViolations = %d; want 5, 20", st.MaxInWindow, st.LimitViolations)
	}
	// Refused calls still arrived: 5 admitted and 20 refused within 10 s,
	// then (the first 5 gone) 20 refused and 5 admitted.
	if st := h.sim.Stats(); st.MaxArrivalsInWindow != 25 {
		t.Fatalf("MaxArrivalsInWindow = %d, want 25: refused arrivals must show a sender over the limit", st.MaxArrivalsInWindow)
	}
}

// TestLimitViolationsCountEveryLimit checks that a refusal for any of
// CloudAgent's limits (AHT, AgentDetails, token generations) is a violation,
// and that MaxArrivalsInWindow exceeds the limit exactly when one was
// refused, so a test asserting it stays at most the limit can fail.
func TestLimitViolationsCountEveryLimit(t *testing.T) {
	h := newHarness(t, Options{Limit: 2})
	for range 2 {
		h.campaignAHT("campaign001")
	}
	if st := h.sim.Stats(); st.MaxArrivalsInWindow != 2 || st.LimitViolations != 0 {
		t.Fatalf("at the limit: MaxArrivalsInWindow %d, LimitViolations %d; want 2, 0", st.MaxArrivalsInWindow, st.LimitViolations)
	}
	wantError(t, h.campaignAHT("campaign001"), cloudagent.MsgLimitExceeded)
	if st := h.sim.Stats(); st.MaxArrivalsInWindow != 3 || st.LimitViolations != 1 {
		t.Fatalf("over the AHT limit: MaxArrivalsInWindow %d, LimitViolations %d; want 3, 1", st.MaxArrivalsInWindow, st.LimitViolations)
	}
	for range AgentDetailsLimit + 1 {
		h.post(PathAgentDetails, basicAuth, `{"userName":"demo-basic"}`)
	}
	if st := h.sim.Stats(); st.LimitViolations != 2 {
		t.Fatalf("over the AgentDetails limit: LimitViolations %d, want 2", st.LimitViolations)
	}
	for range 11 {
		h.post(cloudagent.PathGenerateToken, hdr{"apiKey": "demo-key"}, `{"userName":"demo"}`)
	}
	if st := h.sim.Stats(); st.LimitViolations != 3 || st.TokenGenerations != 10 {
		t.Fatalf("over the token limit: LimitViolations %d, TokenGenerations %d; want 3, 10", st.LimitViolations, st.TokenGenerations)
	}
}

// TestDelayCountsOnArrival checks Options.Delay: a call sent at t arrives,
// and is counted, at t+Delay on the simulator's clock, so calls sent in
// separate windows can meet in one.
func TestDelayCountsOnArrival(t *testing.T) {
	c := fakeclock.New(epoch)
	h := newHarness(t, Options{Limit: 1, Window: 10 * time.Second, Now: c.Now, After: c.After, Delay: 2 * time.Second})
	h.clock = c
	done := make(chan []byte, 1)
	go func() {
		_, b := h.post(cloudagent.PathAHT, basicAuth, `{"userName":"demo-basic","agentId":"agent001"}`)
		done <- b
	}()
	for c.Waiters() == 0 { // the call is in flight
		runtime.Gosched()
	}
	select {
	case b := <-done:
		t.Fatalf("answered before it arrived: %s", b)
	default:
	}
	c.Advance(2 * time.Second) // arrives at 2 s
	if b := <-done; !cloudagent.IsSuccess(b) {
		t.Fatalf("first call: %s", b)
	}
	// Sent at 11 s, after the sender's window of the first call (sent at 0 s)
	// ended; with no delay it arrives at 11 s, inside (1 s, 11 s], which
	// holds the first call's arrival at 2 s.
	h.sim.SetDelay(0)
	c.Advance(9 * time.Second)
	_, b := h.post(cloudagent.PathAHT, basicAuth, `{"userName":"demo-basic","agentId":"agent001"}`)
	wantError(t, b, cloudagent.MsgLimitExceeded)
	if st := h.sim.Stats(); st.LimitViolations != 1 || st.MaxArrivalsInWindow != 2 {
		t.Fatalf("LimitViolations %d, MaxArrivalsInWindow %d; want 1, 2", st.LimitViolations, st.MaxArrivalsInWindow)
	}
}

func TestLimitCountsShapeAndLookupErrorsButNotAuthFailures(t *testing.T) {
	h := newHarness(t, Options{Limit: 3})
	for _, body := range []string{
		`{"userName":"demo-basic"}`,                                  // both empty: counted
		`{"userName":"demo-basic","agentId":"x","campaignName":"y"}`, // both given: counted
		`{"userName":"demo-basic","agentId":"agent999"}`,             // unknown agent: counted
	} {
		h.post(cloudagent.PathAHT, basicAuth, body)
	}
	for range 5 { // not counted
		h.post(cloudagent.PathAHT, hdr{"apiKey": "wrong"}, `{"userName":"demo-basic","agentId":"agent001"}`)
		h.post(cloudagent.PathAHT, nil, `{"userName":"demo-basic","agentId":"agent001"}`)
		h.post(cloudagent.PathAHT, basicAuth, `{"userName":""}`)
		h.post(cloudagent.PathAHT, basicAuth, `not json`)
	}
	_, b := h.post(cloudagent.PathAHT, basicAuth, `{"userName":"demo-basic","agentId":"agent001"}`)
	wantError(t, b, cloudagent.MsgLimitExceeded)
	// Other accounts have their own budget.
	tok := h.token("demo", "demo-key")
	if _, b := h.post(cloudagent.PathAHT, bearer(tok), `{"userName":"demo","agentId":"agent001"}`); !cloudagent.IsSuccess(b) {
		t.Fatalf("demo refused: %s", b)
	}
	st := h.sim.Stats()
	if st.AHTCalls != 25 || st.AHTAdmitted != 4 || st.AHTLimited != 1 || st.AHTAuthFailed != 10 || st.MaxInWindow != 3 {
		t.Fatalf("stats %+v", st)
	}
}

func TestNegativeLimitDisablesIt(t *testing.T) {
	h := newHarness(t, Options{Limit: -1})
	for i := range 60 {
		if b := h.campaignAHT("campaign001"); !cloudagent.IsSuccess(b) {
			t.Fatalf("call %d: %s", i+1, b)
		}
	}
}

func TestInjectedErrors(t *testing.T) {
	h := newHarness(t, Options{ErrorRate: 1, Limit: 1})
	for range 3 {
		code, b := h.post(cloudagent.PathAHT, basicAuth, `{"userName":"demo-basic","agentId":"agent001"}`)
		if code != http.StatusServiceUnavailable {
			t.Fatalf("HTTP %d, want 503", code)
		}
		wantError(t, b, MsgUnavailable)
	}
	// Authentication comes first.
	_, b := h.post(cloudagent.PathAHT, hdr{"apiKey": "wrong"}, `{"userName":"demo-basic","agentId":"agent001"}`)
	wantError(t, b, cloudagent.MsgInvalidCredentials)
	st := h.sim.Stats()
	if st.AHTInjectedErrors != 3 || st.AHTAdmitted != 0 || st.AHTLimited != 0 || st.AHTAuthFailed != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestStatsEndpoints(t *testing.T) {
	h := newHarness(t, Options{})
	h.campaignAHT("campaign001")
	h.token("demo", "demo-key")
	h.post(PathAgentDetails, basicAuth, `{"userName":"demo-basic"}`)

	code, _, b := h.do(http.MethodGet, PathStats, nil, "")
	var got Stats
	if code != http.StatusOK || json.Unmarshal(b, &got) != nil {
		t.Fatalf("GET %s: %d %s", PathStats, code, b)
	}
	if got.AHTCalls != 1 || got.AHTAdmitted != 1 || got.TokenGenerations != 1 || got.OtherCalls != 1 ||
		got.MaxInWindow != 1 || got.PerAccount["demo-basic"].OtherCalls != 1 || len(got.PerAccount) != 3 {
		t.Fatalf("stats %s", b)
	}

	code, b = h.post(PathReset, nil, "")
	if code != http.StatusOK || !cloudagent.IsSuccess(b) {
		t.Fatalf("POST %s: %d %s", PathReset, code, b)
	}
	st := h.sim.Stats()
	if st.AHTCalls != 0 || st.AHTAdmitted != 0 || st.TokenGenerations != 0 || st.OtherCalls != 0 ||
		st.MaxInWindow != 0 || st.PerAccount["demo-basic"] != (AccountStats{}) {
		t.Fatalf("after reset: %+v", st)
	}
	// Reset clears what is reported, not the state: the token stays valid.
	h.campaignAHT("campaign001")
	if st := h.sim.Stats(); st.MaxInWindow != 2 {
		t.Fatalf("MaxInWindow after reset = %d, want 2 (the window still holds the earlier call)", st.MaxInWindow)
	}
}

func TestNotFoundAndMethodNotAllowed(t *testing.T) {
	h := newHarness(t, Options{})
	tests := []struct {
		method, path string
		code         int
		allow        string
		msg          string
	}{
		{http.MethodGet, cloudagent.PathAHT, http.StatusMethodNotAllowed, "POST", MsgMethodNotAllowed},
		{http.MethodPut, cloudagent.PathAHT, http.StatusMethodNotAllowed, "POST", MsgMethodNotAllowed},
		{http.MethodGet, cloudagent.PathGenerateToken, http.StatusMethodNotAllowed, "POST", MsgMethodNotAllowed},
		{http.MethodDelete, PathAgentDetails, http.StatusMethodNotAllowed, "POST", MsgMethodNotAllowed},
		{http.MethodPost, PathStats, http.StatusMethodNotAllowed, "GET", MsgMethodNotAllowed},
		{http.MethodGet, PathReset, http.StatusMethodNotAllowed, "POST", MsgMethodNotAllowed},
		{http.MethodPost, "/ca_apis/NoSuchAPI", http.StatusNotFound, "", MsgNotFound},
		{http.MethodGet, "/", http.StatusNotFound, "", MsgNotFound},
		{http.MethodPost, "/ca_apis/aht/extra", http.StatusNotFound, "", MsgNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			code, rh, b := h.do(tc.method, tc.path, basicAuth, `{"userName":"demo-basic","agentId":"agent001"}`)
			if code != tc.code {
				t.Fatalf("HTTP %d, want %d", code, tc.code)
			}
			if got := rh.Get("Allow"); got != tc.allow {
				t.Errorf("Allow = %q, want %q", got, tc.allow)
			}
			wantError(t, b, tc.msg)
		})
	}
	if st := h.sim.Stats(); st.AHTCalls != 0 || st.OtherCalls != 0 {
		t.Fatalf("refused methods were counted: %+v", st)
	}
}

func TestAgentDetails(t *testing.T) {
	h := newHarness(t, Options{})
	want := `{"status":"success","message":[` +
		`{"AgentId":"agent001","AgentName":"Agent 001"},{"AgentId":"agent002","AgentName":"Agent 002"},` +
		`{"AgentId":"agent003","AgentName":"Agent 003"},{"AgentId":"agent004","AgentName":"Agent 004"},` +
		`{"AgentId":"agent005","AgentName":"Agent 005"}]}`
	tok := h.token("demo", "demo-key")

	// apikey account, userName in the body; token account, userName in the query.
	for range 5 {
		if _, b := h.post(PathAgentDetails, basicAuth, `{"userName":"demo-basic"}`); string(b) != want {
			t.Fatalf("apikey: %s", b)
		}
		if _, b := h.post(PathAgentDetails+"?userName=demo", bearer(tok), ""); string(b) != want {
			t.Fatalf("token: %s", b)
		}
	}
	refusals := []struct {
		name   string
		header hdr
		path   string
		body   string
		msg    string
		token  bool
	}{
		{"no userName", basicAuth, PathAgentDetails, "", cloudagent.MsgUserNameEmpty, false},
		{"no apiKey", nil, PathAgentDetails, `{"userName":"demo-basic"}`, cloudagent.MsgAPIKeyEmpty, false},
		{"bad apiKey", hdr{"apiKey": "x"}, PathAgentDetails, `{"userName":"demo-basic"}`, cloudagent.MsgInvalidCredentials, false},
		{"bad token", bearer("x"), PathAgentDetails + "?userName=demo", "", cloudagent.MsgTokenInvalid, true},
		{"malformed JSON", basicAuth, PathAgentDetails, `{`, MsgInvalidJSON, false},
	}
	for _, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			_, b := h.post(tc.path, tc.header, tc.body)
			if tc.token {
				wantTokenError(t, b, tc.msg)
			} else {
				wantError(t, b, tc.msg)
			}
		})
	}
	// Ten per account per trailing window.
	for range 5 {
		h.post(PathAgentDetails, basicAuth, `{"userName":"demo-basic"}`)
	}
	_, b := h.post(PathAgentDetails, basicAuth, `{"userName":"demo-basic"}`)
	wantError(t, b, cloudagent.MsgLimitExceeded)
	h.clock.Advance(time.Minute)
	if _, b := h.post(PathAgentDetails, basicAuth, `{"userName":"demo-basic"}`); string(b) != want {
		t.Fatalf("after the window: %s", b)
	}
	st := h.sim.Stats()
	if st.OtherCalls != 17+int64(len(refusals)) || st.PerAccount["demo-basic"].OtherCalls != 12 ||
		st.PerAccount["demo"].OtherCalls != 5 || st.AHTCalls != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestAgentDetailsCustomAgents(t *testing.T) {
	h := newHarness(t, Options{Agents: map[string]string{"zed": "Zed", "amy": "Amy"}})
	_, b := h.post(PathAgentDetails, basicAuth, `{"userName":"demo-basic"}`)
	if want := `{"status":"success","message":[{"AgentId":"amy","AgentName":"Amy"},{"AgentId":"zed","AgentName":"Zed"}]}`; string(b) != want {
		t.Fatalf("got %s, want %s", b, want)
	}
}

func TestConcurrentCallsOneAccount(t *testing.T) {
	h := newHarness(t, Options{})
	tok := h.token("demo", "demo-key")
	const callers = 200
	var wg sync.WaitGroup
	var mu sync.Mutex // protects admitted, limited
	admitted, limited := 0, 0
	start := make(chan struct{})
	for range callers {
		wg.Go(func() {
			<-start
			req, _ := http.NewRequest(http.MethodPost, h.srv.URL+cloudagent.PathAHT,
				strings.NewReader(`{"userName":"demo","agentId":"agent001"}`))
			req.Header.Set("Authorization", "Bearer "+tok)
			resp, err := h.srv.Client().Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			mu.Lock()
			defer mu.Unlock()
			switch msg, _ := cloudagent.ErrorMessage(b); {
			case cloudagent.IsSuccess(b):
				admitted++
			case msg == cloudagent.MsgLimitExceeded:
				limited++
			default:
				t.Errorf("unexpected answer %s", b)
			}
		})
	}
	close(start)
	wg.Wait()
	if admitted != 50 || limited != callers-50 {
		t.Fatalf("admitted %d, limited %d; want 50, %d", admitted, limited, callers-50)
	}
	st := h.sim.Stats()
	if st.AHTAdmitted != 50 || st.AHTLimited != callers-50 || st.MaxInWindow != 50 || st.MaxArrivalsInWindow != callers || st.LimitViolations != callers-50 {
		t.Fatalf("stats %+v", st)
	}
}

func TestLatencyHonoursRequestContext(t *testing.T) {
	// An hour of latency: if the handler ignored the request's context,
	// the server's Close in Cleanup would hang the test.
	h := newHarness(t, Options{Latency: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { // give up once the call has been decided, however slow the machine
		for h.sim.Stats().AHTAdmitted == 0 {
			time.Sleep(time.Millisecond)
		}
		cancel()
	}()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, h.srv.URL+cloudagent.PathAHT,
		strings.NewReader(`{"userName":"demo-basic","agentId":"agent001"}`))
	req.Header.Set("apiKey", "demo-basic-key")
	if resp, err := h.srv.Client().Do(req); err == nil {
		resp.Body.Close()
		t.Fatal("answered despite an hour of latency")
	}
	h.srv.Close()
	// The call was decided before the wait.
	if st := h.sim.Stats(); st.AHTAdmitted != 1 {
		t.Fatalf("stats %+v", st)
	}
	// The /sim/ paths are not delayed.
	rec := httptest.NewRecorder()
	h.sim.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, PathStats, nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("stats: %d", rec.Code)
	}
}

func TestLatencyDelaysAnswers(t *testing.T) {
	h := newHarness(t, Options{Latency: time.Millisecond})
	if b := h.campaignAHT("campaign001"); !cloudagent.IsSuccess(b) {
		t.Fatalf("%s", b)
	}
}

func TestDefaults(t *testing.T) {
	accounts := DefaultAccounts()
	for _, want := range []Account{
		{UserName: "demo", APIKey: "demo-key", Auth: AuthToken},
		{UserName: "demo-basic", APIKey: "demo-basic-key", Auth: AuthAPIKey},
	} {
		found := false
		for _, a := range accounts {
			found = found || a == want
		}
		if !found {
			t.Errorf("DefaultAccounts lacks %+v", want)
		}
	}
	agents := DefaultAgents()
	if agents["agent001"] == "" || agents["agent300"] == "" || agents["agent301"] != "" {
		t.Errorf("DefaultAgents: %d agents", len(agents))
	}
	campaigns := DefaultCampaigns()
	if campaigns["campaign001"] == "" || campaigns["campaign100"] == "" || campaigns["campaign101"] != "" {
		t.Errorf("DefaultCampaigns: %d campaigns", len(campaigns))
	}
}

func TestNewCopiesMapsAndRejectsBadAuth(t *testing.T) {
	agents := map[string]string{"a1": "A One"}
	s := New(Options{Agents: agents, Now: func() time.Time { return epoch }})
	agents["a2"] = "A Two" // must not reach the server
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodPost, cloudagent.PathAHT, strings.NewReader(`{"userName":"demo-basic","agentId":"a2"}`))
	req.Header.Set("apiKey", "demo-basic-key")
	s.ServeHTTP(rec, req)
	wantError(t, rec.Body.Bytes(), cloudagent.MsgInvalidAgent)

	defer func() {
		if recover() == nil {
			t.Fatal("New accepted auth mode \"oauth\"")
		}
	}()
	New(Options{Accounts: []Account{{UserName: "x", APIKey: "k", Auth: "oauth"}}})
}

func TestLoadData(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.json", `{
		"accounts": [{"userName":"acme","apiKey":"acme-key","auth":"apikey"},{"userName":"tok","apiKey":"tok-key"}],
		"campaigns": {"Renewals":"777"}
	}`)
	opts, err := LoadData(good)
	if err != nil {
		t.Fatal(err)
	}
	if len(opts.Accounts) != 2 || opts.Agents != nil || opts.Campaigns["Renewals"] != "777" {
		t.Fatalf("opts %+v", opts)
	}
	h := newHarness(t, opts)
	_, b := h.post(cloudagent.PathAHT, hdr{"apiKey": "acme-key"}, `{"userName":"acme","campaignName":"Renewals"}`)
	if !cloudagent.IsSuccess(b) {
		t.Fatalf("loaded campaign: %s", b)
	}
	_, b = h.post(cloudagent.PathAHT, hdr{"apiKey": "acme-key"}, `{"userName":"acme","agentId":"agent300"}`)
	if !cloudagent.IsSuccess(b) {
		t.Fatalf("default agents: %s", b)
	}
	tok := h.token("tok", "tok-key") // empty auth means token
	if _, b := h.post(cloudagent.PathAHT, bearer(tok), `{"userName":"tok","agentId":"agent001"}`); !cloudagent.IsSuccess(b) {
		t.Fatalf("token account: %s", b)
	}
	_, b = h.post(cloudagent.PathAHT, hdr{"apiKey": "demo-basic-key"}, `{"userName":"demo-basic","agentId":"agent001"}`)
	wantError(t, b, cloudagent.MsgInvalidCredentials) // the file replaced the default accounts

	bad := []struct{ name, content string }{
		{"unknown key", `{"acounts":[]}`},
		{"bad auth", `{"accounts":[{"userName":"a","apiKey":"k","auth":"oauth"}]}`},
		{"no userName", `{"accounts":[{"apiKey":"k"}]}`},
		{"no apiKey", `{"accounts":[{"userName":"a"}]}`},
		{"duplicate", `{"accounts":[{"userName":"a","apiKey":"k"},{"userName":"a","apiKey":"j"}]}`},
		{"not JSON", `accounts: []`},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := LoadData(write(strings.ReplaceAll(tc.name, " ", "_")+".json", tc.content)); err == nil {
				t.Fatal("no error")
			}
		})
	}
	if _, err := LoadData(filepath.Join(dir, "missing.json")); err == nil {
		t.Fatal("missing file: no error")
	}
}

// TestSlidingLogMatchesNaiveCount checks the compacting log against a
// straightforward count over every admitted time.
func TestSlidingLogMatchesNaiveCount(t *testing.T) {
	const window, limit = 100, 7
	var l slidingLog
	var all []int64
	now := int64(0)
	for i := range 5000 {
		now += int64(i*7919%23) + 1 // irregular, increasing steps
		n := 0
		for _, at := range all {
			if at > now-window {
				n++
			}
		}
		ok, inWindow := l.admit(now, window, limit)
		if ok != (n < limit) {
			t.Fatalf("step %d: admit = %v with %d in window", i, ok, n)
		}
		if ok {
			all = append(all, now)
			n++
		}
		if inWindow != n {
			t.Fatalf("step %d: inWindow = %d, want %d", i, inWindow, n)
		}
	}
	if cap(l.times) > 4*limit {
		t.Fatalf("log grew to %d for a limit of %d", cap(l.times), limit)
	}
}

// BenchmarkAHT measures the handler alone, without the network, on one
// account with the limit off.
func BenchmarkAHT(b *testing.B) {
	s := New(Options{Limit: -1})
	body := []byte(`{"userName":"demo-basic","campaignName":"campaign001"}`)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req := httptest.NewRequest(http.MethodPost, cloudagent.PathAHT, bytes.NewReader(body))
			req.Header.Set("apiKey", "demo-basic-key")
			rec := httptest.NewRecorder()
			s.ServeHTTP(rec, req)
			if rec.Code != http.StatusOK {
				b.Fatal(rec.Code)
			}
		}
	})
}

// BenchmarkAHTLimited measures the limited path, where every call takes the
// account's lock.
func BenchmarkAHTLimited(b *testing.B) {
	s := New(Options{})
	body := []byte(`{"userName":"demo-basic","campaignName":"campaign001"}`)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req := httptest.NewRequest(http.MethodPost, cloudagent.PathAHT, bytes.NewReader(body))
			req.Header.Set("apiKey", "demo-basic-key")
			s.ServeHTTP(httptest.NewRecorder(), req)
		}
	})
}

// BenchmarkAHTOverHTTP measures requests over loopback with keep-alive.
func BenchmarkAHTOverHTTP(b *testing.B) {
	srv := httptest.NewServer(New(Options{Limit: -1}))
	defer srv.Close()
	client := srv.Client()
	client.Transport.(*http.Transport).MaxIdleConnsPerHost = 64
	body := []byte(`{"userName":"demo-basic","campaignName":"campaign001"}`)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, _ := http.NewRequest(http.MethodPost, srv.URL+cloudagent.PathAHT, bytes.NewReader(body))
			req.Header.Set("apiKey", "demo-basic-key")
			resp, err := client.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
}
