package proxy

import (
	"github.com/caproxy/caproxy/credential"
	"github.com/caproxy/caproxy/limit"
	"github.com/caproxy/caproxy/route"
)

// The route API under proxy's names, so callers that configure a Proxy
// need one import.
type (
	// Route is one path's policy: route.Route.
	Route = route.Route
	// RouteTable finds a path's Route: route.Table.
	RouteTable = route.Table
)

// Upstream auth styles of a Route (see route.AuthAPIKey).
const (
	AuthAPIKey  = route.AuthAPIKey
	AuthToken   = route.AuthToken
	AuthAccount = route.AuthAccount
	AuthQuery   = route.AuthQuery
)

// DefaultRoutes are route.Defaults.
func DefaultRoutes() []Route { return route.Defaults() }

// NewRouteTable is route.NewTable.
func NewRouteTable(routes []Route, store limit.Store, opts ...limit.Option) (*RouteTable, error) {
	return route.NewTable(routes, store, opts...)
}

// upstreamFor returns the credentials rt sends for acct.
func upstreamFor(rt *Route, acct *Account) credential.Upstream {
	switch {
	case rt == nil:
	case rt.Auth == AuthAPIKey:
		return acct.apiKeyUpstream()
	case rt.Auth == AuthQuery:
		return acct.queryUpstream()
	}
	return acct.Upstream
}
