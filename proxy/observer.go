package proxy

import (
	"context"
	"time"

	"github.com/caproxy/caproxy/limit"
)

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

// Readiness reports whether the proxy is ready to serve, as /readyz and
// caproxy_ready say it: settings installed, every account's credentials
// usable or not yet needed, and Redis, when configured, usable (a down
// Redis is degraded, still ready; a Redis user missing a permission is
// not). why says what is wrong when it is not.
func (p *Proxy) Readiness() (ready bool, why string) {
	if !p.Ready() {
		return false, "not ready"
	}
	if p.Redis != nil && p.Redis.Unusable != nil && p.Redis.Unusable() != nil {
		// A misconfigured Redis user, not an outage: the log says which.
		return false, "not ready: redis unusable (a permission is missing; see the log)"
	}
	return true, ""
}

// NamedBudget is one upstream budget and the route it guards.
type NamedBudget struct {
	// Route is RouteAHT for AHT's budget, else a table route's name.
	Route  string
	Budget *limit.Budget
}

// Budgets returns AHT's budget and those of the table routes that have
// one, for metrics and the admin page; each is counted per account.
func (p *Proxy) Budgets() []NamedBudget {
	out := []NamedBudget{{Route: RouteAHT, Budget: p.Budget}}
	if p.Routes == nil {
		return out
	}
	for _, rt := range p.Routes.Routes() {
		if rt.Budget() != nil {
			out = append(out, NamedBudget{Route: rt.Name, Budget: rt.Budget()})
		}
	}
	return out
}

// TokenReporter is implemented by upstream credentials that hold a
// generated token (credential.TokenSource), for metrics and the page.
type TokenReporter interface {
	// TokenAge is how long ago the token in use was generated; ok is
	// false while none is held.
	TokenAge() (age time.Duration, ok bool)
	// GenerationsThisHour is what the generation guard counts in its
	// rolling hour, and what it allows.
	GenerationsThisHour(ctx context.Context) (used, allowed int64, err error)
}

// RefreshTracked is how many keys the refresh-ahead scheduler tracks; ok
// is false when there is no scheduler.
func (p *Proxy) RefreshTracked() (keys int, ok bool) {
	if p.Refresher == nil {
		return 0, false
	}
	return p.Refresher.Len(), true
}

// RefreshScarce reports whether account's budget cannot keep every key
// it asks for fresh: at the scheduler's last pass missing or stale keys
// waited for budget (clients of stale keys get the stale answer at once).
func (p *Proxy) RefreshScarce(account string) bool {
	return p.Refresher != nil && p.Refresher.Scarce(account)
}
