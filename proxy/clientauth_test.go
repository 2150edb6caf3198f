package proxy_test

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caproxy/caproxy/cloudagent"
	"github.com/caproxy/caproxy/cloudagent/sim"
	"github.com/caproxy/caproxy/config"
	"github.com/caproxy/caproxy/credential"
)

// upstreamLog records what reached the simulator on CloudAgent's paths.
type upstreamLog struct {
	mu   sync.Mutex
	reqs []seenUpstream
}

type seenUpstream struct {
	path   string
	query  url.Values
	header http.Header
}

func (l *upstreamLog) since(n int) []seenUpstream {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]seenUpstream(nil), l.reqs[n:]...)
}

func (l *upstreamLog) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.reqs)
}

// recordedUpstream is a simulator behind a recorder, for setup.upstream.
func recordedUpstream(t *testing.T) (*harness, *upstreamLog) {
	t.Helper()
	s := sim.New(sim.Options{Accounts: []sim.Account{tokenAccount, apikeyAccount}})
	log := &upstreamLog{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !cloudagent.IsTokenPath(r.URL.Path) {
			log.mu.Lock()
			log.reqs = append(log.reqs, seenUpstream{r.URL.Path, r.URL.Query(), r.Header.Clone()})
			log.mu.Unlock()
		}
		s.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return &harness{sim: s, simSrv: srv}, log
}

// TestLegacyRouteCredentials: on the legacy CAServices API clients present
// their credentials in the query string (api_key or apiKey, username or
// userName), or as any other client does; caproxy checks them, refuses
// with a message naming what is wrong (nothing sent upstream), and sends
// upstream the account's api_key and username in the query, never the
// client's and never a header credential.
func TestLegacyRouteCredentials(t *testing.T) {
	up, log := recordedUpstream(t)
	h := newHarness(t, setup{upstream: up})
	tok := tokenOf(t, h.generateToken("demo", tokenAccount.APIKey))
	const rest = "&agentID=agent001&campaignName=Outbound_Sales&customerNumber=9876543210&format=json"
	cases := []struct {
		name    string
		query   string
		headers []string
		code    int
		msg     string // refusal message; "" for a queued dial
		account sim.Account
	}{
		{"api_key and username", "api_key=demo-basic-key&username=demo-basic", nil, 200, "", apikeyAccount},
		{"apiKey and userName", "apiKey=demo-basic-key&userName=demo-basic", nil, 200, "", apikeyAccount},
		{"apiKey header, username in the query", "username=demo-basic", []string{"apiKey", "demo-basic-key"}, 200, "", apikeyAccount},
		{"caproxy token, token-mode account", "username=demo", []string{"Authorization", "Bearer " + tok}, 200, "", tokenAccount},
		{"bare caproxy token", "username=demo", []string{"Authorization", tok}, 200, "", tokenAccount},
		{"wrong api_key", "api_key=nope&username=demo-basic", nil, 401, cloudagent.MsgInvalidCredentials, apikeyAccount},
		{"another account's api_key", "api_key=demo-key&username=demo-basic", nil, 401, cloudagent.MsgInvalidCredentials, apikeyAccount},
		{"no credentials", "username=demo-basic", nil, 401, cloudagent.MsgAPIKeyEmpty, apikeyAccount},
		{"api_key and apiKey differ", "api_key=demo-basic-key&apiKey=nope&username=demo-basic", nil, 401, credential.MsgAPIKeysDiffer, apikeyAccount},
		{"header and query keys differ", "api_key=nope&username=demo-basic", []string{"apiKey", "demo-basic-key"}, 401, credential.MsgAPIKeysDiffer, apikeyAccount},
		{"username and userName differ", "api_key=demo-basic-key&username=demo-basic&userName=demo", nil, 401, credential.MsgUserNamesDiffer, apikeyAccount},
		{"token for another account", "username=demo-basic", []string{"Authorization", "Bearer " + tok}, 401, credential.MsgTokenOtherAccount, apikeyAccount},
		{"no username", "api_key=demo-basic-key", nil, 400, cloudagent.MsgUserNameEmpty, apikeyAccount},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := log.len()
			r := h.do(http.MethodPost, cloudagent.PathLegacyAgentManualDial+"?"+c.query+rest, "", c.headers...)
			sent := log.since(before)
			if c.msg != "" {
				if r.code != c.code || r.status() != cloudagent.StatusError || r.message() != c.msg || len(sent) != 0 {
					t.Fatalf("got %d %s with %d upstream calls, want %d %q and none", r.code, r.body, len(sent), c.code, c.msg)
				}
				return
			}
			if r.code != 200 || r.status() != cloudagent.StatusQueuedSuccessfully || len(sent) != 1 {
				t.Fatalf("got %d %s with %d upstream calls, want a queued dial", r.code, r.body, len(sent))
			}
			q := sent[0].query
			if len(q["api_key"]) != 1 || q.Get("api_key") != c.account.APIKey || len(q["username"]) != 1 || q.Get("username") != c.account.UserName ||
				q.Has("apiKey") || q.Has("userName") || q.Get("agentID") != "agent001" || q.Get("format") != "json" {
				t.Errorf("upstream query %v, want the account's api_key and username once and the rest as sent", q)
			}
			if sent[0].header.Get("apiKey") != "" || sent[0].header.Get("Authorization") != "" {
				t.Errorf("a header credential went upstream on the legacy API: %v", sent[0].header)
			}
		})
	}
}

// TestLegacyRouteReplacesClientKey: with client_auth off the client's
// api_key is not checked, and still never sent: a stale key in an old
// client's URL is replaced by the account's, so the dial goes through.
func TestLegacyRouteReplacesClientKey(t *testing.T) {
	up, log := recordedUpstream(t)
	h := newHarness(t, setup{upstream: up, clientAuth: "off"})
	r := h.do(http.MethodPost, cloudagent.PathLegacyAgentManualDial+
		"?api_key=stale-client-key&username=demo-basic&agentID=agent001&campaignName=Outbound_Sales&customerNumber=9876543210&format=json", "")
	if r.code != 200 || r.status() != cloudagent.StatusQueuedSuccessfully {
		t.Fatalf("dial: %d %s", r.code, r.body)
	}
	if sent := log.since(0); len(sent) != 1 || sent[0].query.Get("api_key") != apikeyAccount.APIKey {
		t.Fatalf("upstream saw %v", sent)
	}
}

// TestQueryCredentialsNeverLeaveOrKey: an api_key a client adds to the
// query of any other route is dropped: a cached route neither sends it
// upstream nor keys its cache on it (the same request without it is a
// hit), and a pass-through route does not forward it.
func TestQueryCredentialsNeverLeaveOrKey(t *testing.T) {
	up, log := recordedUpstream(t)
	h := newHarness(t, setup{upstream: up})
	key := []string{"apiKey", apikeyAccount.APIKey}
	day := "2026-11-27"
	body := `{"fromDate":"` + day + ` 00:00:00","toDate":"` + day + ` 23:59:59","userName":"demo-basic"}`
	r := h.do(http.MethodGet, cloudagent.PathFetchCDRDetails+"?api_key=demo-basic-key&API_KEY=x", body, key...)
	if r.code != 200 || r.header.Get("X-Cache") != "MISS" {
		t.Fatalf("CDR with api_key in the query: %d %v %.200s", r.code, r.header.Get("X-Cache"), r.body)
	}
	r = h.cdr(apikeyAccount, day, key...)
	if r.code != 200 || r.header.Get("X-Cache") != "HIT" {
		t.Fatalf("the same CDR request without it: %d %v, want a HIT", r.code, r.header.Get("X-Cache"))
	}
	r = h.do(http.MethodPost, cloudagent.PathGetAgentLogins+"?apiKey=demo-basic-key", `{"userName":"demo-basic"}`, key...)
	if r.code != 200 {
		t.Fatalf("getAgentLogins: %d %s", r.code, r.body)
	}
	sent := log.since(0)
	if len(sent) != 2 {
		t.Fatalf("%d upstream calls, want 2", len(sent))
	}
	for _, s := range sent {
		for name := range s.query {
			if credential.IsQueryCredential(name) {
				t.Errorf("%s: query parameter %s went upstream", s.path, name)
			}
		}
	}
}

// TestQueryRouteKeyNotLogged: on a cached route of auth query (configured)
// the account's key is in the upstream URL, and net/http names the URL in
// a transport error; the logged error has the key redacted.
func TestQueryRouteKeyNotLogged(t *testing.T) {
	up, _ := recordedUpstream(t)
	up.simSrv.Close() // every upstream call fails to connect
	h := newHarness(t, setup{upstream: up, routes: []config.Route{{
		Name: "legacy_report", Path: "/CAServices/Report.php", Methods: []string{http.MethodGet},
		Auth: "query", CacheTTL: time.Minute,
	}}})
	r := h.do(http.MethodGet, "/CAServices/Report.php?api_key=demo-basic-key&username=demo-basic&format=json", "")
	if r.code != http.StatusBadGateway {
		t.Fatalf("with the upstream down: %d %s, want 502", r.code, r.body)
	}
	if logs := h.logText(); !strings.Contains(logs, "upstream call failed") || !strings.Contains(logs, "Report.php") {
		t.Fatalf("no log of the failed call naming its URL:\n%s", logs)
	}
	// checkNoSecretsLogged, run at cleanup, fails the test if the key is there.
}
