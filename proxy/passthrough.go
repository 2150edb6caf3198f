package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httputil"
	"strconv"
	"time"

	"github.com/caproxy/caproxy/cloudagent"
	"github.com/caproxy/caproxy/credential"
	"github.com/caproxy/caproxy/limit"
)

// upstreamCreds is what servePassThrough resolved for the reverse proxy's
// Rewrite and ModifyResponse hooks.
type upstreamCreds struct {
	acct   *Account
	up     credential.Upstream // what attached header
	header http.Header         // the account's upstream credentials
	handle string
	rec    *record
	rt     *Route    // nil for a path outside the table
	taken  time.Time // when rt's budget slot was taken; zero if none
	// namesAgree reports that every place the request names an account
	// (query, body, bearer token) was read and names acct. Only then is an
	// upstream "Invalid Token" evidence against the token rather than
	// against the request.
	namesAgree bool
}

// suspecter is an Upstream that can take weak evidence against its
// credentials (credential.TokenSource).
type suspecter interface{ Suspect(handle string) }

type credsKey struct{}

// servePassThrough sends a request to the upstream with the credentials of
// the account it names (userName in the query or the JSON body, or the
// account of a caproxy-issued bearer token): an unknown path (rt nil) with
// the account's own credentials, or a table route's uncached request with
// the route's credentials, under its budget. Nothing is retried.
func (p *Proxy) servePassThrough(w http.ResponseWriter, r *http.Request, rec *record, rt *Route) {
	if rt == nil {
		rec.route = routeOther
	}
	writeErr := rt.writeError
	st := p.settings.Load()

	// The body is read whole (bounded) before anything is sent: one over
	// MaxBodyBytes gets 413 with nothing streamed upstream, and every name
	// of an account in the request can be compared. It is a copy of its
	// own, not a pooled buffer: the transport may still read it after the
	// reverse proxy returns.
	var body []byte
	if r.Body != nil && r.Body != http.NoBody {
		buf, err := readBody(w, r)
		if err != nil {
			rec.outcome = OutcomeInvalid
			writeBodyError(w, err, writeErr)
			return
		}
		body = bytes.Clone(buf.Bytes())
		bufPool.Put(buf)
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.ContentLength = int64(len(body))
	}
	queryUser := queryUserName(r, rt)
	bodyUser := ""
	if len(body) > 0 {
		bodyUser = userNameOf(body)
	}
	userName := queryUser
	if userName == "" && st.ClientAuth {
		if tok, ok := bearer(r); ok {
			userName, _ = p.Issuer.Verify(tok, st.keyFor, p.now())
		}
	}
	if userName == "" {
		userName = bodyUser
	}
	// A body naming another account than the query or the token is
	// forwarded as is, but an upstream refusal of it says nothing about
	// caproxy's token.
	namesAgree := bodyUser == "" || bodyUser == userName
	if userName == "" {
		rec.outcome = OutcomeInvalid
		writeErr(w, http.StatusBadRequest, cloudagent.MsgUserNameEmpty)
		return
	}
	acct, msg, code := p.authenticate(r, rt, st, userName, p.now())
	if acct == nil {
		rec.outcome = OutcomeUnauthorized
		writeErr(w, code, msg)
		return
	}
	rec.account = acct.UserName
	if !p.allowClient(w, r, st, acct.UserName) {
		rec.outcome = OutcomeLimited
		return
	}
	// Credentials before the route's slot, as for AHT: a request that
	// cannot get a token never goes out, so it spends nothing.
	up := rt.upstreamFor(acct)
	creds := &upstreamCreds{acct: acct, up: up, header: http.Header{}, rec: rec, rt: rt, namesAgree: namesAgree}
	handle, err := up.Apply(r.Context(), creds.header)
	if err != nil {
		a := p.credentialsFailed("", acct, err)
		rec.outcome = a.outcome
		writeAnswerError(w, a, writeErr)
		return
	}
	creds.handle = handle
	if rt != nil {
		taken, a := p.takeBudget(r.Context(), st, rt.budget, acct, "")
		if a != nil {
			rec.outcome = a.outcome
			if a.outcome == OutcomeLimited {
				writeRouteLimited(w, rt, a.budget, p.now())
			} else {
				writeAnswerError(w, a, writeErr)
			}
			return
		}
		if rt.budget != nil {
			creds.taken = taken
		}
	}
	rec.outcome = "passed"
	// One bound on the whole exchange, the answer's body included, so an
	// upstream that stalls mid-answer cannot hold the request forever.
	ctx := context.WithValue(r.Context(), credsKey{}, creds)
	if p.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, p.Timeout)
		defer cancel()
	}
	p.rp.ServeHTTP(w, r.WithContext(ctx))
}

// userNameOf returns the top-level "userName" of a JSON object, or "".
func userNameOf(body []byte) string {
	var v struct {
		UserName string `json:"userName"`
	}
	if json.Unmarshal(body, &v) != nil {
		return ""
	}
	return v.UserName
}

func (p *Proxy) newReverseProxy(rt http.RoundTripper) *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Transport: rt,
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(p.Upstream)
			pr.SetXForwarded()
			h := pr.Out.Header
			// The client's own credentials are for caproxy, not CloudAgent:
			// headers and the legacy API's query parameters alike.
			credential.StripClient(h, pr.Out.URL)
			if c, ok := pr.In.Context().Value(credsKey{}).(*upstreamCreds); ok {
				for k, v := range c.header {
					h[k] = v
				}
				applyQueryCredentials(c.up, pr.Out.URL)
			}
		},
		ModifyResponse: p.checkPassedResponse,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			code, msg := http.StatusBadGateway, "upstream unreachable"
			if isTimeout(err) {
				code, msg = http.StatusGatewayTimeout, "upstream timed out"
			}
			c, _ := r.Context().Value(credsKey{}).(*upstreamCreds)
			var rt *Route
			if c != nil {
				c.rec.outcome = OutcomeUpstreamError
				rt = c.rt
				var b *limit.Budget
				if rt != nil && !c.taken.IsZero() {
					b = rt.budget
				}
				p.giveBack(context.WithoutCancel(r.Context()), b, c.acct.UserName, c.taken, err)
			}
			if r.Context().Err() == nil {
				p.Logger.Warn("pass-through failed", "path", r.URL.Path, "err", err)
			}
			rt.writeError(w, code, msg)
		},
	}
}

// checkPassedResponse notes the upstream status and, when CloudAgent says
// the token is expired or invalid, reports it to the account's credentials
// as a suspicion (see credential.TokenSource.Suspect).
// Pass-through bodies are streamed, so the request itself is not retried.
func (p *Proxy) checkPassedResponse(resp *http.Response) error {
	c, ok := resp.Request.Context().Value(credsKey{}).(*upstreamCreds)
	if !ok {
		return nil
	}
	c.rec.upstreamStatus = resp.StatusCode
	if p.Metrics != nil {
		p.Metrics.upstreamCalls.WithLabelValues(c.rec.route, strconv.Itoa(resp.StatusCode)).Inc()
	}
	// Token errors are small JSON bodies; only those are worth a look.
	if resp.ContentLength < 0 || resp.ContentLength > 4096 {
		return nil
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(b))
	if err != nil {
		return err
	}
	if msg, ok := cloudagent.ErrorMessage(b); ok && cloudagent.IsTokenProblem(msg) {
		// A client shapes this call and can make CloudAgent refuse the
		// token at will (another account in the body, say); each
		// replacement spends one of ten hourly generations. So it counts
		// only as a suspicion, and only when the request names the
		// account consistently; caproxy's own AHT calls give proof.
		if s, ok := c.up.(suspecter); ok && c.namesAgree {
			s.Suspect(c.handle)
		}
		p.Logger.Warn("upstream refused the token on pass-through", "account", c.acct.UserName, "names_agree", c.namesAgree)
	}
	return nil
}
