// Package route describes caproxy's routes: for each CloudAgent path, how a
// request is read, which methods it takes, how upstream credentials are
// attached, its budget, whether and how long its answers are cached, and
// the shape of its errors. The proxy serves a request by its Route.
package route

import (
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/caproxy/caproxy/cleanpath"
	"github.com/caproxy/caproxy/cloudagent"
	"github.com/caproxy/caproxy/limit"
)

// Upstream auth styles of a Route: how caproxy attaches the account's
// credentials to the calls it forwards on that route.
const (
	// AuthAPIKey sends the account's apiKey header, whatever the account's
	// mode (the reporting API refuses bearer tokens).
	AuthAPIKey = "apikey"
	// AuthToken sends the account's bearer token. caproxy holds a token only
	// for token-mode accounts; an apikey-mode account sends its apiKey.
	AuthToken = "token"
	// AuthAccount uses the account's own mode (its configured auth).
	AuthAccount = "account"
	// AuthQuery sends the account's apiKey and userName as api_key and
	// username in the query string, as CloudAgent's legacy CAServices API
	// takes them (credential.QueryKey). Clients of such a route may
	// present theirs there too; caproxy replaces them.
	AuthQuery = "query"
)

// Names of the routes served ahead of a Table, as metrics and logs show them.
const (
	NameAHT   = "aht"
	NameToken = "generate_token"
	NameOther = "other"
)

// Reading says how a route reads a request.
type Reading uint8

const (
	// ReadAccount reads only the account the request names (userName in
	// the query or the JSON body, or a caproxy token's account); the body
	// is forwarded as sent. Passed-through routes.
	ReadAccount Reading = iota
	// ReadJSON reads the canonical JSON body (the cache key and what is
	// forwarded) and the account it names. Cached table routes.
	ReadJSON
	// ReadAHT reads AHT's fields as CloudAgent checks them, in its order
	// (userName, then credentials, then shape), keyed by cache.RequestKey.
	ReadAHT
)

// Route is the whole policy of one CloudAgent path, in one place: how a
// request is read, which methods it takes, how upstream credentials are
// attached, how many upstream calls an account may make on it, and whether
// and how long its answers are cached. The proxy finds a request's Route by
// its canonical path (see cleanpath.Canonical): AHT first (see AHT), then a
// Table, then Other; generateToken is answered locally.
type Route struct {
	// Name labels the route in /metrics and the access log. The table is
	// fixed when caproxy starts, so the label is bounded. Lower-case
	// letters, digits and "_".
	Name string
	// Path is the canonical path the route serves. A Path ending in "/*"
	// serves every path under that prefix; the longest match wins, and an
	// exact Path wins over any prefix.
	Path string
	// Methods are the HTTP methods allowed; others are answered 405 here,
	// without an upstream call. Empty allows every method.
	Methods []string
	// Auth is AuthAPIKey, AuthToken, AuthQuery or AuthAccount (the
	// default).
	Auth string
	// BudgetCalls, if positive, is how many upstream calls an account may
	// make on this route in any trailing BudgetWindow, across replicas
	// when the budget store is shared (the same strict sliding budget as
	// AHT's). Over it: a stale answer, then a bounded wait (max_wait),
	// then 429 with Retry-After and LimitMessage.
	BudgetCalls int64
	// BudgetWindow is BudgetCalls' trailing window (default 60s). caproxy
	// counts in a window 1/60 longer, as for AHT, so calls it sends
	// within a window still arrive within CloudAgent's.
	BudgetWindow time.Duration
	// CacheTTL, if positive, caches successful answers that long, keyed by
	// account, method, path, canonical JSON body and sorted query; misses
	// for one key are coalesced. Reads only: a Write route is never cached.
	CacheTTL time.Duration
	// StaleTTL is how long after CacheTTL an answer may still be served
	// when the budget is spent or the upstream fails (default 10m).
	StaleTTL time.Duration
	// Write marks a route whose calls change something (AgentManualDial):
	// never cached, never retried, never coalesced.
	Write bool
	// ErrorStatus is the "status" of the route's error bodies:
	// cloudagent.StatusError (default) or cloudagent.StatusFalse (the
	// reporting and token APIs).
	ErrorStatus string
	// LimitMessage is the message of the route's 429 (default
	// cloudagent.MsgLimitExceeded).
	LimitMessage string
	// BodyMessage, if set, makes a JSON object body required on a cached
	// route: a request without one (its fields sent as query parameters,
	// say) or with invalid JSON is answered 400 with this message here,
	// so it spends none of the route's budget.
	BodyMessage string

	budget *limit.Budget // from BudgetCalls, made by NewTable (AHT: given to AHT)
	prefix string        // Path without "/*", for prefix routes
	read   Reading       // set by check (AHT: ReadAHT)
}

// Defaults are the routes caproxy serves without configuration. Where
// each number comes from is in DESIGN.md ("What production does beyond the
// docs") and in package cloudagent.
func Defaults() []Route {
	return []Route{{
		// GET with a JSON body, apiKey only, 2 calls a minute, one day per
		// call; an answer for a past day does not change, so a short cache
		// serves repeats and a second app without a second upstream call.
		Name: "cdr_details", Path: cloudagent.PathFetchCDRDetails,
		Methods: []string{http.MethodGet}, Auth: AuthAPIKey,
		BudgetCalls: cloudagent.CDRLimit, BudgetWindow: time.Minute, CacheTTL: time.Minute,
		ErrorStatus: cloudagent.StatusFalse, LimitMessage: cloudagent.MsgLimitExceeded,
		BodyMessage: cloudagent.MsgInvalidJSONPassValid,
	}, {
		// Like fetchCDRDetails, paged by query parameters (pageNo,
		// pageSize); its own documented limit is 2 calls a minute.
		Name: "cdr_pages", Path: cloudagent.PathFetchCdrByPagination,
		Methods: []string{http.MethodGet}, Auth: AuthAPIKey,
		BudgetCalls: cloudagent.CDRPaginationLimit, BudgetWindow: time.Minute, CacheTTL: time.Minute,
		ErrorStatus: cloudagent.StatusFalse, LimitMessage: cloudagent.MsgLimitExceeded,
		BodyMessage: cloudagent.MsgInvalidJSONPassValid,
	}, {
		// One call's CDR: a GET with a JSON body (ucid and its day), apiKey
		// only, documented 2 calls a minute; a past call does not change.
		Name: "cdr_by_ucid", Path: cloudagent.PathFetchCdrByUCID,
		Methods: []string{http.MethodGet}, Auth: AuthAPIKey,
		BudgetCalls: cloudagent.CDRByUCIDLimit, BudgetWindow: time.Minute, CacheTTL: time.Minute,
		ErrorStatus: cloudagent.StatusFalse, LimitMessage: cloudagent.MsgLimitExceeded,
		BodyMessage: cloudagent.MsgInvalidJSONPassValid,
	}, {
		// Passed through (an intraday summary changes), under CloudAgent's
		// documented 5 calls a minute, so apps sharing an account cannot
		// push it over.
		Name: "summary_report", Path: cloudagent.PathSummaryReport, Auth: AuthAPIKey,
		BudgetCalls: cloudagent.SummaryReportLimit, BudgetWindow: time.Minute,
		ErrorStatus: cloudagent.StatusFalse, LimitMessage: cloudagent.MsgLimitExceeded,
	}, {
		// The rest of the reporting API: apiKey only, passed through.
		Name: "reports", Path: cloudagent.ReportsPrefix + "*", Auth: AuthAPIKey,
		ErrorStatus: cloudagent.StatusFalse,
	}, {
		// Passed through under CloudAgent's documented 10 calls a minute.
		Name: "agent_details", Path: cloudagent.PathAgentDetails, Auth: AuthAccount,
		BudgetCalls: cloudagent.AgentDetailsLimit, BudgetWindow: time.Minute,
	}, {
		// Agents' live states: passed through (they change by the minute)
		// under CloudAgent's documented 5 calls a minute.
		Name: "agent_logins", Path: cloudagent.PathGetAgentLogins,
		Methods: []string{http.MethodPost}, Auth: AuthAccount,
		BudgetCalls: cloudagent.AgentLoginsLimit, BudgetWindow: time.Minute,
	}, {
		// Places a call: a write.
		Name: "manual_dial", Path: cloudagent.PathAgentManualDial,
		Methods: []string{http.MethodPost}, Auth: AuthAccount, Write: true,
	}, {
		// Writes with no published limit: passed through, never retried.
		Name: "phone_manual_dial", Path: cloudagent.PathPhoneManualDial,
		Methods: []string{http.MethodPost}, Auth: AuthAccount, Write: true,
	}, {
		Name: "call_control", Path: cloudagent.PathCallControl,
		Methods: []string{http.MethodPost}, Auth: AuthAccount, Write: true,
	}, {
		Name: "change_agent_state", Path: cloudagent.PathChangeAgentState,
		Methods: []string{http.MethodPost}, Auth: AuthAccount, Write: true,
	}, {
		// v2/agents/{id}/status: undocumented, no published limit.
		Name: "agent_status", Path: cloudagent.AgentStatusPrefix + "*",
		Methods: []string{http.MethodGet}, Auth: AuthAccount,
	}, {
		// The legacy API (AgentManualDial.php and the rest): credentials
		// in the query string, clients' and upstream alike; no published
		// limit, so passed through. It holds writes (a dial), so nothing
		// on it is cached or retried.
		Name: "legacy", Path: cloudagent.LegacyPrefix + "*", Auth: AuthQuery, Write: true,
	}}
}

var routeNameRe = regexp.MustCompile(`^[a-z][a-z0-9_]{0,31}$`)

// reservedRoutes are names and paths served ahead of the table.
var reservedRoutes = []string{NameAHT, NameToken, NameOther}

// Table finds a request's Route by canonical path. It is read-only
// once made, so safe for concurrent use.
type Table struct {
	exact    map[string]*Route
	prefixes []*Route // longest prefix first
}

// NewTable checks routes and makes their budgets in store (opts as for
// limit.NewBudget; each route's keys get the prefix "route:NAME:"). Routes
// later in the list replace earlier ones of the same Name, so configured
// routes override defaults.
func NewTable(routes []Route, store limit.Store, opts ...limit.Option) (*Table, error) {
	byName := map[string]int{}
	var list []Route
	for _, rt := range routes {
		if i, ok := byName[rt.Name]; ok {
			list[i] = rt
			continue
		}
		byName[rt.Name] = len(list)
		list = append(list, rt)
	}
	t := &Table{exact: map[string]*Route{}}
	var errs []error
	for i := range list {
		rt := &list[i]
		if err := rt.check(); err != nil {
			errs = append(errs, err)
			continue
		}
		if rt.BudgetCalls > 0 {
			rt.budget = limit.NewBudget(store, rt.BudgetCalls, limit.SendWindow(rt.BudgetWindow),
				append(slices.Clip(opts), limit.WithPrefix("route:"+rt.Name+":"))...)
		}
		if p, ok := strings.CutSuffix(rt.Path, "/*"); ok {
			rt.prefix = p + "/"
			t.prefixes = append(t.prefixes, rt)
		} else if _, dup := t.exact[rt.Path]; dup {
			errs = append(errs, fmt.Errorf("route %s: path %s is already routed", rt.Name, rt.Path))
		} else {
			t.exact[rt.Path] = rt
		}
	}
	slices.SortStableFunc(t.prefixes, func(a, b *Route) int { return len(b.prefix) - len(a.prefix) })
	return t, errors.Join(errs...)
}

// check validates rt and fills in defaults.
func (rt *Route) check() error {
	if !routeNameRe.MatchString(rt.Name) || slices.Contains(reservedRoutes, rt.Name) {
		return fmt.Errorf("route %q: name must be 1-32 of a-z, 0-9, _ (starting with a letter) and not %v", rt.Name, reservedRoutes)
	}
	p := strings.TrimSuffix(rt.Path, "/*")
	if canon, err := cleanpath.Canonical(p); err != nil || canon != p || p == "/" {
		return fmt.Errorf("route %s: path %q must be a canonical path such as /ca_apis/Name (or /prefix/*)", rt.Name, rt.Path)
	}
	if p == cloudagent.PathAHT || cloudagent.IsTokenPath(p) {
		return fmt.Errorf("route %s: path %s is served by caproxy itself", rt.Name, p)
	}
	for i, m := range rt.Methods {
		rt.Methods[i] = strings.ToUpper(m)
	}
	switch rt.Auth {
	case "":
		rt.Auth = AuthAccount
	case AuthAPIKey, AuthToken, AuthAccount, AuthQuery:
	default:
		return fmt.Errorf("route %s: auth %q is not %s, %s, %s or %s", rt.Name, rt.Auth, AuthAPIKey, AuthToken, AuthQuery, AuthAccount)
	}
	if rt.BudgetCalls < 0 || rt.BudgetWindow < 0 || rt.CacheTTL < 0 || rt.StaleTTL < 0 {
		return fmt.Errorf("route %s: budget, window and ttls must not be negative", rt.Name)
	}
	if rt.BudgetWindow == 0 {
		rt.BudgetWindow = time.Minute
	}
	if rt.StaleTTL == 0 {
		rt.StaleTTL = 10 * time.Minute
	}
	if rt.Write && rt.CacheTTL > 0 {
		return fmt.Errorf("route %s: a write route cannot be cached", rt.Name)
	}
	if rt.CacheTTL > 0 && slices.ContainsFunc(rt.Methods, isWriteMethod) {
		return fmt.Errorf("route %s: only reads may be cached; drop cache_ttl or the write methods", rt.Name)
	}
	if rt.CacheTTL > 0 && len(rt.Methods) == 0 {
		return fmt.Errorf("route %s: a cached route must list its (read) methods", rt.Name)
	}
	switch rt.ErrorStatus {
	case "":
		rt.ErrorStatus = cloudagent.StatusError
	case cloudagent.StatusError, cloudagent.StatusFalse:
	default:
		return fmt.Errorf("route %s: error_status %q is not %q or %q", rt.Name, rt.ErrorStatus, cloudagent.StatusError, cloudagent.StatusFalse)
	}
	if rt.LimitMessage == "" {
		rt.LimitMessage = cloudagent.MsgLimitExceeded
	}
	rt.read = ReadAccount
	if rt.CacheTTL > 0 && !rt.Write {
		rt.read = ReadJSON
	}
	return nil
}

// isWriteMethod reports methods that change state upstream. CloudAgent
// serves reads as POST too (AHT), so POST is left to the route's Write flag
// and caching is refused only for these.
func isWriteMethod(m string) bool {
	return m == http.MethodPut || m == http.MethodPatch || m == http.MethodDelete
}

// Lookup returns the route serving the canonical path, or nil.
func (t *Table) Lookup(path string) *Route {
	if t == nil {
		return nil
	}
	if rt := t.exact[path]; rt != nil {
		return rt
	}
	for _, rt := range t.prefixes {
		if strings.HasPrefix(path, rt.prefix) {
			return rt
		}
	}
	return nil
}

// Routes returns the table's routes, exact ones first, for documentation
// and the admin port.
func (t *Table) Routes() []Route {
	var out []Route
	for _, rt := range t.exact {
		out = append(out, *rt)
	}
	slices.SortFunc(out, func(a, b Route) int { return strings.Compare(a.Name, b.Name) })
	for _, rt := range t.prefixes {
		out = append(out, *rt)
	}
	return out
}

// WriteError writes the route's CloudAgent-shaped error (AHT's shape for a
// nil route).
func (rt *Route) WriteError(w http.ResponseWriter, code int, msg string) {
	if rt != nil && rt.ErrorStatus == cloudagent.StatusFalse {
		cloudagent.WriteTokenError(w, code, msg)
		return
	}
	cloudagent.WriteError(w, code, msg)
}

// Budget is the route's upstream budget, nil if it has none.
func (rt *Route) Budget() *limit.Budget { return rt.budget }

// Allows reports whether method may be used on rt.
func (rt *Route) Allows(method string) bool {
	return len(rt.Methods) == 0 || slices.Contains(rt.Methods, method)
}

// Reads is how rt reads a request.
func (rt *Route) Reads() Reading { return rt.read }

// AHT is AHT (cloudagent.PathAHT) as a route: POST, read by its own reader
// (ReadAHT), cached with the cache's TTLs, under budget (the account's
// upstream_per_minute).
func AHT(budget *limit.Budget) Route {
	return Route{Name: NameAHT, Path: cloudagent.PathAHT, Methods: []string{http.MethodPost},
		Auth: AuthAccount, ErrorStatus: cloudagent.StatusError, LimitMessage: cloudagent.MsgLimitExceeded,
		read: ReadAHT, budget: budget}
}

// other serves a path outside the table (Other).
var other = Route{Name: NameOther, Auth: AuthAccount, ErrorStatus: cloudagent.StatusError,
	LimitMessage: cloudagent.MsgLimitExceeded, read: ReadAccount}

// Other is the route of a path outside the table: passed through with the
// account's own credentials, no budget of its own, AHT's error shape.
func Other() *Route { return &other }
