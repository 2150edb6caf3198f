package proxy

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

// Budget modes, as /admin/budget shows them.
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

// BudgetMode names the budget in force now (BudgetLocal, BudgetShared,
// BudgetDenied or BudgetLocalShare).
func (p *Proxy) BudgetMode() string {
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

// Degraded reports whether Redis is configured and down.
func (p *Proxy) Degraded() bool { return p.Redis != nil && !p.Redis.Up() }
