// Package proxy serves CloudAgent's API to internal apps: AHT answers from a
// shared cache under a strict upstream budget, generateToken answered
// locally, and every other path passed through with the account's upstream
// credentials injected.
package proxy

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caproxy/caproxy/accesslog"
	"github.com/caproxy/caproxy/cache"
	"github.com/caproxy/caproxy/cleanpath"
	"github.com/caproxy/caproxy/cloudagent"
	"github.com/caproxy/caproxy/credential"
	"github.com/caproxy/caproxy/limit"
	"github.com/caproxy/caproxy/route"
)

// MaxBodyBytes caps every request body the proxy reads.
const MaxBodyBytes = 64 << 10

// MaxHeaderBytes caps a request's header, for http.Server: CloudAgent's
// headers are an apiKey or a bearer token, far smaller.
const MaxHeaderBytes = 32 << 10

// MsgUnknownPath answers a path outside the route table when
// RefuseUnknownPaths is set.
const MsgUnknownPath = "path is not served by this proxy"

// Account is one configured CloudAgent account as the proxy sees it.
type Account struct {
	UserName string
	// APIKey is what clients must present to use the account, and what
	// signs the tokens caproxy issues for it. Never logged.
	APIKey string
	// Upstream attaches the account's upstream credentials.
	Upstream credential.Upstream

	keyOnce sync.Once
	key     credential.Key // APIKey's digest, made on first use
}

// keyMatches reports, in constant time, whether got is the account's key.
func (a *Account) keyMatches(got string) bool { return a.digest().Matches(got) }

// digest is the account's Key, made once.
func (a *Account) digest() credential.Key {
	a.keyOnce.Do(func() { a.key = credential.NewKey(a.APIKey) })
	return a.key
}

// LogValue keeps the key out of logs.
func (a *Account) LogValue() slog.Value { return slog.StringValue(a.UserName) }

// Settings are the parts of the configuration that may change while the
// proxy runs (see Proxy.SetSettings).
type Settings struct {
	Accounts map[string]*Account
	// ClientAuth requires clients to prove they may use an account.
	ClientAuth bool
	// MaxWait is how long a miss may wait for upstream budget.
	MaxWait time.Duration
	// ClientLimit, if not nil, limits requests per client (account + IP).
	ClientLimit *limit.ClientLimit
	// RefreshAhead feeds demand to Proxy.Refresher (required then) and
	// lets clients of stale keys get the stale answer at once while the
	// budget cannot keep every key fresh.
	RefreshAhead bool
	// Reserve is how many budget slots refreshes leave for client misses.
	Reserve int64
}

// Proxy is an http.Handler that fronts CloudAgent. Set its fields, call
// SetSettings (until then every request is refused: no account is known),
// then serve; fields must not change after the first request. Upstream,
// Cache and Budget are required; every other field's zero value works.
type Proxy struct {
	// Upstream is CloudAgent's base URL. Required.
	Upstream *url.URL
	// Transport makes upstream requests; nil means http.DefaultTransport.
	Transport http.RoundTripper
	// Timeout bounds one upstream fetch, retries included, and a whole
	// pass-through exchange; zero means no bound of caproxy's own.
	Timeout time.Duration
	// MaxAnswer caps an upstream answer read whole (cached routes, AHT);
	// a larger one is refused with 502, never cut. Zero means
	// DefaultMaxAnswer.
	MaxAnswer int64
	// Cache holds AHT's and cached routes' answers; its clock is the
	// proxy's. Required.
	Cache *cache.Cache
	// Shared, if not nil, is the cache level replicas share (Redis): asked
	// on a local miss before any budget is spent, and given every answer
	// the local cache stores.
	Shared cache.Shared
	// Budget guards upstream AHT calls per account (AHT's route budget).
	// Required: without it AHT would call CloudAgent unbounded.
	Budget *limit.Budget
	// Routes are the paths besides AHT and generateToken with a policy of
	// their own (see Route); nil: none, every other path passed through.
	Routes *RouteTable
	// RefuseUnknownPaths answers a path that is neither AHT, a token path
	// nor in Routes with 404, instead of passing it through with the
	// account's credentials (the default, so every CloudAgent path works).
	RefuseUnknownPaths bool
	// Issuer signs and checks the tokens handed out by generateToken; its
	// zero value works (see credential.Issuer).
	Issuer credential.Issuer
	// Logger receives operational events (never secrets); nil means slog.Default().
	Logger *slog.Logger
	// AccessLog, if not nil, gets one line per request (never secrets).
	AccessLog *accesslog.Log
	// Metrics, if not nil, is told what is served (observe.Metrics).
	Metrics Observer
	// Redis, if not nil, reports on the Redis replicas share state
	// through: metrics, a degraded /readyz, the budget in force.
	Redis *RedisStatus
	// AdminToken, if not empty, is the bearer token the admin listener
	// (observe.AdminHandler) asks for on everything but /healthz and /readyz.
	AdminToken string

	// Refresher, if not nil, schedules background refreshes (see
	// Settings.RefreshAhead and RunRefresh).
	Refresher *Refresher
	// RefreshLease, if not nil, is claimed before each refresh so one
	// replica refreshes a key.
	RefreshLease RefreshLease

	settings    atomic.Pointer[Settings]
	group       cache.Group // coalesces misses
	bypassGroup cache.Group // coalesces no-cache requests
	// downUntil (unix ns on the proxy's clock) is when misses may try
	// the upstream again after it could not be reached.
	downUntil atomic.Int64
	// bypassMu guards bypassAt: when each key last had a no-cache fetch.
	bypassMu sync.Mutex
	bypassAt map[string]time.Time

	initOnce sync.Once
	aht      Route // AHT, the table's first route (lookup)
	client   *http.Client
	rp       *httputil.ReverseProxy
	ahtURL   string
}

// SetSettings installs s for requests that start after it returns. Safe to
// call while serving: cache, budget and tokens are untouched.
func (p *Proxy) SetSettings(s *Settings) { p.settings.Store(s) }

// Settings returns the settings in force, nil before SetSettings.
func (p *Proxy) Settings() *Settings { return p.settings.Load() }

// noSettings serves requests before SetSettings: no account, so every
// request is refused as CloudAgent refuses unknown credentials.
var noSettings = &Settings{}

// current is the settings a request is served with.
func (p *Proxy) current() *Settings {
	if st := p.settings.Load(); st != nil {
		return st
	}
	return noSettings
}

func (p *Proxy) init() {
	p.initOnce.Do(func() {
		if p.Logger == nil {
			p.Logger = slog.Default()
		}
		rt := p.Transport
		if rt == nil {
			rt = http.DefaultTransport
		}
		// Redirects are returned to the caller rather than followed, so
		// credentials never travel to another host.
		p.client = &http.Client{Transport: rt, CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		}}
		p.ahtURL = p.Upstream.JoinPath(cloudagent.PathAHT).String()
		p.aht = route.AHT(p.Budget)
		p.rp = p.newReverseProxy(rt)
	})
}

// ServeHTTP routes a request by its canonical path: generateToken (at
// every path CloudAgent serves it) to the local issuer, AHT and every
// table route to serveRoute, anything else passed through (route.Other).
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.init()
	rec := recordPool.Get().(*record)
	*rec = record{}
	if p.AccessLog != nil {
		rec.start = time.Now()
	}
	rec.requestID = requestID(w, r)
	// One spelling per path, so no spelling reaches the upstream outside
	// its route's budget.
	if !cleanpath.Canonicalize(w, r) {
		rec.route, rec.outcome = routeOther, OutcomeInvalid
		p.finish(r, rec)
		recordPool.Put(rec)
		return
	}
	switch path := r.URL.Path; {
	case cloudagent.IsTokenPath(path):
		p.serveGenerateToken(w, r, rec)
	default:
		if rt := p.lookup(path); rt != nil {
			p.serveRoute(w, r, rec, rt)
		} else if p.RefuseUnknownPaths {
			rec.route, rec.outcome = routeOther, OutcomeInvalid
			cloudagent.WriteError(w, http.StatusNotFound, MsgUnknownPath)
		} else {
			p.serveRoute(w, r, rec, route.Other())
		}
	}
	p.finish(r, rec)
	recordPool.Put(rec)
}

// now is the clock shared with the cache so tests can drive both.
func (p *Proxy) now() time.Time { return p.Cache.Now() }

// authenticate decides whether r, on rt, may use the account named
// userName and returns it, or the message and HTTP status to refuse with.
// Every credential style clients use is read (credential.Present): the
// apiKey header, a caproxy-issued token as "Bearer <token>" or bare in
// Authorization, and, on a route whose upstream credentials travel in the
// query (AuthQuery, the legacy API), api_key and username there.
func (p *Proxy) authenticate(r *http.Request, rt *Route, st *Settings, userName string, now time.Time) (*Account, string, int) {
	acct := st.Accounts[userName]
	if !st.ClientAuth {
		if acct == nil {
			return nil, cloudagent.MsgInvalidCredentials, http.StatusUnauthorized
		}
		return acct, "", 0
	}
	var key credential.Key
	if acct != nil {
		key = acct.digest()
	}
	verify := func(tok string) (string, bool) { return p.Issuer.Verify(tok, st.keyFor, now) }
	if msg := presentedOn(r, rt).Check(userName, key, verify); msg != "" {
		return nil, msg, http.StatusUnauthorized
	}
	if acct == nil { // a token or key can only match a configured account
		return nil, cloudagent.MsgInvalidCredentials, http.StatusUnauthorized
	}
	return acct, "", 0
}

// keyFor looks up an account's key for token verification.
func (s *Settings) keyFor(userName string) (string, bool) {
	a := s.Accounts[userName]
	if a == nil {
		return "", false
	}
	return a.APIKey, true
}

// bearer returns the token r presents in Authorization, as "Bearer
// <token>" or bare (some clients send CloudAgent's token without
// "Bearer ").
func bearer(r *http.Request) (string, bool) {
	if len(r.Header[cloudagent.HeaderAuthorization]) == 0 {
		return "", false
	}
	pc := credential.Present(r, false)
	return pc.Token, pc.Token != ""
}

// allowClient applies the optional per-client inbound limit.
func (p *Proxy) allowClient(w http.ResponseWriter, r *http.Request, st *Settings, account string) bool {
	if st.ClientLimit == nil {
		return true
	}
	ok, err := st.ClientLimit.Allow(r.Context(), account+"|"+clientIP(r), w.Header())
	if err != nil {
		p.Logger.Warn("client limit unavailable", "err", err)
		return true
	}
	if !ok {
		cloudagent.WriteError(w, http.StatusTooManyRequests, cloudagent.MsgLimitExceeded)
	}
	return ok
}

func clientIP(r *http.Request) string {
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return host
	}
	return r.RemoteAddr
}

// upstreamContext bounds the upstream calls of one fetch by p.Timeout.
func (p *Proxy) upstreamContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if p.Timeout > 0 {
		return context.WithTimeout(ctx, p.Timeout)
	}
	return context.WithCancel(ctx)
}
