package proxy

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/caproxy/caproxy/cache"
	"github.com/caproxy/caproxy/cloudagent"
	"github.com/caproxy/caproxy/jsonbody"
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
// why not with writeErr and returns false. The caller may give the body
// back with jsonbody.Release.
func readPost(w http.ResponseWriter, r *http.Request, rec *record, writeErr errorWriter) ([]byte, bool) {
	if r.Method != http.MethodPost {
		rec.outcome = OutcomeInvalid
		w.Header().Set("Allow", http.MethodPost)
		writeErr(w, http.StatusMethodNotAllowed, "method "+r.Method+" not allowed; use POST")
		return nil, false
	}
	body, err := jsonbody.Read(w, r, MaxBodyBytes)
	if err != nil {
		rec.outcome = OutcomeInvalid
		writeBodyError(w, err, writeErr)
		return nil, false
	}
	return body, true
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
		p.Metrics.ServedAge(age)
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

// canonicalBody is what caproxy sends upstream for an AHT question: the
// fields that make the key, so every coalesced waiter gets the answer to
// the same question.
func canonicalBody(req cloudagent.AHTRequest) []byte {
	b, _ := json.Marshal(req) // three strings always marshal
	return b
}
