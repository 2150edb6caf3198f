package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caproxy/caproxy/cache"
	"github.com/caproxy/caproxy/cloudagent"
	"github.com/caproxy/caproxy/credential"
	"github.com/caproxy/caproxy/limit"
)

// Cache outcomes, used for X-Cache, metrics and logs.
const (
	OutcomeHit           = "hit"
	OutcomeMiss          = "miss"
	OutcomeStale         = "stale"
	OutcomeBypass        = "bypass"
	OutcomeInvalid       = "invalid"
	OutcomeUnauthorized  = "unauthorized"
	OutcomeLimited       = "limited"
	OutcomeUpstreamError = "upstream_error"
	// OutcomeClientGone is a client that left while waiting for an
	// upstream answer; the fetch went on for the others.
	OutcomeClientGone = "client_gone"
)

// Header values shared by every response; net/http only reads them.
var (
	xCacheHit    = []string{"HIT"}
	xCacheMiss   = []string{"MISS"}
	xCacheStale  = []string{"STALE"}
	xCacheBypass = []string{"BYPASS"}

	jsonContentType = []string{"application/json"}
)

var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// readBody reads at most MaxBodyBytes of r's body into a pooled buffer the
// caller must return with bufPool.Put.
func readBody(w http.ResponseWriter, r *http.Request) (*bytes.Buffer, error) {
	if r.ContentLength > MaxBodyBytes {
		return nil, &http.MaxBytesError{Limit: MaxBodyBytes}
	}
	buf := bufPool.Get().(*bytes.Buffer)
	buf.Reset()
	var err error
	if n := int(r.ContentLength); n >= 0 {
		// The length is known and allowed: read exactly that, with no
		// limiting reader to allocate (net/http stops the body at n).
		buf.Grow(n)
		b := buf.AvailableBuffer()[:n]
		if _, err = io.ReadFull(r.Body, b); err == nil {
			buf.Write(b)
		}
	} else {
		_, err = buf.ReadFrom(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	}
	if err != nil {
		bufPool.Put(buf)
		return nil, err
	}
	return buf, nil
}

// errorWriter writes a CloudAgent-shaped error: cloudagent.WriteError, or
// cloudagent.WriteTokenError on the token API.
type errorWriter func(w http.ResponseWriter, code int, msg string)

// writeBodyError answers a body that could not be read.
func writeBodyError(w http.ResponseWriter, err error, writeErr errorWriter) {
	if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
		writeErr(w, http.StatusRequestEntityTooLarge,
			"request body is larger than "+strconv.Itoa(MaxBodyBytes)+" bytes")
		return
	}
	writeErr(w, http.StatusBadRequest, "request body could not be read")
}

// readPost reads the body of a request that must be a POST, or answers
// why not with writeErr and returns false. The buffer goes back to bufPool.
func readPost(w http.ResponseWriter, r *http.Request, rec *record, writeErr errorWriter) (*bytes.Buffer, bool) {
	if r.Method != http.MethodPost {
		rec.outcome = OutcomeInvalid
		w.Header().Set("Allow", http.MethodPost)
		writeErr(w, http.StatusMethodNotAllowed, "method "+r.Method+" not allowed; use POST")
		return nil, false
	}
	buf, err := readBody(w, r)
	if err != nil {
		rec.outcome = OutcomeInvalid
		writeBodyError(w, err, writeErr)
		return nil, false
	}
	return buf, true
}

func (p *Proxy) serveAHT(w http.ResponseWriter, r *http.Request, rec *record) {
	rec.route = routeAHT
	buf, ok := readPost(w, r, rec, cloudagent.WriteError)
	if !ok {
		return
	}
	req, err := cache.ParseRequest(buf.Bytes())
	bufPool.Put(buf)
	if err != nil {
		rec.outcome = OutcomeInvalid
		cloudagent.WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	// CloudAgent's order: userName, then credentials, then the shape.
	if req.UserName == "" {
		rec.outcome = OutcomeInvalid
		cloudagent.WriteError(w, http.StatusBadRequest, cloudagent.MsgUserNameEmpty)
		return
	}
	st := p.settings.Load()
	now := p.now()
	acct, msg, code := p.authenticate(r, nil, st, req.UserName, now)
	if acct == nil {
		rec.outcome = OutcomeUnauthorized
		cloudagent.WriteError(w, code, msg)
		return
	}
	rec.account = acct.UserName
	if msg := req.Validate(); msg != "" {
		rec.outcome = OutcomeInvalid
		cloudagent.WriteError(w, http.StatusBadRequest, msg)
		return
	}
	if !p.allowClient(w, r, st, acct.UserName) {
		rec.outcome = OutcomeLimited
		return
	}

	key := cache.RequestKey(acct.UserName, req)
	// A no-cache request fetches anew at most once per key per ttl;
	// otherwise it is an ordinary request (served from the cache or
	// coalesced), so no client can drain the budget with it.
	bypass := noCache(r) && p.allowBypass(key, now)
	if !bypass {
		e, ok := p.Cache.Get(key)
		if ok && e.Fresh(now) {
			if st.RefreshAhead {
				p.noteDemand(st, acct.UserName, key, req, e, now)
			}
			rec.outcome = OutcomeHit
			p.observeAge(writeEntry(w, e, xCacheHit, now))
			return
		}
		if st.RefreshAhead && p.noteDemand(st, acct.UserName, key, req, e, now) {
			// The budget cannot keep every key fresh: the refresher
			// spends it oldest popular first; this client gets the
			// last answer now, with its true Age.
			rec.outcome = OutcomeStale
			p.observeAge(writeEntry(w, e, xCacheStale, now))
			return
		}
	}

	// A no-cache request must not be answered by a flight that may settle
	// for a cached entry, so those coalesce only among themselves.
	group := &p.group
	if bypass {
		group = &p.bypassGroup
	}
	// The fetch gets its own copy of req: captured by the escaping
	// closure, it is allocated here, on a miss, not on every hit.
	fetchReq := req
	fn := func(ctx context.Context) (any, error) {
		return p.fetch(ctx, st, acct, key, fetchReq, bypass), nil
	}
	v, shared, err := group.Do(r.Context(), key, fn)
	if err == nil && v.(*answer).outcome == outcomeRefreshSkipped {
		// Joined a refresh that found no slot above the reserve: a
		// client may use the reserve, so fetch as a client.
		v, shared, err = group.Do(r.Context(), key, fn)
	}
	if pe, ok := errors.AsType[*cache.PanicError](err); ok {
		// A bug, not the client: say so in the log (the stack names code,
		// never values) and answer every waiter, stale if we can.
		p.Logger.Error("AHT fetch panicked", "account", acct.UserName, "panic", fmt.Sprint(pe.Value), "stack", string(pe.Stack))
		v, err = p.fallback(key, http.StatusBadGateway, "internal error"), nil
	}
	if err != nil {
		// Only the client's own context ends a wait early: it has gone.
		rec.outcome = OutcomeClientGone
		return
	}
	if shared && p.Metrics != nil {
		p.Metrics.coalesced.Inc()
	}
	p.writeFetched(w, rec, v.(*answer), bypass, true, cloudagent.WriteError, cloudagent.MsgLimitExceeded)
}

// writeAnswerError writes a failed fetch's error with writeErr (the
// route's shape), with Retry-After when the answer says when to come back.
func writeAnswerError(w http.ResponseWriter, a *answer, writeErr errorWriter) {
	if a.retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(a.retryAfter))
	}
	writeErr(w, a.code, a.msg)
}

// writeFetched writes a coalesced fetch's answer a on a cached path (AHT
// or a cached route) and records its outcome: the entry with its X-Cache
// (HIT from the shared level, MISS, BYPASS for a no-cache request's miss,
// STALE), or, saying MISS, a 429 for budget with limitMsg or the error,
// both in writeErr's shape. observe sends the Age served to the
// served-age histogram (AHT's).
func (p *Proxy) writeFetched(w http.ResponseWriter, rec *record, a *answer, bypass, observe bool, writeErr errorWriter, limitMsg string) {
	rec.outcome, rec.upstreamStatus = a.outcome, a.upstreamStatus
	var xcache []string
	switch a.outcome {
	case OutcomeHit:
		xcache = xCacheHit
	case OutcomeMiss:
		xcache = xCacheMiss
		if bypass {
			rec.outcome, xcache = OutcomeBypass, xCacheBypass
		}
	case OutcomeStale:
		xcache = xCacheStale
	case OutcomeLimited:
		w.Header()["X-Cache"] = xCacheMiss
		writeLimitedAs(w, a.budget, p.now(), writeErr, limitMsg)
	default:
		w.Header()["X-Cache"] = xCacheMiss
		writeAnswerError(w, a, writeErr)
	}
	if xcache != nil {
		if age := writeEntry(w, a.entry, xcache, p.now()); observe {
			p.observeAge(age)
		}
	}
	checkDelivered(w, rec)
}

// checkDelivered records client_gone when the answer could not be sent: a
// fetch may have taken long, and only an answer the client got is logged.
func checkDelivered(w http.ResponseWriter, rec *record) {
	if err := http.NewResponseController(w).Flush(); err != nil {
		rec.outcome = OutcomeClientGone
	}
}

// maxBypassKeys bounds bypassAt; past it, entries older than ttl are swept.
const maxBypassKeys = 10000

// allowBypass reports whether a no-cache request for key may fetch anew:
// no other did in the last ttl. It records the fetch when it allows one.
func (p *Proxy) allowBypass(key string, now time.Time) bool {
	ttl := p.Cache.TTL()
	p.bypassMu.Lock()
	defer p.bypassMu.Unlock()
	if last, ok := p.bypassAt[key]; ok && now.Sub(last) < ttl {
		return false
	}
	if p.bypassAt == nil {
		p.bypassAt = map[string]time.Time{}
	}
	if len(p.bypassAt) >= maxBypassKeys {
		for k, at := range p.bypassAt {
			if now.Sub(at) >= ttl {
				delete(p.bypassAt, k)
			}
		}
		if len(p.bypassAt) >= maxBypassKeys {
			return false // every tracked key bypassed within ttl: refuse, do not grow
		}
	}
	p.bypassAt[key] = now
	return true
}

// noCache reports whether the client asked to skip fresh entries.
func noCache(r *http.Request) bool {
	// Canonical names, read from the map without Get's canonicalizing.
	for _, v := range r.Header["Cache-Control"] {
		if strings.Contains(v, "no-cache") {
			return true
		}
	}
	p := r.Header["Pragma"]
	return len(p) > 0 && p[0] == "no-cache"
}

// writeEntry writes a stored answer as is and returns the Age it served.
func writeEntry(w http.ResponseWriter, e *cache.Entry, xcache []string, now time.Time) int {
	h := w.Header()
	h["X-Cache"] = xcache
	age := e.Age(now)
	h["Age"] = ageValue(age)
	if ct := e.ContentType; ct == "" || ct == jsonContentType[0] {
		h["Content-Type"] = jsonContentType
	} else {
		h["Content-Type"] = []string{ct}
	}
	// net/http sets Content-Length itself, without allocating, for a body
	// that fits its 2 KiB response buffer; larger ones would be chunked.
	if len(e.Body) > 2048 {
		h["Content-Length"] = []string{strconv.Itoa(len(e.Body))}
	}
	w.WriteHeader(e.Status)
	w.Write(e.Body)
	return age
}

// observeAge records the Age of an answer served.
func (p *Proxy) observeAge(age int) {
	if p.Metrics != nil {
		p.Metrics.servedAge.Observe(float64(age))
	}
}

// ageValues are the Age header values of the first hour, built once:
// net/http only reads them (it copies the header at WriteHeader).
var ageValues = func() (v [3600][]string) {
	for i := range v {
		v[i] = []string{strconv.Itoa(i)}
	}
	return v
}()

// ageValue is the Age header value for secs.
func ageValue(secs int) []string {
	if secs >= 0 && secs < len(ageValues) {
		return ageValues[secs]
	}
	return []string{strconv.Itoa(secs)}
}

// writeLimitedAs answers a refusal for budget with 429, Retry-After and
// RateLimit-* headers, and msg written by writeErr (the route's shape).
func writeLimitedAs(w http.ResponseWriter, st limit.State, now time.Time, writeErr errorWriter, msg string) {
	secs := 1
	if !st.NextFree.IsZero() {
		if d := st.NextFree.Sub(now); d > 0 {
			secs = int((d + time.Second - 1) / time.Second)
		}
	}
	h := w.Header()
	h.Set("Retry-After", strconv.Itoa(secs))
	h.Set("RateLimit-Limit", strconv.FormatInt(st.Limit, 10))
	h.Set("RateLimit-Remaining", strconv.FormatInt(st.Remaining, 10))
	h.Set("RateLimit-Reset", strconv.Itoa(secs))
	writeErr(w, http.StatusTooManyRequests, msg)
}

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

// fetchSlack is what a fetch may take beyond MaxWait and the upstream
// timeout: shared-cache and budget calls (each bounded by redis.timeout).
const fetchSlack = 2 * time.Second

// fetchOptions make a fetch a background refresh.
type fetchOptions struct {
	bypass bool
	// refresh: an entry fresher than FreshUntil-lead needs no call, and a
	// call is made only if more than reserve budget slots are free
	// (else the answer is outcomeRefreshSkipped).
	refresh bool
	reserve int64
	lead    time.Duration
}

// fetch gets a fresh answer for key from the upstream, spending budget, or
// falls back to a stale entry, a wait for budget, or a refusal.
func (p *Proxy) fetch(ctx context.Context, st *Settings, acct *Account, key string, req cloudagent.AHTRequest, bypass bool) *answer {
	return p.fetchOpts(ctx, st, acct, key, req, fetchOptions{bypass: bypass})
}

// fetchOpts is fetch, for a client or a refresh.
func (p *Proxy) fetchOpts(ctx context.Context, st *Settings, acct *Account, key string, req cloudagent.AHTRequest, o fetchOptions) *answer {
	bypass := o.bypass
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
	if !bypass {
		// A flight that just ended may have stored what this one came for.
		if e, ok := p.Cache.Get(key); ok && fresh(e) {
			return &answer{outcome: OutcomeMiss, entry: e}
		}
		// Another replica may have fetched it.
		if e := p.sharedGet(ctx, key); e != nil && fresh(e) {
			return &answer{outcome: OutcomeHit, entry: e}
		}
	}

	// While the upstream cannot be reached, do not knock: each try would
	// fail the same way.
	if p.upstreamDown() {
		return p.fallback(key, http.StatusBadGateway, "upstream unreachable")
	}
	// Credentials first: a call that cannot get a token never goes out, so
	// it must not spend a slot; and the slot is taken just before the call
	// goes, so a slow generation does not hold it past the window margin.
	creds := http.Header{}
	handle, err := acct.Upstream.Apply(ctx, creds)
	if err != nil {
		return p.credentialsFailed(key, acct, err)
	}
	if o.refresh {
		// A refresh never waits and never takes the reserve: it tries
		// again later, and a client that joined it fetches on its own.
		if ok, _, err := p.Budget.TakeAbove(ctx, acct.UserName, o.reserve); err != nil || !ok {
			a := &answer{outcome: outcomeRefreshSkipped}
			if e, found := p.Cache.Get(key); found {
				a.entry = e
			}
			return a
		}
		return p.call(ctx, acct, key, req, creds, handle, p.Budget.Now())
	}
	taken, a := p.takeBudget(ctx, st, p.Budget, acct, key)
	if a != nil {
		return a
	}
	return p.call(ctx, acct, key, req, creds, handle, taken)
}

// call makes the upstream call a fetch holds a budget slot for (taken at
// taken), with credentials creds (handle names them), retrying once on a
// token problem, and stores the answer.
func (p *Proxy) call(ctx context.Context, acct *Account, key string, req cloudagent.AHTRequest, creds http.Header, handle string, taken time.Time) *answer {
	// The upstream timeout starts now, not before a wait for budget.
	ctx, cancel := p.upstreamContext(ctx)
	defer cancel()
	body := canonicalBody(req)
	for attempt := 0; ; attempt++ {
		res, err := p.callAHT(ctx, creds, body)
		if err != nil {
			p.giveBack(ctx, p.Budget, acct.UserName, taken, err)
			code := http.StatusBadGateway
			msg := "upstream unreachable"
			if errors.Is(err, context.DeadlineExceeded) {
				code, msg = http.StatusGatewayTimeout, "upstream timed out"
			}
			p.Logger.Warn("upstream AHT call failed", "account", acct.UserName, "err", err)
			return p.fallback(key, code, msg)
		}
		if p.Metrics != nil {
			p.Metrics.observeUpstream(routeAHT, res.status, res.took)
		}
		if res.status >= 500 {
			return p.fallback(key, http.StatusBadGateway, "upstream answered HTTP "+strconv.Itoa(res.status))
		}
		msg, isErr := cloudagent.ErrorMessage(res.body)
		switch {
		case isErr && cloudagent.IsLimitExceeded(msg):
			// Someone else spends this account's budget: stop calling
			// for a whole window rather than retry into the limit.
			p.Logger.Warn("upstream says max limit exceeded; budget marked spent for a window", "account", acct.UserName)
			if err := p.Budget.Exhaust(ctx, acct.UserName); err != nil {
				p.Logger.Error("budget store unavailable", "account", acct.UserName, "err", err)
			}
			if a := p.stale(key); a != nil {
				return a
			}
			bst, _ := p.Budget.State(ctx, acct.UserName)
			return &answer{outcome: OutcomeLimited, budget: bst, upstreamStatus: res.status}
		case isErr && cloudagent.IsTokenProblem(msg) && attempt == 0:
			acct.Upstream.Reject(handle)
			creds = http.Header{}
			if handle, err = acct.Upstream.Apply(ctx, creds); err != nil {
				return p.credentialsFailed(key, acct, err)
			}
			// The retry is an upstream call too, so it needs its own slot.
			if ok, bst, err := p.Budget.Take(ctx, acct.UserName); err != nil || !ok {
				if a := p.stale(key); a != nil {
					return a
				}
				return &answer{outcome: OutcomeLimited, budget: bst}
			}
			taken = p.Budget.Now()
			continue
		case isErr && msg != cloudagent.MsgInvalidAgent && msg != cloudagent.MsgInvalidCampaign:
			// Not an answer to the question but a refusal of caproxy's
			// call ("userName or apiKey is Invalid", a token refused
			// again after a new one): never cached, never a 200. Always
			// 502, whatever status CloudAgent gave it: the client's own
			// credentials were accepted, and a 401 would say they were not.
			p.Logger.Warn("upstream refused the AHT call", "account", acct.UserName, "message", msg, "status", res.status)
			a := p.fallback(key, http.StatusBadGateway, msg)
			a.upstreamStatus = res.status
			return a
		}
		e, stored := p.Cache.Store(key, res.body, res.status, res.contentType)
		if stored && p.Shared != nil {
			if err := p.Shared.Set(ctx, key, e); err != nil && !p.degraded() {
				p.Logger.Warn("shared cache unavailable", "err", err)
			}
		}
		return &answer{outcome: OutcomeMiss, entry: e, upstreamStatus: res.status}
	}
}

// sharedGet looks key up in the shared level and keeps what it finds in the
// local cache (a stale entry too: it is the fallback when the upstream
// fails). A shared level that cannot answer counts as a miss.
func (p *Proxy) sharedGet(ctx context.Context, key string) *cache.Entry {
	if p.Shared == nil {
		return nil
	}
	e, ok, err := p.Shared.Get(ctx, key)
	if err != nil && !p.degraded() {
		// While Redis is down the outage was logged once; not per request.
		p.Logger.Warn("shared cache unavailable", "err", err)
	}
	if p.Metrics != nil {
		p.Metrics.observeShared(ok, err)
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

// canonicalBody is what caproxy sends upstream: the fields that make the
// key, so every coalesced waiter gets the answer to the same question.
func canonicalBody(req cloudagent.AHTRequest) []byte {
	b, _ := json.Marshal(req) // three strings always marshal
	return b
}

type upstreamResult struct {
	status      int
	contentType string
	body        []byte
	took        time.Duration
}

// callAHT makes one upstream AHT call with the credentials in creds.
func (p *Proxy) callAHT(ctx context.Context, creds http.Header, body []byte) (*upstreamResult, error) {
	out, err := http.NewRequestWithContext(ctx, http.MethodPost, p.ahtURL, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	for k, v := range creds {
		out.Header[k] = v
	}
	out.Header.Set("Content-Type", "application/json")
	return p.do(out)
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
