// Package observe is caproxy's admin listener: what operators see (health,
// readiness, Prometheus metrics, budgets, profiles) and do (cache purges).
// It reads a proxy.Proxy and is told what it serves through
// proxy.Observer; it serves no client.
package observe

import (
	"crypto/subtle"
	"encoding/json"
	"net/http"
	"net/http/pprof"
	"strconv"
	"time"

	"github.com/caproxy/caproxy/cache"
	"github.com/caproxy/caproxy/cloudagent"
	"github.com/caproxy/caproxy/limit"
	"github.com/caproxy/caproxy/proxy"
	"github.com/caproxy/caproxy/route"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// AdminHandler serves the admin listener of p: /healthz, /readyz, /metrics
// (from g), POST /admin/cache/purge, GET /admin/budget and /debug/pprof/
// (profiles and an execution trace), behind p.AdminToken when it is set.
// It is the one place the admin handler is built, so callers may wrap it
// or mount more on its mux (see Mux).
func AdminHandler(p *proxy.Proxy, g prometheus.Gatherer) http.Handler {
	return guard(p.AdminToken, Mux(p, g))
}

// Mux is AdminHandler's routes without the token check, for a caller that
// mounts pages of its own beside them and guards the whole with Guard.
func Mux(p *proxy.Proxy, g prometheus.Gatherer) *http.ServeMux {
	a := admin{p}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if ready, why := p.Readiness(); !ready {
			// The same test as caproxy_ready, so probes and alerts agree.
			http.Error(w, why, http.StatusServiceUnavailable)
			return
		}
		if p.Degraded() {
			// Still ready: memory serves hits and stale answers, and the
			// outage policy decides misses.
			w.Write([]byte("ready, degraded: redis down; budget " + p.BudgetMode() + "\n"))
			return
		}
		w.Write([]byte("ready\n"))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /debug/pprof/", boundSeconds(pprof.Index))
	mux.HandleFunc("GET /debug/pprof/profile", boundSeconds(pprof.Profile))
	mux.HandleFunc("GET /debug/pprof/trace", boundSeconds(pprof.Trace))
	mux.HandleFunc("POST /admin/cache/purge", a.servePurge)
	mux.HandleFunc("GET /admin/budget", a.serveBudget)
	return mux
}

// Guard asks for "Authorization: Bearer token" on everything h serves but
// /healthz and /readyz; an empty token guards nothing.
func Guard(token string, h http.Handler) http.Handler { return guard(token, h) }

func guard(token string, mux http.Handler) http.Handler {
	if token == "" {
		return mux
	}
	want := []byte("Bearer " + token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Probes stay open: load balancers call them, and they tell nothing.
		if r.URL.Path != "/healthz" && r.URL.Path != "/readyz" &&
			subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="caproxy admin"`)
			cloudagent.WriteError(w, http.StatusUnauthorized, "admin token required")
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// MaxProfileSeconds bounds /debug/pprof/profile?seconds=N.
const MaxProfileSeconds = 20

// boundSeconds wraps a pprof handler so its ?seconds= (a CPU profile's
// length, a delta profile's interval) is 1 to MaxProfileSeconds, and the
// CPU profile's default of 30 s becomes MaxProfileSeconds: nobody can keep
// the process profiling, and the admin listener busy, for long.
func boundSeconds(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if v := q.Get("seconds"); v != "" {
			if n, err := strconv.Atoi(v); err != nil || n <= 0 || n > MaxProfileSeconds {
				cloudagent.WriteError(w, http.StatusBadRequest, "seconds must be 1 to "+strconv.Itoa(MaxProfileSeconds))
				return
			}
		} else if r.URL.Path == "/debug/pprof/profile" {
			q.Set("seconds", strconv.Itoa(MaxProfileSeconds))
			r.URL.RawQuery = q.Encode()
		}
		h(w, r)
	}
}

// admin serves the /admin endpoints of one proxy.
type admin struct{ p *proxy.Proxy }

// servePurge drops cache entries: ?all=true all of them; ?account=A for
// one account; ?account=A&agentId=X or ?account=A&campaignName=Y for one
// key.
func (a admin) servePurge(w http.ResponseWriter, r *http.Request) {
	p := a.p
	q := r.URL.Query()
	// A misspelt parameter (?acount=A) or an empty one (?account=$UNSET)
	// must not widen a purge to the whole cache: anything but the known
	// names is refused, and everything takes an explicit all=true.
	for name := range q {
		if name != "account" && name != "agentId" && name != "campaignName" && name != "all" {
			cloudagent.WriteError(w, http.StatusBadRequest, "unknown purge parameter "+strconv.Quote(name)+"; use all=true, account, agentId or campaignName")
			return
		}
	}
	account, agent, campaign := q.Get("account"), q.Get("agentId"), q.Get("campaignName")
	all := q.Has("all")
	removed, shared := 0, 0
	var err error
	switch {
	case all && (q.Get("all") != "true" || len(q) > 1):
		cloudagent.WriteError(w, http.StatusBadRequest, "all takes the value true and no other parameter")
		return
	case q.Has("account") && account == "":
		cloudagent.WriteError(w, http.StatusBadRequest, "account is empty; to purge everything use all=true")
		return
	case account == "" && (agent != "" || campaign != ""):
		cloudagent.WriteError(w, http.StatusBadRequest, "purging one key needs account")
		return
	case account == "" && !all:
		cloudagent.WriteError(w, http.StatusBadRequest, "say what to purge: all=true, or account=A (with agentId or campaignName for one key)")
		return
	case all:
		removed = p.Cache.Len()
		p.Cache.Purge()
		if p.Shared != nil {
			shared, err = p.Shared.Purge(r.Context())
		}
	case agent == "" && campaign == "":
		removed = p.Cache.PurgeAccount(account)
		if p.Shared != nil {
			shared, err = p.Shared.PurgeAccount(r.Context(), account)
		}
	default:
		req := cloudagent.AHTRequest{UserName: account, AgentID: agent, CampaignName: campaign}
		if msg := req.Validate(); msg != "" {
			cloudagent.WriteError(w, http.StatusBadRequest, msg)
			return
		}
		key := cache.RequestKey(account, req)
		if p.Cache.Remove(key) {
			removed = 1
		}
		if p.Shared != nil {
			var ok bool
			if ok, err = p.Shared.Remove(r.Context(), key); ok {
				shared = 1
			}
		}
	}
	if err != nil {
		p.Logger.Error("shared cache purge failed", "account", account, "err", err)
		cloudagent.WriteError(w, http.StatusBadGateway, "local cache purged; shared cache unavailable")
		return
	}
	p.Logger.Info("cache purged", "account", account, "removed", removed, "removed_shared", shared)
	out := map[string]int{"removed": removed}
	if p.Shared != nil {
		out["removed_shared"] = shared
	}
	writeAdminJSON(w, out)
}

// BudgetState is one account's upstream budget as /admin/budget shows it.
type BudgetState struct {
	Limit     int64      `json:"limit"`
	Remaining int64      `json:"remaining"`
	NextFree  *time.Time `json:"next_free,omitempty"`
	// Mode is the budget in force: proxy.BudgetLocal (single node),
	// proxy.BudgetShared (Redis), or while Redis is down
	// proxy.BudgetDenied (misses refused) or proxy.BudgetLocalShare (this
	// replica's share).
	Mode string `json:"mode"`
	// Routes are the account's budgets on the table routes that have one
	// (cdr_details, say), by route name; the fields above are AHT's.
	Routes map[string]BudgetState `json:"routes,omitempty"`
}

func (a admin) serveBudget(w http.ResponseWriter, r *http.Request) {
	p := a.p
	out := map[string]BudgetState{}
	mode := p.BudgetMode()
	var routes []route.Route
	if p.Routes != nil {
		routes = p.Routes.Routes()
	}
	if st := p.Settings(); st != nil {
		for name := range st.Accounts {
			s, err := budgetState(r, p.Budget, name, mode)
			if err != nil {
				cloudagent.WriteError(w, http.StatusBadGateway, "budget store unavailable")
				return
			}
			for _, rt := range routes {
				if rt.Budget() == nil {
					continue
				}
				rs, err := budgetState(r, rt.Budget(), name, mode)
				if err != nil {
					cloudagent.WriteError(w, http.StatusBadGateway, "budget store unavailable")
					return
				}
				if s.Routes == nil {
					s.Routes = map[string]BudgetState{}
				}
				s.Routes[rt.Name] = rs
			}
			out[name] = s
		}
	}
	writeAdminJSON(w, out)
}

// budgetState reads account's state of b. While Redis is down under the
// deny policy no budget is in force (misses are refused), so the state is
// the limit alone rather than an error.
func budgetState(r *http.Request, b *limit.Budget, account, mode string) (BudgetState, error) {
	bs, err := b.State(r.Context(), account)
	if err != nil {
		if mode == proxy.BudgetDenied {
			return BudgetState{Limit: b.Limit(), Mode: mode}, nil
		}
		return BudgetState{}, err
	}
	s := BudgetState{Limit: bs.Limit, Remaining: bs.Remaining, Mode: mode}
	if !bs.NextFree.IsZero() {
		s.NextFree = &bs.NextFree
	}
	return s, nil
}

func writeAdminJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}
