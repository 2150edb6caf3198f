package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/caproxy/caproxy/cache"
	"github.com/caproxy/caproxy/cloudagent"
	"github.com/caproxy/caproxy/credential"
	"github.com/caproxy/caproxy/limit"
)

// serveRoute serves a request on a table route: its methods, then either a
// cached read (serveCachedRoute) or a pass-through under the route's
// credentials and budget.
func (p *Proxy) serveRoute(w http.ResponseWriter, r *http.Request, rec *record, rt *Route) {
	rec.route = rt.Name
	if !rt.allows(r.Method) {
		rec.outcome = OutcomeInvalid
		w.Header().Set("Allow", strings.Join(rt.Methods, ", "))
		rt.writeError(w, http.StatusMethodNotAllowed, "method "+r.Method+" not allowed; use "+strings.Join(rt.Methods, " or "))
		return
	}
	if rt.CacheTTL <= 0 || rt.Write {
		p.servePassThrough(w, r, rec, rt)
		return
	}
	p.serveCachedRoute(w, r, rec, rt)
}

// Errors of canonicalJSON: a body caproxy could read differently from
// CloudAgent is refused rather than cached under one meaning and
// forwarded with another.
var (
	errBodyNotJSON    = errors.New("request body is not valid JSON")
	errBodyNotUTF8    = errors.New("request body is not valid UTF-8")
	errBodyDuplicates = errors.New("request body repeats a key (or spells one in two cases)")
)

// canonicalJSON is caproxy's one reading of a route's JSON body, used for
// the account, the cache key and what is forwarded: the value re-encoded
// with object keys sorted, insignificant space dropped, escapes decoded
// (so "\u0061gent1" is agent1 everywhere) and numbers kept as written. It
// also returns a top-level string "userName". An empty body stays empty.
// Invalid UTF-8 (which a decoder may replace) and duplicate keys,
// including keys equal but for case (Go's decoder folds case, Java's does
// not), are refused at every level.
func canonicalJSON(body []byte) (canon []byte, userName string, err error) {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, "", nil
	}
	if !utf8.Valid(body) {
		return nil, "", errBodyNotUTF8
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	v, err := decodeStrict(dec)
	if err != nil {
		return nil, "", err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, "", errBodyNotJSON // trailing data
	}
	if m, ok := v.(map[string]any); ok {
		userName, _ = m["userName"].(string)
	}
	var out bytes.Buffer
	enc := json.NewEncoder(&out)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, "", errBodyNotJSON
	}
	return bytes.TrimSuffix(out.Bytes(), []byte("\n")), userName, nil
}

// decodeStrict decodes one JSON value token by token, refusing duplicate
// (or case-folded duplicate) object keys.
func decodeStrict(dec *json.Decoder) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, errBodyNotJSON
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			m := map[string]any{}
			folded := map[string]struct{}{}
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return nil, errBodyNotJSON
				}
				k, _ := kt.(string)
				f := strings.ToLower(k)
				if _, dup := folded[f]; dup {
					return nil, errBodyDuplicates
				}
				folded[f] = struct{}{}
				if m[k], err = decodeStrict(dec); err != nil {
					return nil, err
				}
			}
			if _, err := dec.Token(); err != nil {
				return nil, errBodyNotJSON
			}
			return m, nil
		case '[':
			a := []any{}
			for dec.More() {
				v, err := decodeStrict(dec)
				if err != nil {
					return nil, err
				}
				a = append(a, v)
			}
			if _, err := dec.Token(); err != nil {
				return nil, errBodyNotJSON
			}
			return a, nil
		}
		return nil, errBodyNotJSON
	default:
		return t, nil // string, json.Number, bool or nil
	}
}

// serveCachedRoute serves a read on a cached route: one reading of the
// body, the account it names, a cache lookup, then one coalesced upstream
// call per key under the route's budget.
func (p *Proxy) serveCachedRoute(w http.ResponseWriter, r *http.Request, rec *record, rt *Route) {
	var raw []byte
	if r.Body != nil && r.Body != http.NoBody {
		buf, err := readBody(w, r)
		if err != nil {
			rec.outcome = OutcomeInvalid
			writeBodyError(w, err, rt.writeError)
			return
		}
		raw = bytes.Clone(buf.Bytes())
		bufPool.Put(buf)
	}
	body, userName, err := canonicalJSON(raw)
	if rt.BodyMessage != "" && (errors.Is(err, errBodyNotJSON) || len(body) == 0 || body[0] != '{') {
		rec.outcome = OutcomeInvalid
		rt.writeError(w, http.StatusBadRequest, rt.BodyMessage)
		return
	}
	if err != nil {
		rec.outcome = OutcomeInvalid
		rt.writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	st := p.settings.Load()
	now := p.now()
	query := r.URL.Query()
	dropQueryCredentials(query) // neither cache key nor upstream gets a client's secret
	if q := queryUserName(r, rt); q != "" {
		if userName != "" && userName != q {
			rec.outcome = OutcomeInvalid
			rt.writeError(w, http.StatusBadRequest, "userName in the query and in the body differ")
			return
		}
		userName = q
	}
	if userName == "" && st.ClientAuth {
		if tok, ok := bearer(r); ok {
			userName, _ = p.Issuer.Verify(tok, st.keyFor, now)
		}
	}
	if userName == "" {
		rec.outcome = OutcomeInvalid
		rt.writeError(w, http.StatusBadRequest, cloudagent.MsgUserNameEmpty)
		return
	}
	acct, msg, code := p.authenticate(r, rt, st, userName, now)
	if acct == nil {
		rec.outcome = OutcomeUnauthorized
		rt.writeError(w, code, msg)
		return
	}
	rec.account = acct.UserName
	if !p.allowClient(w, r, st, acct.UserName) {
		rec.outcome = OutcomeLimited
		return
	}

	// The key: account, route, method, canonical path, sorted query (Encode
	// sorts by name), canonical body. The body is last: it may hold "|".
	target := r.URL.EscapedPath()
	if enc := query.Encode(); enc != "" {
		target += "?" + enc
	}
	key := cache.KeyFor(acct.UserName, "route:"+rt.Name, r.Method+" "+target+"|"+string(body))
	bypass := noCache(r)
	if !bypass {
		if e, ok := p.Cache.Get(key); ok && e.Fresh(now) {
			rec.outcome = OutcomeHit
			writeEntry(w, e, xCacheHit, now)
			return
		}
	}
	group := &p.group
	if bypass {
		group = &p.bypassGroup
	}
	call := routeCall{rt: rt, acct: acct, key: key, method: r.Method, target: target, body: body,
		contentType: r.Header.Get("Content-Type")}
	v, shared, err := group.Do(r.Context(), key, func(ctx context.Context) (any, error) {
		return p.fetchRoute(ctx, st, &call, bypass), nil
	})
	if err != nil {
		rec.outcome = OutcomeClientGone
		return
	}
	if shared && p.Metrics != nil {
		p.Metrics.coalesced.Inc()
	}
	// A cached route's refusals say MISS, as AHT's do; a passed-through
	// route has no cache and says nothing (servePassThrough).
	p.writeFetched(w, rec, v.(*answer), bypass, false, rt.writeError, rt.LimitMessage)
}

// routeCall is one upstream call a cached route's fetch makes.
type routeCall struct {
	rt          *Route
	acct        *Account
	key         string
	method      string
	target      string // canonical escaped path and sorted query
	body        []byte // canonical JSON body, or nil
	contentType string
}

// fetchRoute is fetch for a table route: a fresh answer under the route's
// budget, else stale, a bounded wait, or a refusal. As for AHT, the
// credentials come before the slot (a call that cannot get a token never
// goes out, so spends nothing) and a call that never reached CloudAgent
// gives its slot back. It is never retried: a token refusal drops the
// token for the next call and is answered as is.
func (p *Proxy) fetchRoute(ctx context.Context, st *Settings, c *routeCall, bypass bool) *answer {
	ctx = context.WithoutCancel(ctx)
	if p.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, st.MaxWait+p.Timeout+fetchSlack)
		defer cancel()
	}
	if !bypass {
		if e, ok := p.Cache.Get(c.key); ok && e.Fresh(p.now()) {
			return &answer{outcome: OutcomeMiss, entry: e}
		}
		if e := p.sharedGet(ctx, c.key); e != nil && e.Fresh(p.now()) {
			return &answer{outcome: OutcomeHit, entry: e}
		}
	}
	if p.upstreamDown() {
		return p.fallback(c.key, http.StatusBadGateway, "upstream unreachable")
	}
	creds := http.Header{}
	handle, err := c.rt.upstreamFor(c.acct).Apply(ctx, creds)
	if err != nil {
		return p.credentialsFailed(c.key, c.acct, err)
	}
	taken, a := p.takeBudget(ctx, st, c.rt.budget, c.acct, c.key)
	if a != nil {
		return a
	}
	ctx, cancel := p.upstreamContext(ctx)
	defer cancel()
	res, err := p.callRoute(ctx, c, creds)
	if err != nil {
		p.giveBack(ctx, c.rt.budget, c.acct.UserName, taken, err)
		code, msg := http.StatusBadGateway, "upstream unreachable"
		if errors.Is(err, context.DeadlineExceeded) {
			code, msg = http.StatusGatewayTimeout, "upstream timed out"
		}
		p.Logger.Warn("upstream call failed", "route", c.rt.Name, "account", c.acct.UserName, "err", err)
		return p.fallback(c.key, code, msg)
	}
	if p.Metrics != nil {
		p.Metrics.observeUpstream(c.rt.Name, res.status, res.took)
	}
	if res.status >= 500 {
		return p.fallback(c.key, http.StatusBadGateway, "upstream answered HTTP "+strconv.Itoa(res.status))
	}
	msg, isErr := cloudagent.ErrorMessage(res.body)
	switch {
	case res.status == http.StatusTooManyRequests || (isErr && cloudagent.IsLimitExceeded(msg)):
		// Someone else spends this account's calls on the route: stop for
		// a whole window rather than call into the limit.
		p.Logger.Warn("upstream refused for its limit; route budget marked spent for a window", "route", c.rt.Name, "account", c.acct.UserName)
		if c.rt.budget != nil {
			if err := c.rt.budget.Exhaust(ctx, c.acct.UserName); err != nil {
				p.Logger.Error("budget store unavailable", "account", c.acct.UserName, "err", err)
			}
			if a := p.stale(c.key); a != nil {
				return a
			}
			bst, _ := c.rt.budget.State(ctx, c.acct.UserName)
			return &answer{outcome: OutcomeLimited, budget: bst, upstreamStatus: res.status}
		}
	case isErr && cloudagent.IsTokenProblem(msg):
		// The client shaped this call, so a refusal is only a suspicion
		// against the token (see checkPassedResponse).
		if s, ok := c.rt.upstreamFor(c.acct).(suspecter); ok {
			s.Suspect(handle)
		}
	}
	now := p.now()
	e := &cache.Entry{Body: res.body, Status: res.status, ContentType: res.contentType, Fetched: now, FreshUntil: now, StaleUntil: now}
	if res.status == http.StatusOK && cloudagent.IsSuccess(res.body) {
		e.FreshUntil = now.Add(c.rt.CacheTTL)
		e.StaleUntil = e.FreshUntil.Add(c.rt.StaleTTL)
		if p.Cache.Put(c.key, e) && p.Shared != nil {
			if err := p.Shared.Set(ctx, c.key, e); err != nil && !p.degraded() {
				p.Logger.Warn("shared cache unavailable", "err", err)
			}
		}
	}
	return &answer{outcome: OutcomeMiss, entry: e, upstreamStatus: res.status}
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

// callRoute makes one upstream call of a cached route with the
// credentials in creds.
func (p *Proxy) callRoute(ctx context.Context, c *routeCall, creds http.Header) (*upstreamResult, error) {
	u := *p.Upstream
	path, query, _ := strings.Cut(c.target, "?")
	u.RawPath = strings.TrimSuffix(u.EscapedPath(), "/") + path
	u.Path, _ = url.PathUnescape(u.RawPath)
	u.RawQuery = query
	var body io.Reader = http.NoBody
	if c.body != nil {
		body = bytes.NewReader(c.body)
	}
	out, err := http.NewRequestWithContext(ctx, c.method, u.String(), body)
	if err != nil {
		return nil, err
	}
	if c.body != nil {
		out.Header.Set("Content-Type", "application/json")
	}
	for k, v := range creds {
		out.Header[k] = v
	}
	applyQueryCredentials(c.rt.upstreamFor(c.acct), out.URL)
	return p.do(out)
}

// do sends out and reads a bounded answer.
func (p *Proxy) do(out *http.Request) (*upstreamResult, error) {
	start := time.Now()
	resp, err := p.client.Do(out)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	return &upstreamResult{status: resp.StatusCode, contentType: resp.Header.Get("Content-Type"), body: b, took: time.Since(start)}, nil
}

// writeRouteLimited answers a refusal for rt's budget: 429, when to retry,
// and the route's CloudAgent-shaped limit message.
func writeRouteLimited(w http.ResponseWriter, rt *Route, st limit.State, now time.Time) {
	writeLimitedAs(w, st, now, rt.writeError, rt.LimitMessage)
}

// apiKeyUpstream is the account's apiKey as upstream credentials, for
// routes whose API takes only the apiKey header (AuthAPIKey). An account's
// APIKey is its CloudAgent apiKey in both modes.
func (a *Account) apiKeyUpstream() credential.Upstream { return credential.APIKey(a.APIKey) }
