// Package statuspage serves caproxy's status page on the admin listener: one
// screen of each account's budget, token, cache, refresh and Redis state,
// built only from what the admin handler already answers (/admin/budget,
// /metrics, /readyz), so it needs nothing from the proxy's internals.
package statuspage

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"html/template"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caproxy/caproxy/cloudagent"
	"github.com/caproxy/caproxy/observe"
)

var (
	//go:embed page.html
	pageHTML string
	//go:embed status.css
	pageCSS string
	//go:embed status.js
	pageJS string

	page = template.Must(template.New("page").Funcs(template.FuncMap{
		"pct":   pct,
		"level": level,
		"num":   num,
		"mulf":  func(f float64) float64 { return f * 100 },
		"age":   age,
	}).Parse(pageHTML))
)

// TokenGenerationsPerHour is CloudAgent's documented cap on token
// generations per account and hour: the page shows generations against it.
const TokenGenerationsPerHour = 10

// TokenGenerationsWarn is where the page marks generations this hour, as
// the CaproxyTokenGenerationsHigh alert does: 3 left of CloudAgent's 10.
const TokenGenerationsWarn = 7

// Wrap returns a handler that serves the status page at / and /status and
// passes every other request to admin. The page's data comes from admin
// itself, called in-process with the request's Authorization header, so the
// page is exactly as protected as /admin/budget: without the admin token
// the caller gets admin's own refusal.
func Wrap(admin http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" && r.URL.Path != "/status" {
			admin.ServeHTTP(w, r)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			cloudagent.WriteError(w, http.StatusMethodNotAllowed, "the status page answers GET")
			return
		}
		s, refusal := Take(admin, r)
		if refusal != nil {
			// Admin's answer as it is: 401 without the token, 502 when the
			// budget store cannot be read.
			maps.Copy(w.Header(), refusal.Header())
			w.WriteHeader(refusal.Code)
			w.Write(refusal.Body.Bytes())
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		// No external assets: everything the page runs is inline.
		w.Header().Set("Content-Security-Policy", "default-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:")
		if r.Method == http.MethodHead {
			return
		}
		if err := page.Execute(w, view{Snapshot: s, CSS: template.CSS(pageCSS), JS: template.JS(pageJS)}); err != nil {
			// Headers are gone; the truncated page shows the failure.
			return
		}
	})
}

type view struct {
	*Snapshot
	CSS template.CSS
	JS  template.JS
}

// Snapshot is what the page shows, read from the admin handler at one
// moment.
type Snapshot struct {
	Taken     time.Time
	Ready     bool
	ReadyText string
	Accounts  []Account
	// Metrics are /metrics's samples; the fields below are read from them.
	Metrics []Sample

	CacheEntries float64
	// Requests counts AHT answers since start by outcome (hit, miss, stale, …).
	Requests    map[string]float64
	Coalesced   float64
	Refreshes   map[string]float64
	RedisUp     *bool // nil: no Redis configured
	RedisErrors float64
	// RefreshTracked is how many keys refresh-ahead tracks; nil when
	// /metrics does not say (no scheduler).
	RefreshTracked *float64
	// UptimeSeconds is since process_start_time_seconds (0 if not exported).
	UptimeSeconds float64
}

// Account is one account's budget and token state.
type Account struct {
	Name      string
	Limit     int64
	Remaining int64
	Used      int64
	Mode      string
	NextFree  *time.Time
	Routes    []Route
	// TokenGenerations is nil for an apikey account (no token).
	TokenGenerations *float64
	TokenFailures    float64
	// TokenAge is seconds since the token in use was generated; nil while
	// none is held (or for an apikey account).
	TokenAge *float64
	// TokenHour is generations in the guard's rolling hour, of
	// TokenHourLimit; nil when unknown (apikey account, guard unreadable).
	TokenHour      *float64
	TokenHourLimit float64
	// Scarce is whether refresh-ahead finds the budget too small to keep
	// every key fresh; nil when /metrics does not say.
	Scarce *bool
}

// ScarceText says whether refresh-ahead finds the account's budget scarce:
// "scarce", "enough", or "" when /metrics does not say.
func (a Account) ScarceText() string {
	switch {
	case a.Scarce == nil:
		return ""
	case *a.Scarce:
		return "scarce"
	}
	return "enough"
}

// TokenHourLevel is the class of the generations-this-hour number: "bad"
// from TokenGenerationsWarn on.
func (a Account) TokenHourLevel() string {
	if a.TokenHour != nil && *a.TokenHour >= TokenGenerationsWarn {
		return "bad"
	}
	return ""
}

// Route is one table route's budget for an account.
type Route struct {
	Name             string
	Limit, Remaining int64
	Used             int64
}

// Take reads a Snapshot from admin with r's credentials. A refusal is
// admin's answer to /admin/budget when it is not 200 (no token, store
// down), to be passed on as it is.
func Take(admin http.Handler, r *http.Request) (s *Snapshot, refusal *httptest.ResponseRecorder) {
	get := func(path string) *httptest.ResponseRecorder {
		req, _ := http.NewRequestWithContext(r.Context(), http.MethodGet, path, nil)
		if a := r.Header.Get("Authorization"); a != "" {
			req.Header.Set("Authorization", a)
		}
		rec := httptest.NewRecorder()
		admin.ServeHTTP(rec, req)
		return rec
	}
	budget := get("/admin/budget")
	if budget.Code != http.StatusOK {
		return nil, budget
	}
	var states map[string]observe.BudgetState // admin's own type
	if err := json.Unmarshal(budget.Body.Bytes(), &states); err != nil {
		rec := httptest.NewRecorder()
		cloudagent.WriteError(rec, http.StatusBadGateway, "admin budget unreadable: "+err.Error())
		return nil, rec
	}
	s = &Snapshot{Taken: time.Now(), Requests: map[string]float64{}, Refreshes: map[string]float64{}}
	ready := get("/readyz")
	s.Ready = ready.Code == http.StatusOK
	s.ReadyText = strings.TrimSpace(ready.Body.String())
	if m := get("/metrics"); m.Code == http.StatusOK {
		s.Metrics = ParseMetrics(m.Body.String())
	}
	gens, fails := map[string]float64{}, map[string]float64{}
	ages, hour, hourLimit, scarce := map[string]float64{}, map[string]float64{}, map[string]float64{}, map[string]bool{}
	for _, m := range s.Metrics {
		switch m.Name {
		case "caproxy_cache_entries":
			s.CacheEntries = m.Value
		case "caproxy_requests_total":
			if m.Labels["route"] == "aht" {
				s.Requests[m.Labels["outcome"]] = m.Value
			}
		case "caproxy_coalesced_requests_total":
			s.Coalesced = m.Value
		case "caproxy_refreshes_total":
			s.Refreshes[m.Labels["reason"]] = m.Value
		case "caproxy_redis_up":
			up := m.Value == 1
			s.RedisUp = &up
		case "caproxy_redis_errors_total":
			s.RedisErrors = m.Value
		case "caproxy_token_generations_total":
			gens[m.Labels["account"]] = m.Value
		case "caproxy_token_generation_failures_total":
			fails[m.Labels["account"]] = m.Value
		case "caproxy_token_age_seconds":
			ages[m.Labels["account"]] = m.Value
		case "caproxy_token_generations_hour":
			hour[m.Labels["account"]] = m.Value
		case "caproxy_token_generations_hour_limit":
			hourLimit[m.Labels["account"]] = m.Value
		case "caproxy_refresh_scarce":
			scarce[m.Labels["account"]] = m.Value == 1
		case "caproxy_refresh_tracked_keys":
			v := m.Value
			s.RefreshTracked = &v
		case "process_start_time_seconds":
			s.UptimeSeconds = float64(s.Taken.Unix()) - m.Value
		}
	}
	for _, name := range slices.Sorted(maps.Keys(states)) {
		b := states[name]
		a := Account{Name: name, Limit: b.Limit, Remaining: b.Remaining, Used: b.Limit - b.Remaining, Mode: b.Mode, NextFree: b.NextFree, TokenFailures: fails[name]}
		if g, ok := gens[name]; ok {
			a.TokenGenerations = &g
		}
		if v, ok := ages[name]; ok {
			a.TokenAge = &v
		}
		if v, ok := hour[name]; ok {
			a.TokenHour = &v
			a.TokenHourLimit = TokenGenerationsPerHour
			if l, ok := hourLimit[name]; ok {
				a.TokenHourLimit = l
			}
		}
		if v, ok := scarce[name]; ok {
			a.Scarce = &v
		}
		for _, rn := range slices.Sorted(maps.Keys(b.Routes)) {
			rb := b.Routes[rn]
			a.Routes = append(a.Routes, Route{Name: rn, Limit: rb.Limit, Remaining: rb.Remaining, Used: rb.Limit - rb.Remaining})
		}
		s.Accounts = append(s.Accounts, a)
	}
	return s, nil
}

// HitRatio is the share of AHT answers served from the cache (fresh hits)
// since start, or -1 before the first answer.
func (s *Snapshot) HitRatio() float64 {
	var all float64
	for _, o := range []string{"hit", "miss", "stale", "bypass"} {
		all += s.Requests[o]
	}
	if all == 0 {
		return -1
	}
	return s.Requests["hit"] / all
}

// Degraded reports whether any account's budget runs without Redis while
// Redis is configured (denied or local_share).
func (s *Snapshot) Degraded() bool {
	return s.RedisUp != nil && !*s.RedisUp
}

// Sample is one line of the Prometheus text format.
type Sample struct {
	Name   string
	Labels map[string]string
	Value  float64
}

// ParseMetrics reads the samples of a Prometheus text exposition, skipping
// comments and lines it cannot read (it needs names, labels and values,
// not timestamps or exemplars).
func ParseMetrics(text string) []Sample {
	var out []Sample
	for line := range strings.Lines(text) {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		s := Sample{Labels: map[string]string{}}
		rest := line
		if i := strings.IndexAny(line, "{ "); i > 0 && line[i] == '{' {
			s.Name = line[:i]
			j := strings.LastIndexByte(line, '}')
			if j < i {
				continue
			}
			parseLabels(line[i+1:j], s.Labels)
			rest = line[j+1:]
		} else if i > 0 {
			s.Name, rest = line[:i], line[i:]
		} else {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		s.Value = v
		out = append(out, s)
	}
	return out
}

func parseLabels(s string, into map[string]string) {
	for s != "" {
		eq := strings.IndexByte(s, '=')
		if eq < 0 || eq+1 >= len(s) || s[eq+1] != '"' {
			return
		}
		name := strings.TrimSpace(strings.TrimLeft(s[:eq], ", "))
		var val strings.Builder
		i := eq + 2
		for ; i < len(s) && s[i] != '"'; i++ {
			if s[i] == '\\' && i+1 < len(s) {
				i++
				if s[i] == 'n' {
					val.WriteByte('\n')
					continue
				}
			}
			val.WriteByte(s[i])
		}
		into[name] = val.String()
		if i >= len(s) {
			return
		}
		s = s[i+1:]
	}
}

func pct(used, limit int64) int64 {
	if limit <= 0 {
		return 0
	}
	return min(100, used*100/limit)
}

// level names a bar's colour: what an operator should feel at a glance.
func level(used, limit int64) string {
	switch p := pct(used, limit); {
	case p >= 90:
		return "crit"
	case p >= 70:
		return "warn"
	}
	return "ok"
}

func num(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

// age writes seconds as an operator reads a token's age: "42 s",
// "12 min", "1 h 05 min".
func age(seconds float64) string {
	d := time.Duration(seconds) * time.Second
	switch {
	case d < time.Minute:
		return strconv.Itoa(int(d.Seconds())) + " s"
	case d < time.Hour:
		return strconv.Itoa(int(d.Minutes())) + " min"
	}
	return fmt.Sprintf("%d h %02d min", int(d.Hours()), int(d.Minutes())%60)
}
