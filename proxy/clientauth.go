package proxy

import (
	"net/http"
	"net/url"

	"github.com/caproxy/caproxy/credential"
	"github.com/caproxy/caproxy/route"
)

// takesQueryCredentials reports whether rt's clients may present their
// credentials in the query string: the routes whose upstream credentials
// travel there (AuthQuery, the legacy CAServices API), as the clients of
// that API send them.
func takesQueryCredentials(rt *Route) bool { return rt != nil && rt.Auth == route.AuthQuery }

// presentedOn reads the credentials r presents on rt.
func presentedOn(r *http.Request, rt *Route) credential.Presented {
	return credential.Present(r, takesQueryCredentials(rt))
}

// queryUserName returns the account r names in its query string: userName,
// and on a route that takes query credentials also the legacy API's
// username (credential.Present refuses the two when they differ).
func queryUserName(r *http.Request, rt *Route) string {
	if !takesQueryCredentials(rt) {
		if r.URL.RawQuery == "" {
			return ""
		}
		return r.URL.Query().Get("userName")
	}
	return presentedOn(r, rt).UserName
}

// dropQueryCredentials removes a client's credentials (api_key, apiKey in
// any case) from a parsed query, so a cached route neither keys its cache
// on a secret nor sends it upstream.
func dropQueryCredentials(q url.Values) {
	for name := range q {
		if credential.IsQueryCredential(name) {
			delete(q, name)
		}
	}
}

// queryUpstream is the account's apiKey and userName as the legacy API's
// query credentials (AuthQuery).
func (a *Account) queryUpstream() credential.Upstream {
	return credential.QueryKey{UserName: a.UserName, Key: credential.APIKey(a.APIKey)}
}

// applyQueryCredentials puts up's credentials on u when up sends them in
// the query (credential.QueryUpstream), and reports whether it did; other
// styles travel in headers.
func applyQueryCredentials(up credential.Upstream, u *url.URL) bool {
	q, ok := up.(credential.QueryUpstream)
	if ok {
		q.ApplyQuery(u)
	}
	return ok
}

// queryKeyError is an upstream call's error whose text (net/http names the
// URL, query included) has the account's key redacted; errors.Is and As
// see the error beneath.
type queryKeyError struct {
	err error
	r   redacter
}

func (e queryKeyError) Error() string { return e.r.Redact(e.err.Error()) }
func (e queryKeyError) Unwrap() error { return e.err }
