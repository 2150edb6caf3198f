package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/caproxy/caproxy/cache"
	"github.com/caproxy/caproxy/cloudagent"
	"github.com/caproxy/caproxy/credential"
	"github.com/caproxy/caproxy/limit"
	"github.com/caproxy/caproxy/route"
)

// answer is the outcome of one coalesced fetch, shared by all its waiters.
type answer struct {
	outcome        string
	entry          *cache.Entry // for miss and stale
	code           int          // HTTP status for errors
	msg            string       // CloudAgent message for errors
	budget         limit.State  // for limited
	upstreamStatus int
	retryAfter     int // seconds, for errors that say when to come back
}

// call is one upstream call a cached route's fetch makes (AHT included).
type call struct {
	rt     *Route
	acct   *Account
	key    string
	method string
	url    string
	body   []byte // what is sent, or nil for no body
}

// fetchSlack is what a fetch may take beyond MaxWait and the upstream
// timeout: shared-cache and budget calls (each bounded by redis.timeout).
const fetchSlack = 2 * time.Second

// fetchOptions make a fetch a no-cache one or a background refresh.
type fetchOptions struct {
	bypass bool
	// refresh: an entry fresher than FreshUntil-lead needs no call, and a
	// call is made only if more than reserve budget slots are free
	// (else the answer is outcomeRefreshSkipped).
	refresh bool
	reserve int64
	lead    time.Duration
}

// fetch is the one fetch of every cached route, AHT included: local cache,
// shared cache, credentials, budget, the call, its classification, then
// store, stale, a bounded wait or a refusal. Like groupcache's load, it is
// run once per key for every waiter (cache.Group).
func (p *Proxy) fetch(ctx context.Context, st *Settings, c *call, o fetchOptions) *answer {
	// The fetch serves every waiter, so no single client's leaving ends it;
	// but it has a bound of its own: every step (Redis, budget wait, token,
	// upstream) is bounded, and this caps them all together.
	ctx = context.WithoutCancel(ctx)
	if p.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, st.MaxWait+p.Timeout+fetchSlack)
		defer cancel()
	}
	// fresh: an entry that needs no call; for a refresh, one not yet due.
	fresh := func(e *cache.Entry) bool {
		if o.refresh {
			return p.now().Before(e.FreshUntil.Add(-o.lead))
		}
		return e.Fresh(p.now())
	}
	if !o.bypass {
		// A flight that just ended may have stored what this one came for.
		if e, ok := p.Cache.Get(c.key); ok && fresh(e) {
			return &answer{outcome: OutcomeMiss, entry: e}
		}
		// Another replica may have fetched it.
		if e := p.sharedGet(ctx, c.key); e != nil && fresh(e) {
			return &answer{outcome: OutcomeHit, entry: e}
		}
	}
	// While the upstream cannot be reached, do not knock: each try would
	// fail the same way.
	if p.upstreamDown() {
		return p.fallback(c.key, http.StatusBadGateway, "upstream unreachable")
	}
	creds, handle, taken, a := p.credentialsAndBudget(ctx, st, c.rt, c.acct, c.key, o)
	if a != nil {
		return a
	}
	return p.exchange(ctx, c, creds, handle, taken)
}

// credentialsAndBudget are the last steps before any upstream call, cached
// or passed through: rt's credentials for acct first (a call that cannot
// get them never goes out, so it must not spend a slot), then a slot of
// rt's budget, taken just before the call goes so a slow token generation
// does not hold it past the window margin. It returns the credentials,
// their handle and when the slot was taken, or what to answer instead
// (stale for key, "" for none). A refresh never waits and never takes the
// last o.reserve slots: it tries again later.
func (p *Proxy) credentialsAndBudget(ctx context.Context, st *Settings, rt *Route, acct *Account, key string, o fetchOptions) (creds http.Header, handle string, taken time.Time, a *answer) {
	creds = http.Header{}
	handle, err := upstreamFor(rt, acct).Apply(ctx, creds)
	if err != nil {
		return nil, "", taken, p.credentialsFailed(key, acct, err)
	}
	if o.refresh && rt.Budget() != nil {
		if ok, _, err := rt.Budget().TakeAbove(ctx, acct.UserName, o.reserve); err != nil || !ok {
			a := &answer{outcome: outcomeRefreshSkipped}
			if e, found := p.Cache.Get(key); found {
				a.entry = e
			}
			return nil, "", taken, a
		}
		return creds, handle, rt.Budget().Now(), nil
	}
	taken, a = p.takeBudget(ctx, st, rt.Budget(), acct, key)
	return creds, handle, taken, a
}

// takeBudget spends one of b's upstream calls for acct (b nil: the route
// has none), or returns what to answer instead: a stale answer for key
// ("" for none), after a bounded wait (max_wait) a refusal, and while the
// budget store cannot answer stale or 503 with Retry-After. With nil, the
// call may go, and taken is when its slot was taken (for Budget.Release),
// read after any wait.
func (p *Proxy) takeBudget(ctx context.Context, st *Settings, b *limit.Budget, acct *Account, key string) (taken time.Time, a *answer) {
	if b == nil {
		return p.now(), nil
	}
	staleFor := func() *answer {
		if key == "" {
			return nil
		}
		return p.stale(key)
	}
	ok, bst, err := b.Take(ctx, acct.UserName)
	if err != nil {
		if a := staleFor(); a != nil {
			return taken, a
		}
		msg := "upstream budget unavailable: shared budget store down"
		if !errors.Is(err, limit.ErrUnavailable) {
			// Under on_failure deny the circuit breaker logged the outage.
			p.Logger.Error("budget store unavailable", "account", acct.UserName, "err", err)
			msg = "upstream budget unavailable"
		}
		return taken, &answer{outcome: OutcomeUpstreamError, code: http.StatusServiceUnavailable, msg: msg, retryAfter: 1}
	}
	if !ok {
		if a := staleFor(); a != nil {
			return taken, a
		}
		if st.MaxWait > 0 {
			ok, bst, err = b.Wait(ctx, acct.UserName, st.MaxWait)
		}
		if err != nil || !ok {
			return taken, &answer{outcome: OutcomeLimited, budget: bst}
		}
	}
	return b.Now(), nil
}

// exchange makes the upstream call c, for which a slot was taken at taken,
// with credentials creds (handle names them), classifies the answer and
// stores it. A call caproxy shaped itself (AHT) is retried once after a
// token problem, with a fresh token and a slot of its own; a client-shaped
// one only makes the token suspect (see checkPassedResponse).
func (p *Proxy) exchange(ctx context.Context, c *call, creds http.Header, handle string, taken time.Time) *answer {
	// The upstream timeout starts now, not before a wait for budget.
	ctx, cancel := p.upstreamContext(ctx)
	defer cancel()
	b := c.rt.Budget()
	for attempt := 0; ; attempt++ {
		res, err := p.send(ctx, c, creds)
		if err != nil {
			if tl, ok := errors.AsType[*answerTooLargeError](err); ok {
				// It reached CloudAgent: the slot is spent.
				p.Logger.Warn("upstream answer too large", "route", c.rt.Name, "account", c.acct.UserName, "limit", tl.limit)
				return p.fallback(c.key, http.StatusBadGateway, tl.Error())
			}
			p.giveBack(ctx, b, c.acct.UserName, taken, err)
			code, msg := http.StatusBadGateway, "upstream unreachable"
			if errors.Is(err, context.DeadlineExceeded) {
				code, msg = http.StatusGatewayTimeout, "upstream timed out"
			}
			p.Logger.Warn("upstream call failed", "route", c.rt.Name, "account", c.acct.UserName, "err", err)
			return p.fallback(c.key, code, msg)
		}
		if p.Metrics != nil {
			p.Metrics.UpstreamCall(c.rt.Name, res.status, res.took)
		}
		kind, msg := classify(c.rt, res.status, res.contentType, res.body)
		switch kind {
		case upstreamLimit:
			// Someone else spends this account's calls: stop for a whole
			// window rather than call into the limit.
			return p.limitRefused(ctx, c.rt, c.acct, c.key, res.status)
		case upstreamTokenRefused:
			up := upstreamFor(c.rt, c.acct)
			if c.rt.Reads() != route.ReadAHT {
				// The client shaped this call, so a refusal is only a
				// suspicion against the token; the answer goes back as is.
				if s, ok := up.(suspecter); ok {
					s.Suspect(handle)
				}
				break
			}
			if attempt > 0 {
				return p.refused(c, msg, res.status)
			}
			up.Reject(handle)
			creds = http.Header{}
			if handle, err = up.Apply(ctx, creds); err != nil {
				return p.credentialsFailed(c.key, c.acct, err)
			}
			// The retry is an upstream call too, so it needs its own slot.
			if b != nil {
				ok, bst, err := b.Take(ctx, c.acct.UserName)
				if err != nil || !ok {
					if a := p.stale(c.key); a != nil {
						return a
					}
					return &answer{outcome: OutcomeLimited, budget: bst}
				}
				taken = b.Now()
			}
			continue
		case upstreamRefused:
			return p.refused(c, msg, res.status)
		case upstreamUnexpected:
			p.Logger.Warn("unexpected upstream answer", "route", c.rt.Name, "account", c.acct.UserName, "answer", msg)
			a := p.fallback(c.key, http.StatusBadGateway, msg)
			a.upstreamStatus = res.status
			return a
		}
		// CloudAgent took the token: a recovery after refused fresh
		// tokens is over.
		if a, ok := upstreamFor(c.rt, c.acct).(accepter); ok {
			a.Accept(handle)
		}
		return p.store(ctx, c, res, kind)
	}
}

// accepter is an Upstream told when CloudAgent took its credentials
// (credential.TokenSource.Accept).
type accepter interface{ Accept(handle string) }

// redacter is an Upstream that can hide its secrets (key, tokens) in any
// spelling from upstream text (credential.TokenSource.Redact).
type redacter interface{ Redact(s string) string }

// limitRefused handles CloudAgent refusing a call for its limit on rt: the
// route's budget is marked spent for a window; the answer is stale, else
// the route's limit error.
func (p *Proxy) limitRefused(ctx context.Context, rt *Route, acct *Account, key string, status int) *answer {
	p.Logger.Warn("upstream refused for its limit (max limit exceeded); budget marked spent for a window", "route", rt.Name, "account", acct.UserName)
	var bst limit.State
	if rt.Budget() != nil {
		if err := rt.Budget().Exhaust(ctx, acct.UserName); err != nil {
			p.Logger.Error("budget store unavailable", "account", acct.UserName, "err", err)
		}
		bst, _ = rt.Budget().State(ctx, acct.UserName)
	}
	if a := p.stale(key); a != nil {
		return a
	}
	return &answer{outcome: OutcomeLimited, budget: bst, upstreamStatus: status}
}

// refused answers CloudAgent refusing a call caproxy shaped ("userName or
// apiKey is Invalid", a token refused again after a new one): not an
// answer to the question, so never cached, never a 200. Always 502,
// whatever status CloudAgent gave it: the client's own credentials were
// accepted, and a 401 would say they were not.
func (p *Proxy) refused(c *call, msg string, status int) *answer {
	// CloudAgent may echo the key or token, in any case or escaped.
	if r, ok := upstreamFor(c.rt, c.acct).(redacter); ok {
		msg = r.Redact(msg)
	}
	p.Logger.Warn("upstream refused the call", "route", c.rt.Name, "account", c.acct.UserName, "message", msg, "status", status)
	a := p.fallback(c.key, http.StatusBadGateway, msg)
	a.upstreamStatus = status
	return a
}

// upstreamKind is what an upstream answer is, for every route (classify).
type upstreamKind uint8

const (
	// upstreamSuccess is HTTP 200 with "status":"success": served, cached.
	upstreamSuccess upstreamKind = iota
	// upstreamNegative is a lasting "no such agent or campaign" on AHT:
	// served, cached for the negative TTL.
	upstreamNegative
	// upstreamAnswer is any other CloudAgent answer (an error about the
	// client's request, say): served as it came, never cached.
	upstreamAnswer
	// upstreamLimit is CloudAgent's limit refusal: HTTP 429 with any
	// body, or "max limit exceeded" with any status. The budget is spent.
	upstreamLimit
	// upstreamTokenRefused is "Token Expired" or "Invalid Token".
	upstreamTokenRefused
	// upstreamRefused is CloudAgent refusing a call caproxy shaped
	// (AHT): any error but a negative answer. A 502.
	upstreamRefused
	// upstreamUnexpected is what CloudAgent does not answer: a redirect,
	// a server error, a body that is not JSON, a JSON body that is not
	// CloudAgent's with a status other than 200. A 502 naming it, never
	// passed through raw, never cached.
	upstreamUnexpected
)

// classify is caproxy's one reading of an upstream answer, for every route
// (rt) and for passed-through answers: its kind, and a message (CloudAgent's
// for errors, what came back for upstreamUnexpected).
func classify(rt *Route, status int, contentType string, body []byte) (upstreamKind, string) {
	switch {
	case status == http.StatusTooManyRequests:
		return upstreamLimit, cloudagent.MsgLimitExceeded
	case status >= 300 && status < 400:
		return upstreamUnexpected, "upstream answered HTTP " + strconv.Itoa(status) + " (redirect)"
	case status >= 500:
		return upstreamUnexpected, "upstream answered HTTP " + strconv.Itoa(status)
	}
	msg, isErr := cloudagent.ErrorMessage(body)
	switch {
	case isErr && cloudagent.IsLimitExceeded(msg):
		return upstreamLimit, msg
	case isErr && cloudagent.IsTokenProblem(msg):
		return upstreamTokenRefused, msg
	case isErr && rt.Reads() == route.ReadAHT && (msg == cloudagent.MsgInvalidAgent || msg == cloudagent.MsgInvalidCampaign):
		return upstreamNegative, msg
	case isErr && rt.Reads() == route.ReadAHT:
		return upstreamRefused, msg
	case isErr:
		return upstreamAnswer, msg
	}
	if !json.Valid(body) {
		what := "upstream answered a non-JSON body (HTTP " + strconv.Itoa(status)
		if contentType != "" {
			what += ", " + contentType
		}
		return upstreamUnexpected, what + ")"
	}
	switch {
	case status == http.StatusOK && cloudagent.IsSuccess(body):
		return upstreamSuccess, ""
	case status == http.StatusOK:
		return upstreamAnswer, ""
	}
	return upstreamUnexpected, "upstream answered HTTP " + strconv.Itoa(status)
}

// store keeps what c's answer may leave in the caches (AHT by the cache's
// rules and TTLs, a route's success for the route's) and returns it.
func (p *Proxy) store(ctx context.Context, c *call, res *upstreamResult, kind upstreamKind) *answer {
	var e *cache.Entry
	stored := false
	if c.rt.Reads() == route.ReadAHT {
		e, stored = p.Cache.Store(c.key, res.body, res.status, res.contentType)
	} else {
		now := p.now()
		e = &cache.Entry{Body: res.body, Status: res.status, ContentType: res.contentType, Fetched: now, FreshUntil: now, StaleUntil: now}
		if kind == upstreamSuccess {
			e.FreshUntil = now.Add(c.rt.CacheTTL)
			e.StaleUntil = e.FreshUntil.Add(c.rt.StaleTTL)
			stored = p.Cache.Put(c.key, e)
		}
	}
	if stored && p.Shared != nil {
		if err := p.Shared.Set(ctx, c.key, e); err != nil && !p.Degraded() {
			p.Logger.Warn("shared cache unavailable", "err", err)
		}
	}
	return &answer{outcome: OutcomeMiss, entry: e, upstreamStatus: res.status}
}

type upstreamResult struct {
	status      int
	contentType string
	body        []byte
	took        time.Duration
}

// send makes the upstream call c with the credentials in creds.
func (p *Proxy) send(ctx context.Context, c *call, creds http.Header) (*upstreamResult, error) {
	var body io.Reader = http.NoBody
	if c.body != nil {
		body = bytes.NewReader(c.body)
	}
	out, err := http.NewRequestWithContext(ctx, c.method, c.url, body)
	if err != nil {
		return nil, err
	}
	if c.body != nil {
		out.Header.Set("Content-Type", "application/json")
	}
	for k, v := range creds {
		out.Header[k] = v
	}
	if !applyQueryCredentials(upstreamFor(c.rt, c.acct), out.URL) {
		return p.do(out)
	}
	// The URL now holds the account's key, and a transport error names it.
	res, err := p.do(out)
	if err != nil {
		err = queryKeyError{err, upstreamFor(c.rt, c.acct).(redacter)}
	}
	return res, err
}

// DefaultMaxAnswer is the default Proxy.MaxAnswer: room for a busy day of
// CDRs.
const DefaultMaxAnswer = 64 << 20

// answerTooLargeError is an upstream answer over Proxy.MaxAnswer: it is
// refused whole rather than cut into invalid JSON.
type answerTooLargeError struct{ limit int64 }

func (e *answerTooLargeError) Error() string {
	return "upstream answer larger than " + strconv.FormatInt(e.limit, 10) + " bytes"
}

// do sends out and reads its answer whole, up to MaxAnswer.
func (p *Proxy) do(out *http.Request) (*upstreamResult, error) {
	start := time.Now()
	resp, err := p.client.Do(out)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	limit := p.MaxAnswer
	if limit <= 0 {
		limit = DefaultMaxAnswer
	}
	if resp.ContentLength > limit {
		return nil, &answerTooLargeError{limit}
	}
	var b []byte
	if n := resp.ContentLength; n >= 0 {
		// Declared within the limit: read into one buffer of that size
		// (net/http stops the body there), never copied while growing.
		b = make([]byte, n)
		_, err = io.ReadFull(resp.Body, b)
	} else {
		b, err = io.ReadAll(io.LimitReader(resp.Body, limit+1))
	}
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, &answerTooLargeError{limit}
	}
	return &upstreamResult{status: resp.StatusCode, contentType: resp.Header.Get("Content-Type"), body: b, took: time.Since(start)}, nil
}

// sharedGet looks key up in the shared level and keeps what it finds in the
// local cache (a stale entry too: it is the fallback when the upstream
// fails). A shared level that cannot answer counts as a miss.
func (p *Proxy) sharedGet(ctx context.Context, key string) *cache.Entry {
	if p.Shared == nil {
		return nil
	}
	e, ok, err := p.Shared.Get(ctx, key)
	if err != nil && !p.Degraded() {
		// While Redis is down the outage was logged once; not per request.
		p.Logger.Warn("shared cache unavailable", "err", err)
	}
	if p.Metrics != nil {
		p.Metrics.SharedLookup(ok, err)
	}
	if !ok {
		return nil
	}
	p.Cache.Put(key, e)
	return e
}

// stale returns a stale-answer for key if the cache still holds one.
func (p *Proxy) stale(key string) *answer {
	if e, ok := p.Cache.Get(key); ok {
		return &answer{outcome: OutcomeStale, entry: e}
	}
	return nil
}

// fallback serves a stale entry if there is one, else the given error.
func (p *Proxy) fallback(key string, code int, msg string) *answer {
	if a := p.stale(key); a != nil {
		return a
	}
	return &answer{outcome: OutcomeUpstreamError, code: code, msg: msg}
}

// upstreamDownBackoff is how long misses leave the upstream alone after it
// refused a connection (they serve stale answers or 502 meanwhile).
const upstreamDownBackoff = time.Second

// upstreamDown reports whether the upstream refused a connection less than
// upstreamDownBackoff ago: each try would fail the same way.
func (p *Proxy) upstreamDown() bool { return p.now().UnixNano() < p.downUntil.Load() }

// giveBack handles a call that failed with err after it took a slot of b
// (nil: the route has no budget) for account at taken. A call that never
// reached CloudAgent gives its slot back; unless it was caproxy's own
// timeout, the upstream is then left alone for upstreamDownBackoff.
func (p *Proxy) giveBack(ctx context.Context, b *limit.Budget, account string, taken time.Time, err error) {
	if !neverSent(err) {
		return
	}
	if b != nil {
		if err := b.Release(ctx, account, taken); err != nil {
			p.Logger.Warn("could not give back an unspent budget slot", "account", account, "err", err)
		}
	}
	if !isTimeout(err) {
		// Refused, unreachable: not our own slowness.
		p.downUntil.Store(p.now().Add(upstreamDownBackoff).UnixNano())
	}
}

// neverSent reports whether err means the request never reached the
// upstream: the connection could not be made.
func neverSent(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "dial"
}

// isTimeout reports whether err is a timeout (which a loaded caproxy can
// cause itself), as opposed to the upstream refusing.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// credentialsFailed answers a fetch whose upstream credentials could not be
// had (no call went out): stale if possible, else an error that says why.
func (p *Proxy) credentialsFailed(key string, acct *Account, err error) *answer {
	switch ue, refused := errors.AsType[*credential.UpstreamError](err); {
	case errors.Is(err, credential.ErrStoreUnavailable):
		// Redis is down and this replica holds no usable token: like a
		// miss under on_failure deny, come back when Redis is (the circuit
		// breaker logged the outage).
		if a := p.stale(key); a != nil {
			return a
		}
		return &answer{outcome: OutcomeUpstreamError, code: http.StatusServiceUnavailable,
			msg: "upstream token unavailable: shared token store down", retryAfter: 1}
	case errors.Is(err, credential.ErrRecovering):
		// CloudAgent refused a fresh token and generation pauses
		// (credential logged the pause): stale, else 503 until it ends.
		if a := p.stale(key); a != nil {
			return a
		}
		re, _ := errors.AsType[*credential.RecoveringError](err)
		retry := 1
		if re != nil {
			retry = re.RetryAfter(p.now())
		}
		return &answer{outcome: OutcomeUpstreamError, code: http.StatusServiceUnavailable,
			msg: "upstream token unavailable: CloudAgent refused a fresh token; retrying later", retryAfter: retry}
	case errors.Is(err, credential.ErrGenerationLimit):
		p.Logger.Warn("no upstream token: hourly generation limit reached", "account", acct.UserName)
		return p.fallback(key, http.StatusServiceUnavailable, "upstream token unavailable: token generation limit reached")
	case refused:
		// err carries CloudAgent's message with the key redacted.
		p.Logger.Warn("no upstream token: generation refused", "account", acct.UserName, "err", err)
		return p.fallback(key, http.StatusBadGateway, "upstream token generation refused: "+ue.Message)
	case errors.Is(err, context.DeadlineExceeded):
		p.Logger.Warn("no upstream token: generation timed out", "account", acct.UserName, "err", err)
		return p.fallback(key, http.StatusGatewayTimeout, "upstream timed out")
	default:
		p.Logger.Warn("no upstream token", "account", acct.UserName, "err", err)
		return p.fallback(key, http.StatusBadGateway, "upstream token unavailable")
	}
}
