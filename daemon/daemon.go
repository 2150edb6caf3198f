// Package daemon builds a running caproxy from a config.Config: the cache,
// the budgets and the store they live in (memory, or Redis shared with other
// replicas), the route table, each account's upstream credentials, the
// refresh scheduler, the logs and the metrics; and it applies a reloaded
// config to them. Package main owns what is the process's: listeners, HTTP
// servers, signals and the drain. The proxy tests build their proxies here
// too, so they exercise the wiring the binary runs.
package daemon

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/caproxy/caproxy/accesslog"
	"github.com/caproxy/caproxy/cache"
	"github.com/caproxy/caproxy/cloudagent"
	"github.com/caproxy/caproxy/cloudagent/sim"
	"github.com/caproxy/caproxy/config"
	"github.com/caproxy/caproxy/credential"
	"github.com/caproxy/caproxy/limit"
	"github.com/caproxy/caproxy/observe"
	"github.com/caproxy/caproxy/proxy"
	"github.com/caproxy/caproxy/redisconn"
	"github.com/caproxy/caproxy/refresh"
	"github.com/caproxy/caproxy/route"
)

// Options are the daemon's injectable dependencies. The zero value is
// production: the wall clock, the upstream reached directly, logs on
// stderr, budgets in the store the config selects.
type Options struct {
	// Clock is the time the cache, the budgets, the token sources and the
	// refresh loop read and wait on; nil is the wall clock (the memory
	// budget store then measures on the monotonic clock). The Redis budget
	// store keeps its own time (Redis's and the local wall clock).
	Clock limit.Clock
	// WrapTransport, if not nil, wraps the transport every upstream call
	// goes through (AHT, routes, pass-through, token generation), e.g. to
	// record what caproxy sends.
	WrapTransport func(http.RoundTripper) http.RoundTripper
	// Log receives the operational log and the access log; nil is
	// os.Stderr.
	Log io.Writer
	// Store, if not nil, holds the budgets (AHT, routes, token
	// generations) instead of the store the config selects.
	Store limit.Store
}

// Daemon is a caproxy built from a config: a handler to serve, an admin
// handler, a refresh loop to run, and Reload for a changed config.
type Daemon struct {
	logger    *slog.Logger
	proxy     *proxy.Proxy
	registry  *prometheus.Registry
	accessLog *accesslog.Log // nil when the access log is off
	clock     limit.Clock    // nil: the wall clock
	// tokenGuard limits upstream token generations per account.
	tokenGuard *limit.Budget
	// tokens shares upstream tokens between replicas, or keeps a single
	// node's in its state file; nil on a single node without one.
	tokens credential.TokenStore
	// endpoint and client are where token sources generate tokens.
	endpoint *url.URL
	client   *http.Client
	// closers release what New opened (Redis, the built-in simulator),
	// last opened first.
	closers []func()

	// window is limit.window as the budget was built with: a reload
	// cannot change it, so the refresh scheduler keeps pacing for it.
	window time.Duration

	mu  sync.Mutex     // serializes Reload; guards cfg
	cfg *config.Config // the configuration in force
}

// New builds a caproxy from cfg (loaded and validated by package config).
// With redis configured it connects (waiting up to 2 s, bounded by ctx,
// for a first answer; an unreachable Redis is logged, not an error). Close
// releases what it opened.
func New(ctx context.Context, cfg *config.Config, opts Options) (_ *Daemon, err error) {
	w := opts.Log
	if w == nil {
		w = os.Stderr
	}
	d := &Daemon{logger: newLogger(cfg.Log, w), clock: opts.Clock, window: cfg.Limit.Window}
	defer func() {
		if err != nil {
			d.Close()
		}
	}()
	upstream := cfg.Upstream.URL
	if upstream == config.UpstreamSim {
		u, stop, err := startBuiltinSim(cfg, d.logger)
		if err != nil {
			return nil, err
		}
		d.closers = append(d.closers, stop)
		upstream = u
	}
	if d.endpoint, err = url.Parse(upstream); err != nil {
		return nil, fmt.Errorf("upstream url: %w", err)
	}
	var transport http.RoundTripper = &http.Transport{
		Proxy:                 nil, // the upstream is reached directly: never an open proxy
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          256,
		MaxIdleConnsPerHost:   128,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   5 * time.Second,
		ResponseHeaderTimeout: cfg.Upstream.Timeout,
		ForceAttemptHTTP2:     true,
	}
	if opts.WrapTransport != nil {
		transport = opts.WrapTransport(transport)
	}
	d.client = &http.Client{Transport: transport, Timeout: cfg.Upstream.Timeout}

	var budgetOpts []limit.Option
	var now func() time.Time // nil: each component's own wall clock
	if d.clock != nil {
		now = d.clock.Now
		budgetOpts = append(budgetOpts, limit.WithClock(d.clock))
	}
	c := cache.New(cache.Options{
		MaxEntries:  cfg.Cache.MaxEntries,
		TTL:         cfg.Cache.TTL,
		StaleTTL:    cfg.Cache.StaleTTL,
		NegativeTTL: cfg.Cache.NegativeTTL,
		Now:         now,
	})
	p := &proxy.Proxy{
		RefuseUnknownPaths: cfg.UnknownPaths == config.UnknownRefuse,
		Upstream:           d.endpoint,
		Transport:          transport,
		Timeout:            cfg.Upstream.Timeout,
		MaxAnswer:          int64(cfg.Upstream.MaxAnswer),
		Cache:              c,
		Logger:             d.logger,
		AdminToken:         string(cfg.AdminToken),
		Refresher:          refresh.New[cloudagent.AHTRequest](refreshConfig(cfg)),
	}
	var store limit.Store
	if cfg.Redis.Enabled() {
		conn, err := openRedis(cfg.Redis, d.logger)
		if err != nil {
			return nil, err
		}
		d.closers = append(d.closers, func() { conn.Close() })
		conn.WarmUp(ctx, 2*time.Second) // a failure is logged as "redis is down"
		policy := limit.Deny
		if cfg.Redis.OnFailure == config.RedisShare {
			policy = limit.Share
		}
		store = limit.NewRedisStore(conn.Client, "caproxy:", limit.WithOutagePolicy(policy, cfg.Redis.Replicas))
		p.Shared = cache.NewRedisShared(conn.Client, cache.DefaultSharedPrefix, cache.WithSharedClock(c.Now), cache.WithEntryCeiling(c.MaxEntryBytes))
		p.Redis = &proxy.RedisStatus{Up: conn.Up, Unusable: conn.Unusable, Errors: conn.Errors, OnFailure: cfg.Redis.OnFailure, Replicas: cfg.Redis.Replicas}
		p.RefreshLease = proxy.RedisRefreshLease(conn.Client, "caproxy:refresh:", refreshLease(cfg))
		d.tokens = credential.NewRedisTokenStore(conn.Client, "caproxy:token:")
		pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
		credential.CheckEvictionPolicy(pctx, conn.Client, d.logger) // warns unless noeviction
		pcancel()
		d.logger.Info("sharing budgets, upstream tokens and cache through redis", "redis", cfg.Redis)
	} else if cfg.State.Dir != "" {
		// A single node keeps its budget logs and upstream tokens in its
		// state file, so a restart neither spends a window twice nor
		// generates a token it already has. Tokens are kept per upstream
		// address: the built-in simulator's changes with each start, and
		// its tokens die with it.
		st, err := openState(statePath(cfg), d.endpoint.String(), now, d.logger)
		if err != nil {
			return nil, err
		}
		d.closers = append(d.closers, st.Close)
		store, d.tokens = st.budget, st.tokens
		d.logger.Info("keeping budgets and upstream tokens in the state file", "file", st.db.Path())
	} else {
		mem := limit.NewMemoryStore()
		mem.Now = now
		store = mem
	}
	if opts.Store != nil {
		store = opts.Store
	}
	// The AHT budget counts a call when caproxy sends it, CloudAgent when
	// it arrives: SendWindow is the window plus the margin for that delay.
	p.Budget = limit.NewBudget(store, int64(cfg.Limit.UpstreamPerMinute), limit.SendWindow(cfg.Limit.Window), budgetOpts...)
	d.tokenGuard = limit.NewBudget(store, int64(cfg.Limit.TokenGenerationsPerHour), time.Hour,
		append(budgetOpts, limit.WithPrefix("tokengen:"))...)
	if p.Routes, err = route.NewTable(Routes(cfg), store, budgetOpts...); err != nil {
		return nil, err
	}

	// Access lines are formatted and written in batches off the requests'
	// path; operational lines go out at once. Close writes every queued
	// line.
	if cfg.Log.Access && d.logger.Enabled(ctx, slog.LevelInfo) {
		d.accessLog = accesslog.New(w, cfg.Log.Format == "json")
		p.AccessLog = d.accessLog
	}
	d.registry = prometheus.NewRegistry()
	d.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "caproxy_cache_bytes",
			Help: "Bytes of answer bodies held in the local cache (bounded by cache.max_bytes)."},
			func() float64 { return float64(c.Bytes()) }))
	p.Metrics = observe.NewMetrics(d.registry, p)
	d.proxy = p
	d.apply(cfg)
	return d, nil
}

// Handler is the proxy, for the listener clients call.
func (d *Daemon) Handler() http.Handler { return d.proxy }

// Proxy is the proxy New built, for tests that look inside it. Its fields
// must not change once it serves.
func (d *Daemon) Proxy() *proxy.Proxy { return d.proxy }

// AdminHandler serves /metrics, the probes and /admin (see
// observe.AdminHandler) over the daemon's metrics registry.
func (d *Daemon) AdminHandler() http.Handler { return observe.AdminHandler(d.proxy, d.registry) }

// Logger is the operational log New set up from the config's log settings.
func (d *Daemon) Logger() *slog.Logger { return d.logger }

// RunRefresh runs background refreshes until ctx ends (they do nothing
// unless cache.refresh_ahead is on).
func (d *Daemon) RunRefresh(ctx context.Context) {
	var clock refresh.Clock = d.clock
	if d.clock == nil {
		clock = wallClock{}
	}
	d.proxy.RunRefresh(ctx, clock)
}

// Close writes out the access log and releases Redis and the built-in
// simulator. Call it after the servers have drained and RunRefresh has
// returned.
func (d *Daemon) Close() {
	if d.accessLog != nil {
		d.accessLog.Close()
	}
	for i := len(d.closers) - 1; i >= 0; i-- {
		d.closers[i]()
	}
	d.closers = nil
}

// Reload applies what may change at run time from cfg, a config read
// again: cache lifetimes and size, budgets, limits, accounts. Keys read at
// start only are logged as needing a restart and otherwise ignored.
func (d *Daemon) Reload(cfg *config.Config) {
	d.mu.Lock()
	old := d.cfg
	d.mu.Unlock()
	for _, chg := range []struct {
		name     string
		old, new string
	}{
		{"listen", old.Listen, cfg.Listen},
		{"admin_listen", old.AdminListen, cfg.AdminListen},
		{"admin_token", string(old.AdminToken), string(cfg.AdminToken)},
		{"upstream", fmt.Sprint(old.Upstream), fmt.Sprint(cfg.Upstream)},
		{"redis", fmt.Sprint(old.Redis), fmt.Sprint(cfg.Redis)},
		{"state.dir", old.State.Dir, cfg.State.Dir},
		{"log", fmt.Sprint(old.Log), fmt.Sprint(cfg.Log)},
		{"limit.window", old.Limit.Window.String(), cfg.Limit.Window.String()},
		{"routes", fmt.Sprint(old.Routes), fmt.Sprint(cfg.Routes)},
		{"unknown_paths", old.UnknownPaths, cfg.UnknownPaths},
	} {
		if chg.old != chg.new {
			d.logger.Warn("reload: this key takes effect only on restart", "key", chg.name)
		}
	}
	d.apply(cfg)
	d.logger.Info("config reloaded", "accounts", len(cfg.Accounts))
}

// apply installs cfg's run-time settings, keeping the token source of every
// account whose credentials did not change (a new one would generate a new
// token and log out the old one).
func (d *Daemon) apply(cfg *config.Config) {
	d.mu.Lock()
	defer d.mu.Unlock()
	prev := d.proxy.Settings()
	st := &proxy.Settings{
		Accounts:     make(map[string]*proxy.Account, len(cfg.Accounts)),
		ClientAuth:   cfg.ClientAuth != config.ClientAuthOff,
		MaxWait:      cfg.Limit.MaxWait,
		RefreshAhead: cfg.Cache.RefreshAhead,
		Reserve:      int64(cfg.Limit.Reserve),
	}
	if cfg.Limit.ClientPerMinute > 0 {
		if prev != nil && prev.ClientLimit != nil && d.cfg.Limit.ClientPerMinute == cfg.Limit.ClientPerMinute {
			st.ClientLimit = prev.ClientLimit
		} else {
			st.ClientLimit = limit.NewClientLimit(int64(cfg.Limit.ClientPerMinute))
		}
	}
	for _, a := range cfg.Accounts {
		if prev != nil {
			if old := prev.Accounts[a.UserName]; old != nil && old.APIKey == a.APIKey && authOf(old) == a.Auth {
				st.Accounts[a.UserName] = old
				continue
			}
		}
		st.Accounts[a.UserName] = d.newAccount(a)
	}
	d.proxy.Cache.SetTTLs(cfg.Cache.TTL, cfg.Cache.StaleTTL, cfg.Cache.NegativeTTL)
	d.proxy.Cache.Resize(cfg.Cache.MaxEntries)
	d.proxy.Cache.SetMaxBytes(int64(cfg.Cache.MaxBytes))
	d.proxy.Budget.SetLimit(int64(cfg.Limit.UpstreamPerMinute))
	rc := refreshConfig(cfg)
	rc.Window = d.window
	d.proxy.Refresher.SetConfig(rc)
	d.tokenGuard.SetLimit(int64(cfg.Limit.TokenGenerationsPerHour))
	d.proxy.SetSettings(st)
	d.cfg = cfg
}

// authOf is the auth mode, as config.yaml names it, of a's upstream
// credentials.
func authOf(a *proxy.Account) string {
	if _, ok := a.Upstream.(*credential.TokenSource); ok {
		return config.AuthToken
	}
	return config.AuthAPIKey
}

// newAccount builds a's proxy account with its upstream credentials: its
// apiKey, or a token source of its own.
func (d *Daemon) newAccount(a config.Account) *proxy.Account {
	acct := &proxy.Account{UserName: a.UserName, APIKey: a.APIKey}
	if a.Auth == config.AuthAPIKey {
		acct.Upstream = credential.APIKey(a.APIKey)
		return acct
	}
	ts := &credential.TokenSource{
		UserName: a.UserName,
		APIKey:   a.APIKey,
		Endpoint: d.endpoint,
		Client:   d.client,
		Guard:    d.tokenGuard,
		Shared:   d.tokens,
		Logger:   d.logger,
	}
	if d.clock != nil {
		ts.Now = d.clock.Now
	}
	acct.Upstream = ts
	return acct
}

// Routes is caproxy's route table as cfg configures it: the built-in
// routes, with config.yaml's routes added or replacing those of the same
// name or path (so a configuration written before a built-in route existed
// keeps working).
func Routes(cfg *config.Config) []route.Route {
	out := slices.DeleteFunc(route.Defaults(), func(d route.Route) bool {
		return slices.ContainsFunc(cfg.Routes, func(r config.Route) bool { return r.Path == d.Path && r.Name != d.Name })
	})
	for _, r := range cfg.Routes {
		out = append(out, route.Route{
			Name: r.Name, Path: r.Path, Methods: r.Methods, Auth: r.Auth,
			BudgetCalls: int64(r.Budget), BudgetWindow: r.Window,
			CacheTTL: r.CacheTTL, StaleTTL: r.StaleTTL, Write: r.Write, ErrorStatus: r.ErrorStatus,
		})
	}
	return out
}

// CheckRoutes runs the route table's own checks (names, canonical paths,
// what may be cached) on cfg's routes: what New would refuse.
func CheckRoutes(cfg *config.Config) error {
	_, err := route.NewTable(Routes(cfg), limit.NewMemoryStore())
	return err
}

// redisCommands are the commands the Redis-backed stores run outside
// their scripts: the shared cache (GET, SET, UNLINK, SCAN), the budget
// store's reset (DEL) and the refresh lease (SET NX).
var redisCommands = []string{"GET", "SET", "UNLINK", "SCAN", "DEL"}

// openRedis opens the Redis connection replicas share state through, with
// a log line on each transition of its circuit breaker (go-redis's own
// messages go to the debug log).
func openRedis(r config.Redis, logger *slog.Logger) (*redisconn.Conn, error) {
	redisconn.SetLogger(logger)
	url := r.URL
	if url == "" {
		url = "redis://"
	}
	return redisconn.Open(redisconn.Options{
		URL: url, Addrs: r.Addrs, MasterName: r.MasterName, Timeout: r.Timeout,
		// What the stores run, checked at start and on every reconnect.
		Scripts:  append(limit.RedisScripts(), credential.RedisScripts()...),
		Commands: redisCommands,
		Keys:     []string{"caproxy:check", cache.DefaultSharedPrefix + "check", "caproxy:token:{check}:token", "caproxy:refresh:check"},
		OnUnusable: func(err error) {
			logger.Error("redis answers but caproxy may not use it: grant what is missing; until then it counts as down", "redis", r, "err", err)
		},
		OnChange: func(up bool, err error) {
			if up {
				logger.Info("redis is back: shared budget, tokens and cache in use again", "redis", r)
				return
			}
			attrs := []any{"redis", r, "err", err, "on_failure", r.OnFailure}
			if r.OnFailure == config.RedisShare {
				logger.Warn("redis is down: serving from memory; misses spend this replica's share of the budget", append(attrs, "replicas", r.Replicas)...)
			} else {
				logger.Warn("redis is down: serving from memory; misses without a stale answer are refused (503)", attrs...)
			}
		},
	})
}

// startBuiltinSim serves the simulator on a loopback port, knowing the
// configured accounts, and returns its URL and how to stop it.
func startBuiltinSim(cfg *config.Config, logger *slog.Logger) (string, func(), error) {
	var accounts []sim.Account
	for _, a := range cfg.Accounts {
		accounts = append(accounts, sim.Account{UserName: a.UserName, APIKey: a.APIKey, Auth: a.Auth})
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: sim.New(sim.Options{Accounts: accounts}), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	u := "http://" + ln.Addr().String()
	logger.Info("upstream is the built-in CloudAgent simulator", "url", u)
	return u, func() { srv.Close() }, nil
}

// newLogger builds the process logger from the log settings.
func newLogger(c config.Log, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: c.SlogLevel()}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// refreshConfig is what the refresh scheduler schedules for: the cache's
// ttl and one account's budget, less its reserve.
func refreshConfig(cfg *config.Config) refresh.Config {
	return refresh.Config{
		TTL:       cfg.Cache.TTL,
		Window:    cfg.Limit.Window,
		PerWindow: cfg.Limit.UpstreamPerMinute,
		Reserve:   cfg.Limit.Reserve,
		MaxKeys:   min(cfg.Cache.MaxEntries, 100000),
	}
}

// refreshLease is how long a replica holds the right to refresh a key: a
// quarter of the ttl (the refresh-ahead lead), long enough for one fetch,
// short enough that another replica takes over soon if it dies.
func refreshLease(cfg *config.Config) time.Duration {
	return max(cfg.Cache.TTL/4, 100*time.Millisecond)
}

// wallClock is the wall clock, for the refresh loop.
type wallClock struct{}

func (wallClock) Now() time.Time                         { return time.Now() }
func (wallClock) After(d time.Duration) <-chan time.Time { return time.After(d) }
