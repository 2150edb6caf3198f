package proxy

import (
	"context"
	"time"

	"github.com/caproxy/caproxy/cache"
	"github.com/caproxy/caproxy/cloudagent"
	"github.com/caproxy/caproxy/refresh"
	"github.com/redis/go-redis/v9"
)

// Refresher is the refresh scheduler the proxy feeds with demand and
// drives with RunRefresh: AHT requests of the key's account.
type Refresher = refresh.Scheduler[cloudagent.AHTRequest]

// RefreshLease claims the right to refresh key for a short while, so one
// replica refreshes it, not all (Redis: SET NX PX). It reports whether
// this replica got it.
type RefreshLease func(ctx context.Context, key string) (bool, error)

// RedisRefreshLease is a RefreshLease in Redis: SET prefix+key NX PX lease.
// The lease is not released after the refresh: it also keeps the other
// replicas from refreshing the key again until it runs out.
func RedisRefreshLease(client redis.UniversalClient, prefix string, lease time.Duration) RefreshLease {
	return func(ctx context.Context, key string) (bool, error) {
		return client.SetNX(ctx, prefix+key, 1, lease).Result()
	}
}

// outcomeRefreshSkipped is a refresh flight that made no call because the
// budget had no slot above the reserve; a client that joined it fetches
// on its own.
const outcomeRefreshSkipped = "refresh_skipped"

// noteDemand tells the refresher a client asked for key, and reports
// whether the client of a stale entry should get it at once (the budget
// cannot keep every key fresh; the refresher orders the calls).
func (p *Proxy) noteDemand(st *Settings, acct string, key string, req cloudagent.AHTRequest, e *cache.Entry, now time.Time) (serveStale bool) {
	var fetched time.Time
	if e != nil {
		fetched = e.Fetched
	}
	tracked := p.Refresher.Asked(key, acct, req, fetched, now)
	return tracked && e != nil && !e.Fresh(now) && p.Refresher.Scarce(acct)
}

// RunRefresh refreshes what the refresher hands out until ctx ends: through
// the same coalescing group as client misses, the same budget (leaving
// Settings.Reserve slots free) and, when set, the refresh lease.
func (p *Proxy) RunRefresh(ctx context.Context, clock refresh.Clock) {
	p.init()
	p.Refresher.Run(ctx, clock, refresh.RunOptions{}, func(ctx context.Context, job refresh.Job[cloudagent.AHTRequest]) (refresh.Result, time.Time, time.Duration) {
		return p.refreshOne(ctx, job)
	})
}

// refreshOne makes one refresh and says what came of it.
func (p *Proxy) refreshOne(ctx context.Context, job refresh.Job[cloudagent.AHTRequest]) (refresh.Result, time.Time, time.Duration) {
	st := p.settings.Load()
	acct := st.Accounts[job.Group]
	if acct == nil || !st.RefreshAhead {
		return refresh.NotNeeded, time.Time{}, 0
	}
	retry := p.Budget.Window() / time.Duration(max(p.Budget.Limit(), 1))
	lead := p.Refresher.Lead()
	if e, ok := p.Cache.Get(job.Key); ok && p.now().Before(e.FreshUntil.Add(-lead)) {
		return refresh.NotNeeded, e.Fetched, 0
	}
	if p.RefreshLease != nil {
		got, err := p.RefreshLease(ctx, job.Key)
		if err != nil || !got {
			// Another replica refreshes it (or Redis is down: the
			// client path still works); look again after its lease.
			return refresh.Skipped, time.Time{}, lead
		}
	}
	v, shared, err := p.group.Do(ctx, job.Key, func(ctx context.Context) (any, error) {
		return p.fetch(ctx, st, p.ahtCall(acct, job.Key, job.Data), fetchOptions{refresh: true, reserve: st.Reserve, lead: lead}), nil
	})
	if err != nil {
		return refresh.NotNeeded, time.Time{}, 0
	}
	a := v.(*answer)
	var fetched time.Time
	if a.entry != nil {
		fetched = a.entry.Fetched
	}
	switch {
	case a.outcome == outcomeRefreshSkipped:
		return refresh.NoBudget, fetched, retry
	case a.outcome == OutcomeMiss && a.upstreamStatus != 0 && !shared:
		if p.Metrics != nil {
			p.Metrics.Refreshed(job.Reason)
		}
		return refresh.Refreshed, fetched, 0
	case a.outcome == OutcomeMiss || a.outcome == OutcomeHit:
		// Fresh already, or joined a client's call: no call of its own.
		return refresh.NotNeeded, fetched, 0
	}
	return refresh.Failed, fetched, retry
}

// RefreshNext makes, synchronously, the one refresh most worth a call at
// the proxy's clock, if any: its key's reason and what came of it. Tests
// and tools that drive the clock by hand use it instead of RunRefresh.
func (p *Proxy) RefreshNext(ctx context.Context) (reason string, res refresh.Result, ok bool) {
	p.init()
	job, ok := p.Refresher.Next(p.now())
	if !ok {
		return "", 0, false
	}
	res, fetched, retry := p.refreshOne(ctx, job)
	p.Refresher.Done(job, res, fetched, p.now(), retry)
	return job.Reason, res, true
}
