package proxy

import (
	"github.com/prometheus/client_golang/prometheus"
)

// RedisStatus is how the proxy sees the Redis its replicas share state
// through, for metrics, /readyz and /admin/budget.
type RedisStatus struct {
	// Up reports whether Redis is answering (the circuit is closed).
	Up func() bool
	// Unusable, if not nil, returns why Redis answers but cannot be used
	// (a permission missing), or nil: /readyz is then not ready.
	Unusable func() error
	// Errors returns how many Redis calls have failed so far.
	Errors func() int64
	// OnFailure is the outage policy: "deny" or "share".
	OnFailure string
	// Replicas is how many replicas share the budget (for "share").
	Replicas int
}

// Budget modes shown by /admin/budget.
const (
	// BudgetShared: the budget all replicas share in Redis is in force.
	BudgetShared = "shared"
	// BudgetLocal: no Redis configured; this node's own budget.
	BudgetLocal = "local"
	// BudgetDenied: Redis is down under on_failure deny: no upstream call.
	BudgetDenied = "denied"
	// BudgetLocalShare: Redis is down under on_failure share: this
	// replica spends at most its share alone.
	BudgetLocalShare = "local_share"
)

// budgetMode names the budget in force now.
func (p *Proxy) budgetMode() string {
	switch {
	case p.Redis == nil:
		return BudgetLocal
	case p.Redis.Up():
		return BudgetShared
	case p.Redis.OnFailure == "share":
		return BudgetLocalShare
	}
	return BudgetDenied
}

// degraded reports whether Redis is configured and down.
func (p *Proxy) degraded() bool { return p.Redis != nil && !p.Redis.Up() }

// redisCollectors are the metrics about Redis: caproxy_redis_up and
// caproxy_redis_errors_total.
func (p *Proxy) redisCollectors() []prometheus.Collector {
	if p.Redis == nil {
		return nil
	}
	return []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "caproxy_redis_up",
			Help: "1 while the Redis replicas share state through answers, 0 while it is down (circuit open).",
		}, func() float64 {
			if p.Redis.Up() {
				return 1
			}
			return 0
		}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "caproxy_redis_errors_total",
			Help: "Redis calls that failed because Redis was unreachable, slow or not serving.",
		}, func() float64 { return float64(p.Redis.Errors()) }),
	}
}
