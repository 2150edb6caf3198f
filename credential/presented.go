package credential

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"strings"

	"github.com/caproxy/caproxy/cloudagent"
)

// Source says where a client put a credential, so a refusal can name it.
type Source uint8

// Every place production clients put their credentials (DESIGN.md,
// "Production answer shapes and client habits").
const (
	// FromNone: nothing was presented.
	FromNone Source = iota
	// FromAPIKeyHeader: "apiKey: <key>", CloudAgent's BASIC_AUTH header.
	FromAPIKeyHeader
	// FromBearer: "Authorization: Bearer <token>".
	FromBearer
	// FromBareAuthorization: "Authorization: <token>", without "Bearer ",
	// as some clients send CloudAgent's token.
	FromBareAuthorization
	// FromQuery: api_key (or apiKey) in the query string of the legacy
	// CAServices API.
	FromQuery
)

// String names the source as a refusal or a log line would.
func (s Source) String() string {
	switch s {
	case FromAPIKeyHeader:
		return "apiKey header"
	case FromBearer:
		return "Authorization Bearer token"
	case FromBareAuthorization:
		return "Authorization token"
	case FromQuery:
		return "api_key query parameter"
	}
	return "none"
}

// Names of the legacy API's query credentials. CloudAgent's legacy
// documentation spells them api_key and username; public clients also send
// apiKey and userName, and the legacy API (PHP) takes either.
const (
	QueryAPIKey   = "api_key"
	QueryUserName = "username"
)

// Refusals caproxy words itself, where CloudAgent's own messages
// (cloudagent.MsgAPIKeyEmpty, cloudagent.MsgInvalidCredentials) would
// mislead: they say which credential was wrong.
const (
	// MsgTokenInvalid refuses a token caproxy did not issue, or one issued
	// for an account whose apiKey has changed since, or an expired one.
	MsgTokenInvalid = "token is invalid or expired"
	// MsgTokenOtherAccount refuses a valid token used for another account
	// than the one it was issued for.
	MsgTokenOtherAccount = "token was issued for another userName"
	// MsgTokenEmpty refuses "Authorization: Bearer" with nothing after it.
	MsgTokenEmpty = "token should not be empty"
	// MsgAuthorizationScheme refuses an Authorization header of another
	// scheme (Basic, say): caproxy takes a token, bare or as Bearer.
	MsgAuthorizationScheme = "Authorization must be a token or Bearer <token>"
	// MsgAPIKeysDiffer refuses a request presenting two different apiKeys
	// (header and query, or twice in one place): caproxy will not guess
	// which one the client meant.
	MsgAPIKeysDiffer = "apiKey is given twice with different values"
	// MsgUserNamesDiffer refuses a legacy request naming two accounts
	// (username and userName differ).
	MsgUserNamesDiffer = "username is given twice with different values"
)

// Presented is every credential a client presented on one request, and
// where. APIKey and Token are secrets: LogValue and String show only where
// they came from.
type Presented struct {
	// APIKey is the presented apiKey, from KeyFrom (FromAPIKeyHeader or
	// FromQuery).
	APIKey  string
	KeyFrom Source
	// Token is the presented token, from TokenFrom (FromBearer or
	// FromBareAuthorization).
	Token     string
	TokenFrom Source
	// UserName is the account named in the legacy query string
	// (username or userName); "" on other APIs, whose userName is in the
	// JSON body or the query and is read with the rest of the request.
	UserName string
	// Problem, if not "", is why the presentation itself is refused
	// (MsgAPIKeysDiffer, MsgUserNamesDiffer), whatever the account.
	Problem string
	// TokenProblem, if not "", is what is wrong with the Authorization
	// header (MsgAuthorizationScheme, MsgTokenEmpty). It refuses the
	// request only when no apiKey decides (see Check).
	TokenProblem string
}

// Present reads the credentials r presents: the apiKey header, the
// Authorization header (a Bearer token or a bare one) and, when legacy is
// set (the CAServices API), api_key/apiKey and username/userName in the
// query string. It only reads; Check decides.
func Present(r *http.Request, legacy bool) Presented {
	var p Presented
	// An empty apiKey header presents nothing, so a client that sends one
	// (an unset variable) beside a token is judged by its token.
	if v := r.Header[canonicalAPIKeyHeader]; len(v) > 0 && v[0] != "" {
		p.APIKey, p.KeyFrom = v[0], FromAPIKeyHeader
		if !allEqual(v) {
			p.Problem = MsgAPIKeysDiffer
		}
	}
	if v := r.Header[cloudagent.HeaderAuthorization]; len(v) > 0 {
		p.Token, p.TokenFrom, p.TokenProblem = parseAuthorization(v)
	}
	if !legacy {
		return p
	}
	q := r.URL.Query()
	// An empty api_key presents nothing, as an absent one: the header may
	// carry the key.
	key, given, conflict := queryValue(q, QueryAPIKey, "apiKey")
	switch {
	case conflict:
		p.Problem = MsgAPIKeysDiffer
	case !given:
	case p.KeyFrom == FromNone:
		p.APIKey, p.KeyFrom = key, FromQuery
	case key != p.APIKey:
		p.Problem = MsgAPIKeysDiffer
	}
	user, _, conflict := queryValue(q, QueryUserName, "userName")
	if conflict && p.Problem == "" {
		p.Problem = MsgUserNamesDiffer
	}
	p.UserName = user
	return p
}

// canonicalAPIKeyHeader is cloudagent.HeaderAPIKey as net/http stores it;
// indexing the map with it skips canonicalizing on every request.
const canonicalAPIKeyHeader = "Apikey"

// parseAuthorization reads Authorization values: "Bearer <token>" (scheme
// in any case) or a bare token (no space in it). Anything else, or two
// different values, is a problem (the first found is kept).
func parseAuthorization(v []string) (token string, from Source, problem string) {
	set := func(msg string) {
		if problem == "" {
			problem = msg
		}
	}
	if !allEqual(v) {
		set(MsgAuthorizationScheme)
	}
	s := strings.TrimSpace(v[0])
	scheme, rest, hasSpace := strings.Cut(s, " ")
	switch {
	case strings.EqualFold(s, "Bearer"):
		set(MsgTokenEmpty)
		return "", FromBearer, problem
	case hasSpace && strings.EqualFold(scheme, "Bearer"):
		rest = strings.TrimSpace(rest)
		if strings.ContainsAny(rest, " \t") {
			set(MsgAuthorizationScheme)
		}
		return rest, FromBearer, problem
	case hasSpace || strings.ContainsRune(s, '\t'):
		set(MsgAuthorizationScheme)
		return "", FromNone, problem
	case s == "":
		return "", FromNone, problem // an empty header presents nothing
	}
	return s, FromBareAuthorization, problem
}

// queryValue returns the one non-empty value q gives under any of names:
// given is false when there is none, conflict true when two differ (two
// names, or one name twice; value is then the first).
func queryValue(q url.Values, names ...string) (value string, given, conflict bool) {
	for _, n := range names {
		for _, v := range q[n] {
			switch {
			case v == "":
			case !given:
				value, given = v, true
			case v != value:
				return value, given, true
			}
		}
	}
	return value, given, false
}

func allEqual(v []string) bool {
	for _, s := range v[1:] {
		if s != v[0] {
			return false
		}
	}
	return true
}

// Presents reports whether any credential was presented at all.
func (p Presented) Presents() bool { return p.KeyFrom != FromNone || p.TokenFrom != FromNone }

// Check decides whether p proves the right to use the account userName,
// and returns "" if it does, or the message to refuse with (HTTP 401).
// key is that account's Key (the zero Key for an unknown account, which
// nothing matches); verify checks a token caproxy issued and returns the
// account it was issued for.
//
// An apiKey, where presented, decides alone: clients send the apiKey and
// a token together to the reporting API, and a right key beside a stale
// token, or beside an Authorization header meant for something else, is
// still the account's key. Otherwise the token decides.
func (p Presented) Check(userName string, key Key, verify func(token string) (userName string, ok bool)) string {
	switch {
	case p.Problem != "":
		return p.Problem
	case p.KeyFrom != FromNone:
		if p.APIKey == "" {
			return cloudagent.MsgAPIKeyEmpty
		}
		if !key.Matches(p.APIKey) {
			return cloudagent.MsgInvalidCredentials
		}
		return ""
	case p.TokenProblem != "":
		return p.TokenProblem
	case p.TokenFrom != FromNone:
		user, ok := verify(p.Token)
		if !ok {
			return MsgTokenInvalid
		}
		if user != userName {
			return MsgTokenOtherAccount
		}
		return ""
	}
	return cloudagent.MsgAPIKeyEmpty
}

// String shows where the credentials came from, never their values.
func (p Presented) String() string {
	return "apiKey from " + p.KeyFrom.String() + ", token from " + p.TokenFrom.String()
}

// LogValue keeps the secrets out of slog.
func (p Presented) LogValue() slog.Value {
	return slog.GroupValue(slog.String("key_from", p.KeyFrom.String()), slog.String("token_from", p.TokenFrom.String()))
}

// IsQueryCredential reports whether a query parameter named name carries
// a client's secret (api_key, apiKey, in any case): StripClient drops it.
func IsQueryCredential(name string) bool {
	return strings.EqualFold(name, QueryAPIKey) || strings.EqualFold(name, "apiKey")
}

// isQueryUserName reports whether a query parameter named name names the
// legacy API's account (username, userName, in any case).
func isQueryUserName(name string) bool { return strings.EqualFold(name, QueryUserName) }

// StripClient removes from an outgoing request every credential a client
// may have presented to caproxy: the apiKey and Authorization headers and
// the api_key/apiKey query parameters (in any case, on every path), so no
// client secret reaches CloudAgent whatever route it takes. The rest of
// the query is kept byte for byte, in order.
func StripClient(h http.Header, u *url.URL) {
	h.Del(cloudagent.HeaderAPIKey)
	h.Del(cloudagent.HeaderAuthorization)
	if u != nil {
		u.RawQuery = dropQuery(u.RawQuery, IsQueryCredential)
		u.ForceQuery = false
	}
}

// dropQuery returns raw without the parameters whose (unescaped) name drop
// reports, keeping the others as they were written.
func dropQuery(raw string, drop func(name string) bool) string {
	if raw == "" {
		return raw
	}
	var b strings.Builder
	changed := false
	for rest := raw; rest != ""; {
		var seg string
		seg, rest, _ = strings.Cut(rest, "&")
		name, _, _ := strings.Cut(seg, "=")
		if n, err := url.QueryUnescape(name); err == nil && drop(n) {
			changed = true
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('&')
		}
		b.WriteString(seg)
	}
	if !changed {
		return raw
	}
	return b.String()
}

// QueryUpstream is an Upstream whose credentials travel in the query
// string (CloudAgent's legacy CAServices API): Apply checks them and sets
// no header; ApplyQuery puts them on the outgoing URL.
type QueryUpstream interface {
	Upstream
	// ApplyQuery replaces any credentials and account name in u's query
	// with its own.
	ApplyQuery(u *url.URL)
}

// ErrNoUserName is returned by QueryKey.Apply for an account without a
// userName, rather than sending a request CloudAgent is sure to refuse.
var ErrNoUserName = errors.New("credential: no userName configured")

// QueryKey sends an account's apiKey and userName as the legacy CAServices
// API takes them: api_key and username in the query string. Like APIKey it
// never reveals the key when formatted or logged.
type QueryKey struct {
	UserName string
	Key      APIKey
}

var _ QueryUpstream = QueryKey{}

// Apply checks that there is something to send; the credentials go in the
// query (ApplyQuery), not in h. The handle is always "", as for APIKey.
func (k QueryKey) Apply(context.Context, http.Header) (string, error) {
	if k.Key == "" {
		return "", ErrNoAPIKey
	}
	if k.UserName == "" {
		return "", ErrNoUserName
	}
	return "", nil
}

// Reject is a no-op, as for APIKey.
func (QueryKey) Reject(string) {}

// ApplyQuery drops every api_key/apiKey and username/userName parameter
// of u (in any case) and appends the account's api_key and username. The
// other parameters keep their order and spelling.
func (k QueryKey) ApplyQuery(u *url.URL) {
	raw := dropQuery(u.RawQuery, func(n string) bool { return IsQueryCredential(n) || isQueryUserName(n) })
	if raw != "" {
		raw += "&"
	}
	u.RawQuery = raw + QueryAPIKey + "=" + url.QueryEscape(string(k.Key)) + "&" + QueryUserName + "=" + url.QueryEscape(k.UserName)
}

// Redact hides the key in s in any spelling (see Redact): a transport
// error names the URL, and the URL holds the key.
func (k QueryKey) Redact(s string) string { return Redact(s, string(k.Key)) }

// String hides the key.
func (k QueryKey) String() string { return "QueryKey(" + k.UserName + ", " + redacted + ")" }

// GoString hides the key from %#v.
func (k QueryKey) GoString() string { return k.String() }

// LogValue hides the key from slog.
func (k QueryKey) LogValue() slog.Value { return slog.StringValue(k.String()) }
