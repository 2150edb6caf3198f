package proxy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caproxy/caproxy/cloudagent"
	"github.com/caproxy/caproxy/cloudagent/sim"
	"github.com/caproxy/caproxy/credential"
)

// generateToken asks the proxy for a client token.
func (h *harness) generateToken(user, key string) reply {
	h.t.Helper()
	return h.do("POST", cloudagent.PathGenerateToken, `{"userName":"`+user+`"}`, "apiKey", key)
}

func tokenOf(t *testing.T, r reply) string {
	t.Helper()
	var tr cloudagent.TokenResponse
	if r.code != 200 || json.Unmarshal([]byte(r.body), &tr) != nil || tr.Token == "" {
		t.Fatalf("generateToken: %d %s", r.code, r.body)
	}
	return tr.Token
}

func TestThousandRequestsOneTokenGeneration(t *testing.T) {
	// A generous timeout: under -race on a loaded machine a fetch may be
	// slow, and this test counts generations, not speed.
	h := newHarness(t, setup{perWindow: 2000, sim: sim.Options{Limit: -1}, timeout: time.Minute})
	var wg sync.WaitGroup
	var mu sync.Mutex
	failures := 0
	var first reply
	for i := range 1000 {
		wg.Go(func() {
			r := h.aht(tokenAccount, fmt.Sprintf("agent%03d", i%300+1))
			if r.code != 200 || r.status() != "success" {
				mu.Lock()
				if failures == 0 {
					first = r
				}
				failures++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if failures != 0 {
		t.Errorf("%d of 1000 requests failed; the first: %d %s", failures, first.code, first.body)
	}
	if st := h.sim.Stats(); st.TokenGenerations != 1 || st.AHTAdmitted != 300 {
		t.Errorf("upstream: %d generations, %d AHT calls; want 1 and 300", st.TokenGenerations, st.AHTAdmitted)
	}
}

func TestTokenInvalidatedElsewhereRegeneratesOnce(t *testing.T) {
	h := newHarness(t, setup{})
	if r := h.aht(tokenAccount, "agent001"); r.code != 200 {
		t.Fatal(r.body)
	}
	// Another app generates a token for the account directly: caproxy's
	// token is now invalid upstream.
	h.direct(cloudagent.PathGenerateToken, `{"userName":"demo"}`, tokenAccount)

	var wg sync.WaitGroup
	codes := make([]int, 20)
	for i := range codes {
		wg.Go(func() { codes[i] = h.aht(tokenAccount, fmt.Sprintf("agent%03d", 10+i)).code })
	}
	wg.Wait()
	for i, c := range codes {
		if c != 200 {
			t.Errorf("request %d: HTTP %d", i, c)
		}
	}
	// caproxy 1 + the other app 1 + exactly one regeneration.
	if got := h.sim.Stats().TokenGenerations; got != 3 {
		t.Errorf("token generations %d, want 3", got)
	}
}

func TestProactiveRefresh(t *testing.T) {
	clock := newFakeClock()
	h := newHarness(t, setup{clock: clock, ttl: time.Second})
	h.aht(tokenAccount, "agent001")
	clock.Advance(30 * time.Minute)
	h.aht(tokenAccount, "agent002")
	if got := h.sim.Stats().TokenGenerations; got != 1 {
		t.Fatalf("at 30 min: %d generations, want 1", got)
	}
	clock.Advance(24 * time.Minute) // 54 min: inside the refresh window
	if r := h.aht(tokenAccount, "agent003"); r.code != 200 {
		t.Fatal(r.body)
	}
	if got := h.sim.Stats().TokenGenerations; got != 2 {
		t.Errorf("at 54 min: %d generations, want 2", got)
	}
}

func TestGenerationLimitIsAClearError(t *testing.T) {
	h := newHarness(t, setup{sim: sim.Options{TokenGenerations: 100}, perWindow: 1000})
	for i := 1; i <= 11; i++ {
		if i > 1 {
			// Another app generates a token directly, invalidating caproxy's.
			h.direct(cloudagent.PathGenerateToken, `{"userName":"demo"}`, tokenAccount)
		}
		r := h.aht(tokenAccount, fmt.Sprintf("agent%03d", i))
		if i <= 10 && r.code != 200 {
			t.Fatalf("call %d: %d %s", i, r.code, r.body)
		}
		if i == 11 && (r.code != http.StatusServiceUnavailable || r.status() != "error" || !strings.Contains(r.message(), "generation limit")) {
			t.Fatalf("call 11, generations spent: %d %s", r.code, r.body)
		}
	}
	// caproxy generated 10, the other app 10.
	if got := h.sim.Stats().TokenGenerations; got != 20 {
		t.Errorf("upstream generations %d, want 20", got)
	}
	if !strings.Contains(h.logs.String(), "generation limit") {
		t.Error("no log line saying why there is no token")
	}
}

func TestClientTokensAreIssuedLocally(t *testing.T) {
	h := newHarness(t, setup{})
	tok := tokenOf(t, h.generateToken("demo", tokenAccount.APIKey))
	for range 5 {
		tokenOf(t, h.generateToken("demo", tokenAccount.APIKey))
	}
	r := h.do("POST", "/ca_apis/aht", `{"userName":"demo","agentId":"agent001"}`, "Authorization", "Bearer "+tok)
	if r.code != 200 || r.status() != "success" {
		t.Fatalf("AHT with a caproxy token: %d %s", r.code, r.body)
	}
	if got := h.sim.Stats().TokenGenerations; got != 1 {
		t.Errorf("upstream generations %d, want 1 (caproxy's own)", got)
	}
	if strings.Contains(r.body, tok) {
		t.Error("token echoed")
	}
	// So does the same token bare in Authorization, as some clients send it.
	r = h.do("POST", "/ca_apis/aht", `{"userName":"demo","agentId":"agent002"}`, "Authorization", tok)
	if r.code != 200 || r.status() != "success" {
		t.Fatalf("AHT with a bare caproxy token: %d %s", r.code, r.body)
	}
	// A token for one account does not open another, and the refusal says
	// it is the token that is wrong.
	r = h.do("POST", "/ca_apis/aht", `{"userName":"demo-basic","agentId":"agent001"}`, "Authorization", "Bearer "+tok)
	if r.code != 401 || r.message() != credential.MsgTokenOtherAccount {
		t.Errorf("cross-account token: %d %s", r.code, r.body)
	}
	for _, c := range []struct{ user, key string }{{"demo", "wrong"}, {"demo", ""}, {"stranger", "demo-key"}, {"", "demo-key"}} {
		r := h.generateToken(c.user, c.key)
		if r.code != 401 || r.status() != cloudagent.StatusFalse || r.message() != cloudagent.MsgTokenInvalidCredentials {
			t.Errorf("generateToken(%q, %q): %d %s", c.user, c.key, r.code, r.body)
		}
	}
}

func TestClientAuthOff(t *testing.T) {
	h := newHarness(t, setup{clientAuth: "off"})
	r := h.do("POST", "/ca_apis/aht", `{"userName":"demo","agentId":"agent001"}`)
	if r.code != 200 {
		t.Errorf("no credentials with client_auth off: %d %s", r.code, r.body)
	}
	r = h.do("POST", "/ca_apis/aht", `{"userName":"stranger","agentId":"agent001"}`)
	if r.code != 401 || r.message() != cloudagent.MsgInvalidCredentials {
		t.Errorf("unknown account: %d %s", r.code, r.body)
	}
}

func TestPassThroughInjectsCredentials(t *testing.T) {
	h := newHarness(t, setup{})
	// apikey account: the client proves itself with a caproxy token, and the
	// upstream only accepts the call if caproxy injected the account's key.
	tok := tokenOf(t, h.generateToken("demo-basic", apikeyAccount.APIKey))
	r := h.do("POST", sim.PathAgentDetails, `{"userName":"demo-basic"}`, "Authorization", "Bearer "+tok)
	if r.code != 200 || r.status() != "success" {
		t.Errorf("apikey account: %d %s", r.code, r.body)
	}
	// token account, userName in the query: the upstream needs caproxy's bearer token.
	r = h.do("POST", sim.PathAgentDetails+"?userName=demo", ``, "apiKey", tokenAccount.APIKey)
	if r.code != 200 || r.status() != "success" {
		t.Errorf("token account: %d %s", r.code, r.body)
	}
	// The client's own credentials stay with caproxy: its caproxy-issued
	// token never goes upstream, nor its apiKey next to the upstream token.
	for _, sent := range h.tokens.seen() {
		if sent == tok {
			t.Error("the client's caproxy-issued token was sent upstream")
		}
	}
	if n := h.tokens.apiKeyOnBearer.Load(); n != 0 {
		t.Errorf("%d upstream requests carried the client's apiKey next to the upstream token", n)
	}
	// Unknown paths come back as the upstream answered them.
	r = h.do("GET", "/ca_apis/nope?userName=demo", ``, "apiKey", tokenAccount.APIKey)
	if r.code != 404 {
		t.Errorf("unknown path: %d %s", r.code, r.body)
	}
	// Without proof, nothing is passed.
	calls := h.sim.Stats().OtherCalls
	for _, c := range []struct {
		hdr  []string
		code int
		msg  string
	}{
		{nil, 401, cloudagent.MsgAPIKeyEmpty},
		{[]string{"apiKey", "wrong"}, 401, cloudagent.MsgInvalidCredentials},
	} {
		r := h.do("POST", sim.PathAgentDetails, `{"userName":"demo"}`, c.hdr...)
		if r.code != c.code || r.message() != c.msg {
			t.Errorf("%v: %d %s", c.hdr, r.code, r.body)
		}
	}
	if r := h.do("POST", sim.PathAgentDetails, `{}`, "apiKey", "demo-key"); r.code != 400 || r.message() != cloudagent.MsgUserNameEmpty {
		t.Errorf("no userName: %d %s", r.code, r.body)
	}
	if got := h.sim.Stats().OtherCalls; got != calls {
		t.Errorf("refused requests reached the upstream: %d calls, want %d", got, calls)
	}
}

func TestPassThroughUpstreamDownIs502(t *testing.T) {
	h := newHarness(t, setup{})
	h.simSrv.Close()
	r := h.do("POST", sim.PathAgentDetails, `{"userName":"demo-basic"}`, "apiKey", apikeyAccount.APIKey)
	if r.code != http.StatusBadGateway || r.status() != "error" {
		t.Errorf("%d %s, want 502 with an error body", r.code, r.body)
	}
}

func TestPassThroughStreamsLargeBodiesWithQueryAccount(t *testing.T) {
	h := newHarness(t, setup{})
	body := bytes.Repeat([]byte("x"), 32<<10)
	r := h.do("POST", "/ca_apis/upload?userName=demo-basic", string(body), "apiKey", apikeyAccount.APIKey)
	if r.code != 404 { // the simulator has no such path; it got the request
		t.Errorf("%d %s", r.code, r.body)
	}
}

// TestPassThroughCannotLockTheAccountOut is issue 13's lockout: a client
// that makes CloudAgent answer "Invalid Token" on pass-through (here by
// naming another account in the body) must not make caproxy drop a good
// token, and a token really refused is replaced on pass-through evidence
// only once it is old enough, once.
func TestPassThroughCannotLockTheAccountOut(t *testing.T) {
	demo2 := sim.Account{UserName: "demo2", APIKey: "demo2-key", Auth: "token"}
	clock := newFakeClock()
	h := newHarness(t, setup{clock: clock, sim: sim.Options{Accounts: []sim.Account{tokenAccount, demo2}}})
	if r := h.aht(tokenAccount, "agent001"); r.code != 200 {
		t.Fatalf("first miss: %d %s", r.code, r.body)
	}
	for i := range 12 {
		// Spread over more than a minute: AgentDetails allows 10 a minute.
		clock.Advance(7 * time.Second)
		r := h.do("POST", sim.PathAgentDetails+"?userName=demo", `{"userName":"demo2"}`, "apiKey", tokenAccount.APIKey)
		if r.message() != cloudagent.MsgTokenInvalid {
			t.Fatalf("request %d: %d %s; want CloudAgent's %q passed through", i, r.code, r.body, cloudagent.MsgTokenInvalid)
		}
	}
	if g := h.sim.Stats().TokenGenerations; g != 1 {
		t.Errorf("12 forged refusals made %d upstream token generations, want 1", g)
	}
	if r := h.aht(tokenAccount, "agent002"); r.code != 200 || r.header.Get("X-Cache") != "MISS" {
		t.Errorf("miss after the forged refusals: %d %s", r.code, r.body)
	}
	if !h.proxy.Ready() {
		t.Error("not ready after the forged refusals")
	}

	// An app outside caproxy generates a token: caproxy's is really dead.
	h.direct(cloudagent.PathGenerateToken, `{"userName":"demo"}`, tokenAccount)
	passed := func() reply {
		return h.do("POST", sim.PathAgentDetails+"?userName=demo", ``, "apiKey", tokenAccount.APIKey)
	}
	if r := passed(); r.message() != cloudagent.MsgTokenExpired {
		t.Fatalf("with a replaced token: %d %s", r.code, r.body)
	}
	if g := h.sim.Stats().TokenGenerations; g != 2 {
		t.Errorf("a young token was replaced on pass-through evidence: %d generations, want 2", g)
	}
	clock.Advance(credential.DefaultMinSuspectAge + time.Second)
	passed() // refused again; now the token is old enough to drop
	if r := passed(); r.code != 200 || r.status() != "success" {
		t.Errorf("after the old token was dropped: %d %s", r.code, r.body)
	}
	if g := h.sim.Stats().TokenGenerations; g != 3 {
		t.Errorf("%d generations, want 3", g)
	}
}

// TestRefusedCredentialsAreNeverA200 checks that CloudAgent refusing
// caproxy's own credentials on an AHT call reaches the client as an error
// with a non-2xx status, and is never cached.
// The answer is 502 whatever HTTP status CloudAgent gave its refusal: the
// client's own credentials were accepted, so passing on CloudAgent's 401
// would tell the client its key is wrong.
func TestRefusedCredentialsAreNeverA200(t *testing.T) {
	for _, upstreamStatus := range []int{http.StatusOK, http.StatusUnauthorized} {
		t.Run(strconv.Itoa(upstreamStatus), func(t *testing.T) {
			h := newHarness(t, setup{sim: sim.Options{AuthFailureStatus: upstreamStatus}})
			// caproxy holds a wrong upstream key for the apikey account
			// (clients still prove themselves with the right one).
			h.proxy.Settings().Accounts[apikeyAccount.UserName].Upstream = credential.APIKey("not-the-key")
			for i := range 2 {
				r := h.aht(apikeyAccount, "agent001")
				if r.code != http.StatusBadGateway || r.status() != "error" || r.message() != cloudagent.MsgInvalidCredentials {
					t.Errorf("request %d: %d %s; want 502 %q", i, r.code, r.body, cloudagent.MsgInvalidCredentials)
				}
			}
			if n := h.sim.Stats().AHTCalls; n != 2 {
				t.Errorf("%d upstream AHT calls, want 2: the refusal must not be cached", n)
			}
		})
	}
}

// TestRefusedTokenGenerationSpendsNoBudget checks that an AHT miss whose
// token generation is refused answers with CloudAgent's reason and spends
// no slot of the AHT budget (no call went out).
func TestRefusedTokenGenerationSpendsNoBudget(t *testing.T) {
	h := newHarness(t, setup{})
	upstream, _ := url.Parse(h.simSrv.URL)
	h.proxy.Settings().Accounts[tokenAccount.UserName].Upstream = &credential.TokenSource{
		UserName: tokenAccount.UserName, APIKey: "not-the-key", Endpoint: upstream,
	}
	before, err := h.proxy.Budget.State(context.Background(), tokenAccount.UserName)
	if err != nil {
		t.Fatal(err)
	}
	r := h.aht(tokenAccount, "agent001")
	if r.code != http.StatusBadGateway || !strings.Contains(r.message(), cloudagent.MsgTokenInvalidCredentials) {
		t.Errorf("%d %s; want 502 naming CloudAgent's refusal %q", r.code, r.body, cloudagent.MsgTokenInvalidCredentials)
	}
	after, err := h.proxy.Budget.State(context.Background(), tokenAccount.UserName)
	if err != nil {
		t.Fatal(err)
	}
	if after.Remaining != before.Remaining {
		t.Errorf("budget went from %d to %d remaining with no upstream AHT call", before.Remaining, after.Remaining)
	}
	if n := h.sim.Stats().AHTCalls; n != 0 {
		t.Errorf("%d AHT calls went upstream without a token", n)
	}
}
