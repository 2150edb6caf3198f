package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/caproxy/caproxy/cache"
	"github.com/caproxy/caproxy/cloudagent"
	"github.com/caproxy/caproxy/cloudagent/sim"
	"github.com/caproxy/caproxy/config"
	"github.com/caproxy/caproxy/credential"
	"github.com/caproxy/caproxy/deadline"
	"github.com/caproxy/caproxy/limit"
	"github.com/caproxy/caproxy/proxy"
	"github.com/caproxy/caproxy/redisconn"
	"github.com/caproxy/caproxy/refresh"
	"github.com/redis/go-redis/v9"
)

// builtinSim is the upstream URL that starts the simulator in-process.
const builtinSim = "builtin:sim"

// deadlineTick is how late, at most, the proxy listener's timeouts fire:
// 5% of the shortest (ReadHeaderTimeout, 5 s).
const deadlineTick = 250 * time.Millisecond

// daemon is a running caproxy: what it was built from, and what a reload
// may change.
type daemon struct {
	path   string
	logger *slog.Logger
	proxy  *proxy.Proxy
	// tokenGuard limits upstream token generations per account.
	tokenGuard *limit.Budget
	// tokens shares upstream tokens between replicas; nil on a single node.
	tokens credential.TokenStore
	// endpoint and client are where token sources generate tokens.
	endpoint *url.URL
	client   *http.Client

	mu  sync.Mutex     // serializes reloads; guards cfg
	cfg *config.Config // the configuration in force
}

// serve runs caproxy with cfg until ctx ends, reloading path on hup.
func serve(ctx context.Context, path string, cfg *config.Config, hup <-chan os.Signal, stderr io.Writer) error {
	logger := newLogger(cfg.Log, stderr)
	upstream := cfg.Upstream.URL
	if upstream == builtinSim {
		u, stop, err := startBuiltinSim(cfg, logger)
		if err != nil {
			return err
		}
		defer stop()
		upstream = u
	}
	endpoint, err := url.Parse(upstream)
	if err != nil {
		return fmt.Errorf("upstream url: %w", err)
	}
	transport := &http.Transport{
		Proxy:                 nil, // the upstream is reached directly: never an open proxy
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          256,
		MaxIdleConnsPerHost:   128,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   5 * time.Second,
		ResponseHeaderTimeout: cfg.Upstream.Timeout,
		ForceAttemptHTTP2:     true,
	}

	c := cache.New(cache.Options{
		MaxEntries:  cfg.Cache.MaxEntries,
		TTL:         cfg.Cache.TTL,
		StaleTTL:    cfg.Cache.StaleTTL,
		NegativeTTL: cfg.Cache.NegativeTTL,
	})
	var store limit.Store
	var shared cache.Shared
	var tokens credential.TokenStore
	var redisStatus *proxy.RedisStatus
	var redisClient redis.UniversalClient
	if cfg.Redis.Enabled() {
		conn, err := openRedis(cfg.Redis, logger)
		if err != nil {
			return err
		}
		defer conn.Close()
		conn.WarmUp(ctx, 2*time.Second) // a failure is logged as "redis is down"
		policy := limit.Deny
		if cfg.Redis.OnFailure == config.RedisShare {
			policy = limit.Share
		}
		store = limit.NewRedisStore(conn.Client, "caproxy:", limit.WithOutagePolicy(policy, cfg.Redis.Replicas))
		shared = cache.NewRedisShared(conn.Client, cache.DefaultSharedPrefix, cache.WithSharedClock(c.Now))
		redisClient = conn.Client
		tokens = credential.NewRedisTokenStore(conn.Client, "caproxy:token:")
		redisStatus = &proxy.RedisStatus{Up: conn.Up, Errors: conn.Errors, OnFailure: cfg.Redis.OnFailure, Replicas: cfg.Redis.Replicas}
		logger.Info("sharing budgets, upstream tokens and cache through redis", "redis", cfg.Redis)
	} else {
		store = limit.NewMemoryStore()
	}
	budget := limit.NewBudget(store, int64(cfg.Limit.UpstreamPerMinute), limit.SendWindow(cfg.Limit.Window))
	tokenGuard := limit.NewBudget(store, int64(cfg.Limit.TokenGenerationsPerHour), time.Hour, limit.WithPrefix("tokengen:"))

	routes, err := proxy.NewRouteTable(append(proxy.DefaultRoutes(), routesOf(cfg.Routes)...), store)
	if err != nil {
		return err
	}

	p := &proxy.Proxy{
		Routes: routes,

		RefuseUnknownPaths: cfg.UnknownPaths == config.UnknownRefuse,
		Upstream:           endpoint,
		Transport:          transport,
		Timeout:            cfg.Upstream.Timeout,
		Cache:              c,
		Shared:             shared,
		Budget:             budget,
		Logger:             logger,
		Redis:              redisStatus,
		AdminToken:         string(cfg.AdminToken),
		Refresher:          refresh.New[cloudagent.AHTRequest](refreshConfig(cfg)),
	}
	if cfg.Redis.Enabled() {
		p.RefreshLease = proxy.RedisRefreshLease(redisClient, "caproxy:refresh:", refreshLease(cfg))
	}
	// Access lines are formatted and written in batches off the
	// requests' path; operational lines go out at once. Closed (every
	// queued line written) after the servers have drained.
	if cfg.Log.Access && logger.Enabled(ctx, slog.LevelInfo) {
		p.AccessLog = proxy.NewAccessLog(stderr, cfg.Log.Format == "json")
		defer p.AccessLog.Close()
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	p.Metrics = proxy.NewMetrics(reg, p)

	d := &daemon{
		path: path, logger: logger, proxy: p, tokenGuard: tokenGuard, tokens: tokens,
		endpoint: endpoint, client: &http.Client{Transport: transport, Timeout: cfg.Upstream.Timeout},
	}
	d.apply(cfg)

	tcpLn, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return err
	}
	// The proxy's timeouts (below) are enforced by one sweeper at
	// deadlineTick rather than a runtime timer update per request.
	ln := deadline.NewListener(tcpLn, deadlineTick)
	adminLn, err := net.Listen("tcp", cfg.AdminListen)
	if err != nil {
		ln.Close()
		return err
	}
	srv := &http.Server{
		Handler:           p,
		MaxHeaderBytes:    proxy.MaxHeaderBytes,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		// Long enough for an upstream call and a wait for budget.
		WriteTimeout: cfg.Upstream.Timeout + cfg.Limit.MaxWait + 10*time.Second,
		IdleTimeout:  120 * time.Second,
		ErrorLog:     slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	admin := &http.Server{Handler: p.AdminHandler(reg), ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 30 * time.Second}

	// Refreshes run while the proxy serves (they do nothing unless
	// cache.refresh_ahead is on) and stop before the drain.
	rctx, stopRefresh := context.WithCancel(context.Background())
	refreshDone := make(chan struct{})
	go func() { defer close(refreshDone); p.RunRefresh(rctx, realClock{}) }()
	defer func() { stopRefresh(); <-refreshDone }()

	errc := make(chan error, 2)
	go func() { errc <- srv.Serve(ln) }()
	go func() { errc <- admin.Serve(adminLn) }()
	logger.Info("caproxy listening", "version", version, "addr", ln.Addr().String(),
		"admin", adminLn.Addr().String(), "upstream", cfg.Upstream.URL, "accounts", len(cfg.Accounts))

	var serveErr error
loop:
	for {
		select {
		case <-hup:
			d.reload()
		case err := <-errc:
			serveErr = err
			break loop
		case <-ctx.Done():
			break loop
		}
	}
	logger.Info("shutting down: draining in-flight requests")
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	shutdownErr := errors.Join(srv.Shutdown(sctx), admin.Shutdown(sctx))
	if serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) {
		return serveErr
	}
	return shutdownErr
}

// reload reads the config file again and applies what may change at run
// time; an invalid file is refused and the running config stays.
func (d *daemon) reload() {
	cfg, err := config.Load(d.path)
	if err != nil {
		d.logger.Error("reload refused: bad config; keeping the running one", "err", oneLine(err))
		return
	}
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
func (d *daemon) apply(cfg *config.Config) {
	d.mu.Lock()
	defer d.mu.Unlock()
	prev := d.proxy.Settings()
	st := &proxy.Settings{
		Accounts:     make(map[string]*proxy.Account, len(cfg.Accounts)),
		ClientAuth:   cfg.ClientAuth != "off",
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
	d.proxy.Budget.SetLimit(int64(cfg.Limit.UpstreamPerMinute))
	d.proxy.Refresher.SetConfig(refreshConfig(cfg))
	d.tokenGuard.SetLimit(int64(cfg.Limit.TokenGenerationsPerHour))
	d.proxy.SetSettings(st)
	d.cfg = cfg
}

func authOf(a *proxy.Account) string {
	if _, ok := a.Upstream.(*credential.TokenSource); ok {
		return "token"
	}
	return "apikey"
}

func (d *daemon) newAccount(a config.Account) *proxy.Account {
	acct := &proxy.Account{UserName: a.UserName, APIKey: a.APIKey}
	if a.Auth == "apikey" {
		acct.Upstream = credential.APIKey(a.APIKey)
	} else {
		acct.Upstream = &credential.TokenSource{
			UserName: a.UserName,
			APIKey:   a.APIKey,
			Endpoint: d.endpoint,
			Client:   d.client,
			Guard:    d.tokenGuard,
			Shared:   d.tokens,
			Logger:   d.logger,
		}
	}
	return acct
}

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
// configured accounts, and returns its URL.
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
	var level slog.Level
	level.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: level}
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

// realClock is the wall clock, for the refresh loop.
type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// routesOf turns config.yaml's routes into the proxy's.
func routesOf(in []config.Route) []proxy.Route {
	out := make([]proxy.Route, 0, len(in))
	for _, r := range in {
		out = append(out, proxy.Route{
			Name: r.Name, Path: r.Path, Methods: r.Methods, Auth: r.Auth,
			BudgetCalls: int64(r.Budget), BudgetWindow: r.Window,
			CacheTTL: r.CacheTTL, StaleTTL: r.StaleTTL, Write: r.Write, ErrorStatus: r.ErrorStatus,
		})
	}
	return out
}
