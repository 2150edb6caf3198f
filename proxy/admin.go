package proxy

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
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Readier is implemented by upstream credentials that may not be usable yet
// (a token that cannot be generated).
type Readier interface{ Ready() bool }

// Ready reports whether settings are installed and every account's
// credentials are usable or not yet needed.
func (p *Proxy) Ready() bool {
	st := p.settings.Load()
	if st == nil {
		return false
	}
	for _, a := range st.Accounts {
		if r, ok := a.Upstream.(Readier); ok && !r.Ready() {
			return false
		}
	}
	return true
}

// AdminHandler serves the admin listener: /healthz, /readyz, /metrics (from
// g), POST /admin/cache/purge, GET /admin/budget and /debug/pprof/
// (profiles and an execution trace).
func (p *Proxy) AdminHandler(g prometheus.Gatherer) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if !p.Ready() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		if p.Redis != nil && p.Redis.Unusable != nil && p.Redis.Unusable() != nil {
			// A misconfigured Redis user, not an outage: the log says which.
			http.Error(w, "not ready: redis unusable (a permission is missing; see the log)", http.StatusServiceUnavailable)
			return
		}
		if p.degraded() {
			// Still ready: memory serves hits and stale answers, and the
			// outage policy decides misses.
			w.Write([]byte("ready, degraded: redis down; budget " + p.budgetMode() + "\n"))
			return
		}
		w.Write([]byte("ready\n"))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /debug/pprof/", boundSeconds(pprof.Index))
	mux.HandleFunc("GET /debug/pprof/profile", boundSeconds(pprof.Profile))
	mux.HandleFunc("GET /debug/pprof/trace", boundSeconds(pprof.Trace))
	mux.HandleFunc("POST /admin/cache/purge", p.servePurge)
	mux.HandleFunc("GET /admin/budget", p.serveBudget)
	if p.AdminToken == "" {
		return mux
	}
	want := []byte("Bearer " + p.AdminToken)
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

// servePurge drops cache entries: all of them; ?account=A for one account;
// ?account=A&agentId=X or ?account=A&campaignName=Y for one key.
func (p *Proxy) servePurge(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	// A misspelt parameter (?acount=A) must not widen a purge to the whole
	// cache: anything but the three known names is refused, nothing purged.
	for name := range q {
		if name != "account" && name != "agentId" && name != "campaignName" {
			cloudagent.WriteError(w, http.StatusBadRequest, "unknown purge parameter "+strconv.Quote(name)+"; use account, agentId or campaignName")
			return
		}
	}
	account, agent, campaign := q.Get("account"), q.Get("agentId"), q.Get("campaignName")
	removed, shared := 0, 0
	var err error
	switch {
	case account == "" && (agent != "" || campaign != ""):
		cloudagent.WriteError(w, http.StatusBadRequest, "purging one key needs account")
		return
	case account == "":
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
	// Mode is the budget in force: BudgetLocal (single node),
	// BudgetShared (Redis), or while Redis is down BudgetDenied (misses
	// refused) or BudgetLocalShare (this replica's share).
	Mode string `json:"mode"`
	// Routes are the account's budgets on the table routes that have one
	// (cdr_details, say), by route name; the fields above are AHT's.
	Routes map[string]BudgetState `json:"routes,omitempty"`
}

func (p *Proxy) serveBudget(w http.ResponseWriter, r *http.Request) {
	out := map[string]BudgetState{}
	mode := p.budgetMode()
	var routes []Route
	if p.Routes != nil {
		routes = p.Routes.Routes()
	}
	if st := p.settings.Load(); st != nil {
		for name := range st.Accounts {
			s, err := budgetState(r, p.Budget, name, mode)
			if err != nil {
				cloudagent.WriteError(w, http.StatusBadGateway, "budget store unavailable")
				return
			}
			for _, rt := range routes {
				if rt.budget == nil {
					continue
				}
				rs, err := budgetState(r, rt.budget, name, mode)
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
		if mode == BudgetDenied {
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
