package proxy

import "time"

// Observer is told what the proxy serves, for metrics (observe.Metrics is
// one). Its methods are called on the request's path, so they must be
// cheap and never block.
type Observer interface {
	// Request: a request answered on route (a Route's Name) with outcome.
	Request(route, outcome string)
	// UpstreamCall: a call on route answered with status after took; a
	// negative took is a streamed pass-through, not timed.
	UpstreamCall(route string, status int, took time.Duration)
	// SharedLookup: a lookup in the shared cache level.
	SharedLookup(hit bool, err error)
	// Coalesced: a miss that shared another request's upstream call.
	Coalesced()
	// ServedAge: the Age of an AHT answer served.
	ServedAge(seconds int)
	// Refreshed: a background refresh that called the upstream, by reason.
	Refreshed(reason string)
}

// Outcomes are every outcome a request may have, for metrics that create
// their series up front.
var Outcomes = []string{OutcomeHit, OutcomeMiss, OutcomeStale, OutcomeBypass, OutcomeInvalid,
	OutcomeUnauthorized, OutcomeLimited, OutcomeUpstreamError, OutcomeClientGone}

// Waiters is how many requests now wait on another request's upstream call.
func (p *Proxy) Waiters() int64 { return p.group.Waiters() + p.bypassGroup.Waiters() }

// Readier is implemented by upstream credentials that may not be usable yet
// (a token that cannot be generated).
type Readier interface{ Ready() bool }

// Ready reports whether settings are installed and every account's
// credentials are usable or not yet needed.
func (p *Proxy) Ready() bool {
	st := p.settings.Load()
	if st == nil {
		return false
	}
	for _, a := range st.Accounts {
		if r, ok := a.Upstream.(Readier); ok && !r.Ready() {
			return false
		}
	}
	return true
}
