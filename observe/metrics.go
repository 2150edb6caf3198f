package observe

import (
	"context"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/caproxy/caproxy/proxy"
	"github.com/caproxy/caproxy/refresh"
)

// Metrics are caproxy's Prometheus metrics, a proxy.Observer. Labels carry
// routes, outcomes, HTTP statuses and configured account names only, never
// agent or campaign ids, so their number stays bounded.
type Metrics struct {
	requests         *prometheus.CounterVec
	upstreamCalls    *prometheus.CounterVec
	upstreamDuration *prometheus.HistogramVec
	coalesced        prometheus.Counter
	sharedLookups    *prometheus.CounterVec
	refreshes        *prometheus.CounterVec
	servedAge        prometheus.Histogram

	// ahtRequests caches the AHT route's counters so a hit does no label lookup.
	ahtRequests map[string]prometheus.Counter
}

// NewMetrics creates p's metrics and registers them, with gauges that read
// p's cache, coalescing group, budget and tokens when scraped, on reg.
func NewMetrics(reg prometheus.Registerer, p *proxy.Proxy) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "caproxy_requests_total",
			Help: "Requests answered, by route and outcome.",
		}, []string{"route", "outcome"}),
		upstreamCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "caproxy_upstream_requests_total",
			Help: "Calls made to the upstream, by route and HTTP status.",
		}, []string{"route", "status"}),
		upstreamDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "caproxy_upstream_duration_seconds",
			Help:    "Upstream call latency, by route.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 12),
		}, []string{"route"}),
		coalesced: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "caproxy_coalesced_requests_total",
			Help: "AHT misses that shared another request's upstream call.",
		}),
		sharedLookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "caproxy_shared_cache_lookups_total",
			Help: "Lookups in the cache level replicas share, by result (hit, miss, error).",
		}, []string{"result"}),
		refreshes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "caproxy_refreshes_total",
			Help: "Background refreshes that called the upstream, by reason (missing, stale, ahead).",
		}, []string{"reason"}),
		servedAge: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "caproxy_served_age_seconds",
			Help:    "Age of the AHT answers served (the Age header).",
			Buckets: []float64{0, 1, 2, 5, 10, 20, 30, 45, 60, 90, 120, 180, 300, 600},
		}),
		ahtRequests: map[string]prometheus.Counter{},
	}
	for _, o := range proxy.Outcomes {
		m.ahtRequests[o] = m.requests.WithLabelValues(proxy.RouteAHT, o)
	}
	// A labelled counter is exported only once a label value is used; create
	// the fixed ones now so /metrics shows every series the README lists (at
	// 0) from the start, not only after the first shared lookup or refresh.
	for _, result := range []string{"hit", "miss", "error"} {
		m.sharedLookups.WithLabelValues(result)
	}
	for _, reason := range []string{refresh.ReasonMissing, refresh.ReasonStale, refresh.ReasonAhead} {
		m.refreshes.WithLabelValues(reason)
	}
	reg.MustRegister(m.requests, m.upstreamCalls, m.upstreamDuration, m.coalesced, m.sharedLookups, m.refreshes, m.servedAge,
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "caproxy_access_log_dropped_total",
			Help: "Access-log lines dropped because the log writer fell behind (a request never waits for it).",
		}, func() float64 {
			if p.AccessLog == nil {
				return 0
			}
			return float64(p.AccessLog.Dropped())
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "caproxy_coalesced_waiters",
			Help: "Requests now waiting on another request's upstream call.",
		}, func() float64 { return float64(p.Waiters()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "caproxy_cache_entries",
			Help: "AHT answers held in the cache.",
		}, func() float64 { return float64(p.Cache.Len()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "caproxy_ready",
			Help: "1 while the replica is ready to serve (what /readyz answers 200 for), else 0.",
		}, func() float64 { ready, _ := p.Readiness(); return bool01(ready) }),
		accountCollector{p},
	)
	if _, ok := p.RefreshTracked(); ok {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "caproxy_refresh_tracked_keys",
			Help: "Keys the refresh-ahead scheduler tracks demand for.",
		}, func() float64 { n, _ := p.RefreshTracked(); return float64(n) }))
	}
	reg.MustRegister(redisCollectors(p.Redis)...)
	return m
}

// Request counts a request answered on route with outcome.
func (m *Metrics) Request(route, outcome string) {
	if route == proxy.RouteAHT {
		if c, ok := m.ahtRequests[outcome]; ok {
			c.Inc()
			return
		}
	}
	if route == "" {
		return
	}
	m.requests.WithLabelValues(route, outcome).Inc()
}

// UpstreamCall counts an upstream call on route answered with status
// after took; a negative took (a streamed pass-through) is not timed.
func (m *Metrics) UpstreamCall(route string, status int, took time.Duration) {
	m.upstreamCalls.WithLabelValues(route, strconv.Itoa(status)).Inc()
	if took >= 0 {
		m.upstreamDuration.WithLabelValues(route).Observe(took.Seconds())
	}
}

// Coalesced counts a miss that shared another request's upstream call.
func (m *Metrics) Coalesced() { m.coalesced.Inc() }

// ServedAge records the Age of an AHT answer served.
func (m *Metrics) ServedAge(seconds int) { m.servedAge.Observe(float64(seconds)) }

// Refreshed counts a background refresh that called the upstream.
func (m *Metrics) Refreshed(reason string) { m.refreshes.WithLabelValues(reason).Inc() }

// SharedLookup counts a lookup in the shared cache level.
func (m *Metrics) SharedLookup(hit bool, err error) {
	switch {
	case err != nil:
		m.sharedLookups.WithLabelValues("error").Inc()
	case hit:
		m.sharedLookups.WithLabelValues("hit").Inc()
	default:
		m.sharedLookups.WithLabelValues("miss").Inc()
	}
}

// TokenCounter is implemented by upstream credentials that generate tokens.
type TokenCounter interface {
	Generations() int64
	Failures() int64
}

// accountCollector reports per-account state read at scrape time.
type accountCollector struct{ p *proxy.Proxy }

var (
	budgetRemainingDesc = prometheus.NewDesc("caproxy_budget_remaining",
		"Upstream AHT calls the account may still make in the trailing window.", []string{"account"}, nil)
	budgetUsedDesc = prometheus.NewDesc("caproxy_budget_used",
		"Upstream calls the account made in the route's trailing window (route=\"aht\" is AHT's budget).", []string{"account", "route"}, nil)
	budgetLimitDesc = prometheus.NewDesc("caproxy_budget_limit",
		"Upstream calls the route's budget allows the account per window (limit.upstream_per_minute for aht, routes[].budget otherwise).", []string{"account", "route"}, nil)
	tokenGenerationsDesc = prometheus.NewDesc("caproxy_token_generations_total",
		"Upstream tokens generated.", []string{"account"}, nil)
	tokenPausesDesc = prometheus.NewDesc("caproxy_token_recovery_pauses_total",
		"Pauses of token generation after CloudAgent refused a freshly generated token.", []string{"account"}, nil)
	tokenFailuresDesc = prometheus.NewDesc("caproxy_token_generation_failures_total",
		"Upstream token generations that failed or were refused by the hourly limit.", []string{"account"}, nil)
	tokenAgeDesc = prometheus.NewDesc("caproxy_token_age_seconds",
		"Seconds since the account's upstream token in use was generated (absent while none is held).", []string{"account"}, nil)
	tokenHourDesc = prometheus.NewDesc("caproxy_token_generations_hour",
		"Upstream token generations in the rolling hour, as the generation guard counts them (every replica's with Redis).", []string{"account"}, nil)
	tokenHourLimitDesc = prometheus.NewDesc("caproxy_token_generations_hour_limit",
		"Upstream token generations the guard allows per rolling hour (limit.token_generations_per_hour; CloudAgent allows 10).", []string{"account"}, nil)
	refreshScarceDesc = prometheus.NewDesc("caproxy_refresh_scarce",
		"1 while the account's budget cannot keep every key it asks for fresh (refresh-ahead left missing or stale keys waiting), else 0.", []string{"account"}, nil)
)

func (c accountCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{budgetRemainingDesc, budgetUsedDesc, budgetLimitDesc,
		tokenGenerationsDesc, tokenFailuresDesc, tokenPausesDesc, tokenAgeDesc, tokenHourDesc, tokenHourLimitDesc, refreshScarceDesc} {
		ch <- d
	}
}

func (c accountCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.p.Settings()
	if st == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	budgets := c.p.Budgets()
	_, refreshing := c.p.RefreshTracked()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for name, a := range st.Accounts {
		for _, nb := range budgets {
			// The limit is configuration: exported even while the store
			// cannot be read (Redis down under the deny policy).
			gauge(budgetLimitDesc, float64(nb.Budget.Limit()), name, nb.Route)
			bs, err := nb.Budget.State(ctx, name)
			if err != nil {
				continue
			}
			gauge(budgetUsedDesc, float64(bs.Limit-bs.Remaining), name, nb.Route)
			if nb.Route == proxy.RouteAHT {
				gauge(budgetRemainingDesc, float64(bs.Remaining), name)
			}
		}
		if refreshing {
			gauge(refreshScarceDesc, bool01(c.p.RefreshScarce(name)), name)
		}
		if tc, ok := a.Upstream.(TokenCounter); ok {
			ch <- prometheus.MustNewConstMetric(tokenGenerationsDesc, prometheus.CounterValue, float64(tc.Generations()), name)
			ch <- prometheus.MustNewConstMetric(tokenFailuresDesc, prometheus.CounterValue, float64(tc.Failures()), name)
			if rp, ok := a.Upstream.(interface{ RecoveryPauses() int64 }); ok {
				ch <- prometheus.MustNewConstMetric(tokenPausesDesc, prometheus.CounterValue, float64(rp.RecoveryPauses()), name)
			}
		}
		if tr, ok := a.Upstream.(proxy.TokenReporter); ok {
			if age, ok := tr.TokenAge(); ok {
				gauge(tokenAgeDesc, age.Seconds(), name)
			}
			if used, allowed, err := tr.GenerationsThisHour(ctx); err == nil {
				gauge(tokenHourDesc, float64(used), name)
				gauge(tokenHourLimitDesc, float64(allowed), name)
			}
		}
	}
}

func bool01(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// redisCollectors are the metrics about Redis: caproxy_redis_up and
// caproxy_redis_errors_total (none without Redis).
func redisCollectors(r *proxy.RedisStatus) []prometheus.Collector {
	if r == nil {
		return nil
	}
	return []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "caproxy_redis_up",
			Help: "1 while the Redis replicas share state through answers, 0 while it is down (circuit open).",
		}, func() float64 { return bool01(r.Up()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "caproxy_redis_errors_total",
			Help: "Redis calls that failed because Redis was unreachable, slow or not serving.",
		}, func() float64 { return float64(r.Errors()) }),
	}
}
