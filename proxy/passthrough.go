package proxy

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httputil"
	"time"

	"github.com/caproxy/caproxy/credential"
	"github.com/caproxy/caproxy/jsonbody"
	"github.com/caproxy/caproxy/limit"
	"github.com/caproxy/caproxy/route"
)

// upstreamCreds is what servePassThrough resolved for the reverse proxy's
// Rewrite and ModifyResponse hooks.
type upstreamCreds struct {
	acct   *Account
	up     credential.Upstream // what attached header
	header http.Header         // the account's upstream credentials
	handle string
	rec    *record
	rt     *Route    // route.Other() for a path outside the table
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

// passThrough sends an opened request (see open) to the upstream with
// rt's credentials for acct, under rt's budget (a path outside the table:
// route.Other, the account's own credentials, no budget), streaming the
// answer back. Nothing is retried.
func (p *Proxy) passThrough(w http.ResponseWriter, r *http.Request, rec *record, rt *Route, st *Settings, acct *Account, q *request) {
	header, handle, taken, a := p.credentialsAndBudget(r.Context(), st, rt, acct, "", fetchOptions{})
	if a != nil {
		rec.outcome = a.outcome
		if a.outcome == OutcomeLimited {
			writeLimitedAs(w, a.budget, p.now(), rt.WriteError, rt.LimitMessage)
		} else {
			writeAnswerError(w, a, rt.WriteError)
		}
		return
	}
	creds := &upstreamCreds{acct: acct, up: upstreamFor(rt, acct), header: header, handle: handle, rec: rec, rt: rt, namesAgree: q.namesAgree}
	if rt.Budget() != nil {
		creds.taken = taken
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

// userNameOf is pass-through's reading of a body, by the one strict
// reader: its top-level string "userName", or "" for a body that is not
// JSON at all (forwarded as sent: it names no account). A body that looks
// like JSON but that JSON readers could read differently (a repeated key,
// keys equal but for case, invalid UTF-8, nesting too deep, trailing data)
// is an error: the account caproxy authenticates could differ from the
// one CloudAgent reads.
func userNameOf(body []byte) (string, error) {
	doc, err := jsonbody.Parse(body)
	if err != nil {
		if t := bytes.TrimLeft(body, " \t\r\n"); len(t) == 0 || (t[0] != '{' && t[0] != '[') {
			return "", nil
		}
		return "", err
	}
	name, _, _ := doc.String("userName")
	return name, nil
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
			rt := route.Other()
			if c != nil {
				c.rec.outcome = OutcomeUpstreamError
				rt = c.rt
				var b *limit.Budget
				if !c.taken.IsZero() {
					b = rt.Budget()
				}
				p.giveBack(context.WithoutCancel(r.Context()), b, c.acct.UserName, c.taken, err)
			}
			if r.Context().Err() == nil {
				p.Logger.Warn("pass-through failed", "path", r.URL.Path, "err", err)
			}
			rt.WriteError(w, code, msg)
		},
	}
}

// checkPassedResponse notes the upstream status and reads the answer with
// classify, as a cached route's: a limit refusal (HTTP 429 with any body,
// or "max limit exceeded") spends the route's budget for a window; a token
// refusal is reported to the account's credentials as a suspicion (see
// credential.TokenSource.Suspect). Pass-through answers are streamed, so
// only a small body is read, and the request itself is not retried.
func (p *Proxy) checkPassedResponse(resp *http.Response) error {
	c, ok := resp.Request.Context().Value(credsKey{}).(*upstreamCreds)
	if !ok {
		return nil
	}
	c.rec.upstreamStatus = resp.StatusCode
	if p.Metrics != nil {
		p.Metrics.UpstreamCall(c.rec.route, resp.StatusCode, -1)
	}
	kind := upstreamAnswer
	if resp.StatusCode == http.StatusTooManyRequests {
		kind = upstreamLimit
	} else if resp.ContentLength >= 0 && resp.ContentLength <= 4096 {
		// CloudAgent's refusals are small JSON bodies; only those are
		// worth a look.
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		resp.Body = io.NopCloser(bytes.NewReader(b))
		if err != nil {
			return err
		}
		kind, _ = classify(c.rt, resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	switch kind {
	case upstreamLimit:
		if c.rt.Budget() != nil {
			p.Logger.Warn("upstream refused for its limit (max limit exceeded); budget marked spent for a window", "route", c.rt.Name, "account", c.acct.UserName)
			if err := c.rt.Budget().Exhaust(context.WithoutCancel(resp.Request.Context()), c.acct.UserName); err != nil {
				p.Logger.Error("budget store unavailable", "account", c.acct.UserName, "err", err)
			}
		}
	case upstreamTokenRefused:
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
