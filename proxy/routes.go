package proxy

import (
	"github.com/caproxy/caproxy/credential"
	"github.com/caproxy/caproxy/route"
)

// Route types under proxy's names: the pipeline works on them throughout.
type (
	// Route is one path's policy: route.Route.
	Route = route.Route
	// RouteTable finds a path's Route: route.Table.
	RouteTable = route.Table
)

// upstreamFor returns the credentials rt sends for acct.
func upstreamFor(rt *Route, acct *Account) credential.Upstream {
	switch {
	case rt == nil:
	case rt.Auth == route.AuthAPIKey:
		return acct.apiKeyUpstream()
	case rt.Auth == route.AuthQuery:
		return acct.queryUpstream()
	}
	return acct.Upstream
}

// apiKeyUpstream is the account's apiKey as upstream credentials, for
// routes whose API takes only the apiKey header (AuthAPIKey). An account's
// APIKey is its CloudAgent apiKey in both modes.
func (a *Account) apiKeyUpstream() credential.Upstream { return credential.APIKey(a.APIKey) }
