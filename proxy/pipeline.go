package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/caproxy/caproxy/cache"
	"github.com/caproxy/caproxy/cloudagent"
	"github.com/caproxy/caproxy/jsonbody"
	"github.com/caproxy/caproxy/route"
)

// lookup returns the route serving the canonical path: AHT first, then the
// table; nil for a path outside both.
func (p *Proxy) lookup(path string) *Route {
	if path == cloudagent.PathAHT {
		return &p.aht
	}
	return p.Routes.Lookup(path)
}

// request is what a route's reading found in one request.
type request struct {
	userName string
	// shape, if not empty, is CloudAgent's refusal of the request's shape:
	// answered 400 after authentication, as CloudAgent orders its checks.
	shape string
	aht   cloudagent.AHTRequest // route.ReadAHT
	// body is, for route.ReadJSON, the canonical body; for route.ReadAccount, the
	// body as sent (a copy of its own: the transport reads it later).
	body   []byte
	target string // route.ReadJSON: the escaped path and sorted query
	// namesAgree (route.ReadAccount) reports that every place the request
	// names an account (query, body, bearer token) names the same one.
	namesAgree bool
}

// serveRoute serves a request on rt: the opening steps every route shares
// (open), then a pass-through or the cached path (cache, coalesced fetch).
func (p *Proxy) serveRoute(w http.ResponseWriter, r *http.Request, rec *record, rt *Route) {
	rec.route = rt.Name
	st := p.current()
	now := p.now()
	var q request
	acct := p.open(w, r, rec, rt, st, now, &q)
	if acct == nil {
		return
	}
	if rt.Reads() == route.ReadAccount {
		p.passThrough(w, r, rec, rt, st, acct, &q)
		return
	}
	isAHT := rt.Reads() == route.ReadAHT
	key := p.keyOf(r, rt, acct, &q)
	// A no-cache AHT request fetches anew at most once per key per ttl;
	// otherwise it is an ordinary request (served from the cache or
	// coalesced), so no client can drain the budget with it. A route's
	// no-cache requests are bounded by its budget.
	bypass := noCache(r) && (!isAHT || p.allowBypass(key, now))
	if !bypass {
		e, ok := p.Cache.Get(key)
		refreshAhead := isAHT && st.RefreshAhead
		if ok && e.Fresh(now) {
			if refreshAhead {
				p.noteDemand(st, acct.UserName, key, q.aht, e, now)
			}
			rec.outcome = OutcomeHit
			if age := writeEntry(w, e, xCacheHit, now); isAHT {
				p.observeAge(age)
			}
			return
		}
		if refreshAhead && p.noteDemand(st, acct.UserName, key, q.aht, e, now) {
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
	// Made here, on a miss: the escaping closure would allocate on hits.
	c := p.newCall(r, rt, acct, key, &q)
	fn := func(ctx context.Context) (any, error) {
		return p.fetch(ctx, st, c, fetchOptions{bypass: bypass}), nil
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
		msg := "fetch panicked"
		if isAHT {
			msg = "AHT fetch panicked"
		}
		p.Logger.Error(msg, "route", rt.Name, "account", acct.UserName, "panic", fmt.Sprint(pe.Value), "stack", string(pe.Stack))
		v, err = p.fallback(key, http.StatusBadGateway, "internal error"), nil
	}
	if err != nil {
		// Only the client's own context ends a wait early: it has gone.
		rec.outcome = OutcomeClientGone
		return
	}
	if shared && p.Metrics != nil {
		p.Metrics.Coalesced()
	}
	p.writeFetched(w, rec, v.(*answer), bypass, isAHT, rt.WriteError, rt.LimitMessage)
}

// open runs the steps every route shares, in order: the method, the body
// (read once, bounded), the route's reading of it (the account it names),
// authentication, the request's shape, the client limit. It returns the
// account, or nil once it has answered a request that goes no further.
func (p *Proxy) open(w http.ResponseWriter, r *http.Request, rec *record, rt *Route, st *Settings, now time.Time, q *request) *Account {
	if !rt.Allows(r.Method) {
		rec.outcome = OutcomeInvalid
		w.Header().Set("Allow", strings.Join(rt.Methods, ", "))
		rt.WriteError(w, http.StatusMethodNotAllowed, "method "+r.Method+" not allowed; use "+strings.Join(rt.Methods, " or "))
		return nil
	}
	body, err := jsonbody.Read(w, r, MaxBodyBytes)
	if err != nil {
		rec.outcome = OutcomeInvalid
		writeBodyError(w, err, rt.WriteError)
		return nil
	}
	code, msg := p.readRequest(r, rt, st, now, body, q)
	jsonbody.Release(body) // the readers keep copies of what they need
	if msg == "" && q.userName == "" {
		code, msg = http.StatusBadRequest, cloudagent.MsgUserNameEmpty
	}
	if msg != "" {
		rec.outcome = OutcomeInvalid
		rt.WriteError(w, code, msg)
		return nil
	}
	acct, msg, code := p.authenticate(r, rt, st, q.userName, now)
	if acct == nil {
		rec.outcome = OutcomeUnauthorized
		rt.WriteError(w, code, msg)
		return nil
	}
	rec.account = acct.UserName
	if q.shape != "" {
		rec.outcome = OutcomeInvalid
		rt.WriteError(w, http.StatusBadRequest, q.shape)
		return nil
	}
	if !p.allowClient(w, r, st, acct.UserName) {
		rec.outcome = OutcomeLimited
		return nil
	}
	return acct
}

// readRequest is rt's reading of r, whose body (nil for none) it may not
// keep: it fills q, or returns the status and message to refuse r with.
func (p *Proxy) readRequest(r *http.Request, rt *Route, st *Settings, now time.Time, body []byte, q *request) (int, string) {
	switch rt.Reads() {
	case route.ReadAHT:
		req, err := cache.ParseRequest(body)
		if err != nil {
			return http.StatusBadRequest, err.Error()
		}
		q.aht, q.userName = req, req.UserName
		if req.UserName != "" {
			q.shape = q.aht.Validate()
		}
	case route.ReadJSON:
		canon, userName, err := canonicalJSON(body)
		if err != nil && !errors.Is(err, jsonbody.ErrNotJSON) {
			// JSON that readers could read differently: say why.
			return http.StatusBadRequest, err.Error()
		}
		if rt.BodyMessage != "" && (err != nil || len(canon) == 0 || canon[0] != '{') {
			return http.StatusBadRequest, rt.BodyMessage
		}
		if err != nil {
			return http.StatusBadRequest, err.Error()
		}
		query := r.URL.Query()
		dropQueryCredentials(query) // neither cache key nor upstream gets a client's secret
		if qu := queryUserName(r, rt); qu != "" {
			if userName != "" && userName != qu {
				return http.StatusBadRequest, "userName in the query and in the body differ"
			}
			userName = qu
		}
		if userName == "" {
			userName = p.tokenUser(r, st, now)
		}
		q.userName, q.body = userName, canon
		// Encode sorts the query by name.
		q.target = r.URL.EscapedPath()
		if enc := query.Encode(); enc != "" {
			q.target += "?" + enc
		}
	default: // route.ReadAccount
		// The body was read whole (bounded) before anything is sent: one
		// over MaxBodyBytes got 413 with nothing streamed upstream, and
		// every name of an account in it can be compared.
		bodyUser := ""
		if body != nil {
			q.body = bytes.Clone(body)
			r.Body = io.NopCloser(bytes.NewReader(q.body))
			r.ContentLength = int64(len(q.body))
			var err error
			if bodyUser, err = userNameOf(q.body); err != nil {
				return http.StatusBadRequest, err.Error()
			}
		}
		userName := queryUserName(r, rt)
		if userName == "" {
			userName = p.tokenUser(r, st, now)
		}
		if userName == "" {
			userName = bodyUser
		}
		// A body naming another account than the query or the token is
		// forwarded as is, but an upstream refusal of it says nothing
		// about caproxy's token.
		q.userName, q.namesAgree = userName, bodyUser == "" || bodyUser == userName
	}
	return 0, ""
}

// tokenUser is the account of the caproxy-issued token r presents (bare
// or Bearer), for a request that names none elsewhere; "" for none, an
// invalid token, or client auth off.
func (p *Proxy) tokenUser(r *http.Request, st *Settings, now time.Time) string {
	if !st.ClientAuth {
		return ""
	}
	tok, ok := bearer(r)
	if !ok {
		return ""
	}
	user, _ := p.Issuer.Verify(tok, st.keyFor, now)
	return user
}

// keyOf is the cache key of a cached route's request for acct. A route's
// key: account, route, method, path and sorted query, canonical body (last:
// it may hold "|").
func (p *Proxy) keyOf(r *http.Request, rt *Route, acct *Account, q *request) string {
	if rt.Reads() == route.ReadAHT {
		return cache.RequestKey(acct.UserName, q.aht)
	}
	return cache.KeyFor(acct.UserName, "route:"+rt.Name, r.Method+" "+q.target+"|"+string(q.body))
}

// newCall is the upstream call a cached route's miss makes: what caproxy
// sends is its own reading of the request (AHT's fields, a route's
// canonical body), so every coalesced waiter gets the answer to one
// question.
func (p *Proxy) newCall(r *http.Request, rt *Route, acct *Account, key string, q *request) *call {
	if rt.Reads() == route.ReadAHT {
		return p.ahtCall(acct, key, q.aht)
	}
	u := *p.Upstream
	path, query, _ := strings.Cut(q.target, "?")
	u.RawPath = strings.TrimSuffix(u.EscapedPath(), "/") + path
	u.Path, _ = url.PathUnescape(u.RawPath)
	u.RawQuery = query
	return &call{rt: rt, acct: acct, key: key, method: r.Method, url: u.String(), body: q.body}
}

// ahtCall is the upstream call for an AHT question (a client's miss or a
// refresh).
func (p *Proxy) ahtCall(acct *Account, key string, req cloudagent.AHTRequest) *call {
	return &call{rt: &p.aht, acct: acct, key: key, method: http.MethodPost, url: p.ahtURL, body: canonicalBody(req)}
}

// canonicalJSON is a JSON route's reading of its body, made by the one
// strict reader (jsonbody): the canonical body (the cache key and what is
// forwarded: keys sorted, insignificant space dropped, escapes decoded,
// numbers kept as written) and the top-level string "userName". An empty
// body stays empty. What jsonbody refuses (a repeated key, keys equal but
// for case, invalid UTF-8, nesting deeper than jsonbody.MaxDepth, trailing
// data) is refused: caproxy would read it one way and CloudAgent another.
func canonicalJSON(body []byte) (canon []byte, userName string, err error) {
	doc, err := jsonbody.Parse(body)
	if errors.Is(err, jsonbody.ErrEmpty) {
		return nil, "", nil
	}
	if err != nil {
		return nil, "", err
	}
	if userName, _, err = doc.String("userName"); err != nil {
		userName = "" // not a string: names no account, as before
	}
	return doc.AppendCanonical(nil), userName, nil
}
