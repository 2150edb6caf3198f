package credential

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/caproxy/caproxy/cloudagent"
)

// TestPresent: every style production clients present credentials in is
// read, with where it came from; the legacy query is read only on the
// legacy API; ambiguous presentations are refused with a message that says
// what is wrong.
func TestPresent(t *testing.T) {
	cases := []struct {
		name   string
		query  string
		header []string // name, value pairs (Add, so repeats stay)
		legacy bool
		want   Presented
	}{
		{"nothing", "", nil, false, Presented{}},
		{"apiKey header", "", []string{"apiKey", "k1"}, false,
			Presented{APIKey: "k1", KeyFrom: FromAPIKeyHeader}},
		{"apiKey header, lower case name", "", []string{"apikey", "k1"}, false,
			Presented{APIKey: "k1", KeyFrom: FromAPIKeyHeader}},
		{"empty apiKey header presents nothing", "", []string{"apiKey", ""}, false, Presented{}},
		{"empty apiKey header beside a token", "", []string{"apiKey", "", "Authorization", "Bearer t.s"}, false,
			Presented{Token: "t.s", TokenFrom: FromBearer}},
		{"apiKey header twice, different", "", []string{"apiKey", "k1", "apiKey", "k2"}, false,
			Presented{APIKey: "k1", KeyFrom: FromAPIKeyHeader, Problem: MsgAPIKeysDiffer}},
		{"bearer", "", []string{"Authorization", "Bearer t.s"}, false,
			Presented{Token: "t.s", TokenFrom: FromBearer}},
		{"bearer, lower-case scheme and extra spaces", "", []string{"Authorization", "  bearer   t.s "}, false,
			Presented{Token: "t.s", TokenFrom: FromBearer}},
		{"bare token", "", []string{"Authorization", "t.s"}, false,
			Presented{Token: "t.s", TokenFrom: FromBareAuthorization}},
		{"Bearer with no token", "", []string{"Authorization", "Bearer"}, false,
			Presented{TokenFrom: FromBearer, TokenProblem: MsgTokenEmpty}},
		{"Basic scheme", "", []string{"Authorization", "Basic dTpw"}, false,
			Presented{TokenProblem: MsgAuthorizationScheme}},
		{"Bearer with two words", "", []string{"Authorization", "Bearer a b"}, false,
			Presented{Token: "a b", TokenFrom: FromBearer, TokenProblem: MsgAuthorizationScheme}},
		{"two different Authorization headers", "", []string{"Authorization", "Bearer a", "Authorization", "Bearer b"}, false,
			Presented{Token: "a", TokenFrom: FromBearer, TokenProblem: MsgAuthorizationScheme}},
		{"empty Authorization header", "", []string{"Authorization", ""}, false, Presented{}},
		{"apiKey and bearer together", "", []string{"apiKey", "k1", "Authorization", "Bearer t.s"}, false,
			Presented{APIKey: "k1", KeyFrom: FromAPIKeyHeader, Token: "t.s", TokenFrom: FromBearer}},
		{"legacy api_key and username", "api_key=k1&username=u1&agentID=a", nil, true,
			Presented{APIKey: "k1", KeyFrom: FromQuery, UserName: "u1"}},
		{"legacy apiKey and userName", "apiKey=k1&userName=u1", nil, true,
			Presented{APIKey: "k1", KeyFrom: FromQuery, UserName: "u1"}},
		{"legacy query ignored on other APIs", "api_key=k1&username=u1", nil, false, Presented{}},
		{"legacy empty api_key presents nothing", "api_key=&username=u1", nil, true,
			Presented{UserName: "u1"}},
		{"legacy header and the same query key", "api_key=k1&username=u1", []string{"apiKey", "k1"}, true,
			Presented{APIKey: "k1", KeyFrom: FromAPIKeyHeader, UserName: "u1"}},
		{"legacy header and another query key", "api_key=k2&username=u1", []string{"apiKey", "k1"}, true,
			Presented{APIKey: "k1", KeyFrom: FromAPIKeyHeader, UserName: "u1", Problem: MsgAPIKeysDiffer}},
		{"legacy api_key and apiKey differ", "api_key=k1&apiKey=k2&username=u1", nil, true,
			Presented{UserName: "u1", Problem: MsgAPIKeysDiffer}},
		{"legacy username and userName differ", "api_key=k1&username=u1&userName=u2", nil, true,
			Presented{APIKey: "k1", KeyFrom: FromQuery, UserName: "u1", Problem: MsgUserNamesDiffer}},
		{"legacy username and userName agree", "api_key=k1&username=u1&userName=u1", nil, true,
			Presented{APIKey: "k1", KeyFrom: FromQuery, UserName: "u1"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/CAServices/AgentManualDial.php?"+c.query, nil)
			for i := 0; i+1 < len(c.header); i += 2 {
				r.Header.Add(c.header[i], c.header[i+1])
			}
			if got := Present(r, c.legacy); got != c.want {
				t.Fatalf("Present = %+v, want %+v", got, c.want)
			}
		})
	}
}

// TestPresentedCheck: an apiKey decides when presented (so apiKey and a
// stale bearer together still pass), else the token, else the refusal is
// CloudAgent's "apiKey should not be empty"; each wrong credential gets a
// message naming it.
func TestPresentedCheck(t *testing.T) {
	key := NewKey("k1")
	verify := func(tok string) (string, bool) {
		switch tok {
		case "tok-u1":
			return "u1", true
		case "tok-u2":
			return "u2", true
		}
		return "", false
	}
	cases := []struct {
		name string
		p    Presented
		key  Key
		want string
	}{
		{"nothing", Presented{}, key, cloudagent.MsgAPIKeyEmpty},
		{"right apiKey", Presented{APIKey: "k1", KeyFrom: FromAPIKeyHeader}, key, ""},
		{"right query key", Presented{APIKey: "k1", KeyFrom: FromQuery}, key, ""},
		{"wrong apiKey", Presented{APIKey: "k2", KeyFrom: FromAPIKeyHeader}, key, cloudagent.MsgInvalidCredentials},
		{"empty apiKey header", Presented{KeyFrom: FromAPIKeyHeader}, key, cloudagent.MsgAPIKeyEmpty},
		{"unknown account", Presented{APIKey: "k1", KeyFrom: FromAPIKeyHeader}, Key{}, cloudagent.MsgInvalidCredentials},
		{"bearer token of the account", Presented{Token: "tok-u1", TokenFrom: FromBearer}, key, ""},
		{"bare token of the account", Presented{Token: "tok-u1", TokenFrom: FromBareAuthorization}, key, ""},
		{"token not issued by caproxy", Presented{Token: "upstream", TokenFrom: FromBearer}, key, MsgTokenInvalid},
		{"token of another account", Presented{Token: "tok-u2", TokenFrom: FromBareAuthorization}, key, MsgTokenOtherAccount},
		{"right apiKey, bad token", Presented{APIKey: "k1", KeyFrom: FromAPIKeyHeader, Token: "x", TokenFrom: FromBearer}, key, ""},
		{"wrong apiKey, good token", Presented{APIKey: "k2", KeyFrom: FromAPIKeyHeader, Token: "tok-u1", TokenFrom: FromBearer}, key, cloudagent.MsgInvalidCredentials},
		{"a problem wins", Presented{APIKey: "k1", KeyFrom: FromAPIKeyHeader, Problem: MsgAPIKeysDiffer}, key, MsgAPIKeysDiffer},
		{"right apiKey beside a Basic header", Presented{APIKey: "k1", KeyFrom: FromAPIKeyHeader, TokenProblem: MsgAuthorizationScheme}, key, ""},
		{"Basic header alone", Presented{TokenProblem: MsgAuthorizationScheme}, key, MsgAuthorizationScheme},
		{"empty Bearer alone", Presented{TokenFrom: FromBearer, TokenProblem: MsgTokenEmpty}, key, MsgTokenEmpty},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := c.p.Check("u1", c.key, verify); got != c.want {
				t.Fatalf("Check = %q, want %q", got, c.want)
			}
		})
	}
}

// TestPresentedWithIssuer: Check with a real Issuer accepts a token it
// issued for the account, refuses one for another account, and one signed
// before the account's key changed.
func TestPresentedWithIssuer(t *testing.T) {
	var iss Issuer
	keys := map[string]string{"u1": "k1", "u2": "k2"}
	keyFor := func(u string) (string, bool) { k, ok := keys[u]; return k, ok }
	now := issuerNow
	verify := func(tok string) (string, bool) { return iss.Verify(tok, keyFor, now) }
	t1, _ := iss.Issue("u1", "k1", now)
	t2, _ := iss.Issue("u2", "k2", now)
	old, _ := iss.Issue("u1", "old-key", now)
	for _, c := range []struct {
		auth, want string
	}{
		{"Bearer " + t1, ""},
		{t1, ""},
		{"Bearer " + t2, MsgTokenOtherAccount},
		{old, MsgTokenInvalid},
	} {
		r := httptest.NewRequest(http.MethodGet, "/ca_reports/fetchCDRDetails", nil)
		r.Header.Set("Authorization", c.auth)
		if got := Present(r, false).Check("u1", NewKey("k1"), verify); got != c.want {
			t.Errorf("Authorization %.12q…: Check = %q, want %q", c.auth, got, c.want)
		}
	}
}

// TestPresentedHidesSecrets: formatting or logging what a client presented
// shows where its credentials came from, never their values.
func TestPresentedHidesSecrets(t *testing.T) {
	p := Presented{APIKey: "secret-key", KeyFrom: FromQuery, Token: "secret-token", TokenFrom: FromBearer}
	var logged strings.Builder
	slog.New(slog.NewTextHandler(&logged, nil)).Info("auth", "presented", p, "upstream", QueryKey{UserName: "u1", Key: "secret-key"})
	for _, out := range []string{fmt.Sprint(p), fmt.Sprintf("%v %+v", p, p), logged.String(),
		fmt.Sprintf("%v %+v %#v", QueryKey{"u1", "secret-key"}, QueryKey{"u1", "secret-key"}, QueryKey{"u1", "secret-key"})} {
		if strings.Contains(out, "secret") {
			t.Errorf("output shows a secret: %s", out)
		}
	}
	if !strings.Contains(logged.String(), FromQuery.String()) {
		t.Errorf("log does not say where the key came from: %s", logged.String())
	}
}

// TestStripClient: every client credential leaves the outgoing request,
// headers and query alike, whatever the spelling; the rest of the query is
// kept byte for byte and in order.
func TestStripClient(t *testing.T) {
	cases := []struct{ query, want string }{
		{"", ""},
		{"a=1&b=2", "a=1&b=2"},
		{"api_key=k&username=u&agentID=a%20b&format=json", "username=u&agentID=a%20b&format=json"},
		{"agentID=a&apiKey=k&API_KEY=k&apikey=k&api%5Fkey=k", "agentID=a"},
		{"apiKey=k", ""},
		{"x=%zz&api_key=k", "x=%zz"},
		{"b=2&a=1&b=1", "b=2&a=1&b=1"},
	}
	for _, c := range cases {
		u := &url.URL{Path: "/CAServices/AgentManualDial.php", RawQuery: c.query}
		h := http.Header{}
		h.Set("apiKey", "k")
		h.Set("Authorization", "Bearer t")
		h.Set("Content-Type", "application/json")
		StripClient(h, u)
		if u.RawQuery != c.want {
			t.Errorf("query %q: stripped to %q, want %q", c.query, u.RawQuery, c.want)
		}
		if h.Get("apiKey") != "" || h.Get("Authorization") != "" || h.Get("Content-Type") == "" {
			t.Errorf("headers after strip: %v", h)
		}
	}
}

// TestQueryKey: the legacy style replaces whatever account and key the
// client put in the query with the account's, and refuses to go out
// without a key or a userName.
func TestQueryKey(t *testing.T) {
	k := QueryKey{UserName: "demo basic", Key: "k&1="}
	cases := []struct{ query, want string }{
		{"", "api_key=k%261%3D&username=demo+basic"},
		{"api_key=client&username=demo&agentID=a1&format=json",
			"agentID=a1&format=json&api_key=k%261%3D&username=demo+basic"},
		{"userName=x&apiKey=y&campaignName=c", "campaignName=c&api_key=k%261%3D&username=demo+basic"},
	}
	for _, c := range cases {
		u := &url.URL{Path: "/CAServices/AgentManualDial.php", RawQuery: c.query}
		h := http.Header{}
		handle, err := k.Apply(context.Background(), h)
		if err != nil || handle != "" || len(h) != 0 {
			t.Fatalf("Apply: %q %v, header %v", handle, err, h)
		}
		k.ApplyQuery(u)
		if u.RawQuery != c.want {
			t.Errorf("query %q: got %q, want %q", c.query, u.RawQuery, c.want)
		}
		q := u.Query()
		if q.Get("api_key") != "k&1=" || q.Get("username") != "demo basic" {
			t.Errorf("query %q: decodes to %v", c.query, q)
		}
	}
	if _, err := (QueryKey{UserName: "u"}).Apply(context.Background(), http.Header{}); !errors.Is(err, ErrNoAPIKey) {
		t.Errorf("no key: %v", err)
	}
	if _, err := (QueryKey{Key: "k"}).Apply(context.Background(), http.Header{}); !errors.Is(err, ErrNoUserName) {
		t.Errorf("no userName: %v", err)
	}
}
