// Package limit keeps caproxy inside CloudAgent's rate limits.
//
// Its job is promise 2 of the design: at most N upstream calls per account
// in ANY trailing window, across all replicas. ulule/limiter's own stores
// count per fixed window (opened by a key's first hit), so N calls just
// before a window ends plus N just after pass 2N in far less than one
// window. This package therefore provides strict sliding-log
// implementations of ulule's limiter.Store (MemoryStore for one node,
// BoltStore for one node that keeps its logs across restarts in a file,
// RedisStore for replicas sharing Redis); a Budget on top of ulule's
// Limiter for the per-account upstream budget and the token-generation
// guard; and a ClientLimit that keeps ulule's fixed-window memory store and
// headers for the optional per-client inbound limit, where 2x at a window
// edge is harmless.
package limit

import (
	"context"
	"time"

	"github.com/ulule/limiter/v3"
)

// Store is a strict sliding-log limiter.Store with one extra, precise query.
//
// The limiter.Store methods behave as follows, for window rate.Period and
// limit rate.Limit:
//
//   - Get admits a call only if fewer than rate.Limit calls were recorded in
//     the trailing window (now-Period, now], and then records it. A refused
//     Get records nothing, so hammering a spent key does not push its
//     recovery further out. Reached is true exactly when the call was
//     refused.
//   - GetAbove (Store's own) is Get that admits only while more than reserve
//     slots are free, in the same one atomic step.
//   - Peek reports without recording; Reached there means a Get now would be
//     refused.
//   - Increment records count calls now, unconditionally, even beyond the
//     limit (used to mark a budget spent when the upstream refuses anyway:
//     count >= Limit keeps the key spent for one whole window from now).
//     count <= 0 records nothing. Reached as for Peek.
//   - Reset forgets every call recorded for key.
//
// In every returned limiter.Context, Remaining is the number of free slots
// now and Reset is the unix time, in seconds rounded up, at which the next
// slot frees: when every slot is taken, the moment a Get will succeed
// again; otherwise the moment the oldest recorded call leaves the window.
// With nothing recorded, Reset is now (rounded up): nothing is held.
type Store interface {
	limiter.Store
	// NextFree returns the earliest time at which a Get for key would be
	// admitted: now when a slot is free now. Unlike Context.Reset it is not
	// rounded to seconds. A rate.Limit of zero or less never frees a slot;
	// NextFree then reports one full window from now, so callers back off
	// instead of spinning.
	NextFree(ctx context.Context, key string, rate limiter.Rate) (time.Time, error)
	// GetAbove is Get for calls that must leave reserve slots free: it
	// admits and records a call only if more than reserve are free now,
	// checking and recording in one atomic step, so concurrent callers
	// (and replicas) never eat into the reserve. Reached is true exactly
	// when the call was refused. A reserve of 0 or less is Get.
	GetAbove(ctx context.Context, key string, rate limiter.Rate, reserve int64) (limiter.Context, error)
}

// Releaser is a Store that can take back a call it admitted that was never
// made (the upstream could not be reached), so the slot is free again.
type Releaser interface {
	// Release forgets the newest single call admitted by Get for key at or
	// before at (on the store's clock); none such is no error.
	Release(ctx context.Context, key string, at time.Time) error
}

// call is one entry of a sliding log: n calls recorded at one instant (unix
// nanoseconds in memory, microseconds in Redis). Weighted entries keep an
// Increment of any count a single entry.
type call struct {
	at int64
	n  int64
}

// untilFree returns, for a log already pruned to the window and ordered
// oldest first, how long after now Store's "next slot frees" moment is:
// with every slot taken, until a Get succeeds again; otherwise until the
// oldest call leaves; zero for an empty log. A limit <= 0 never frees and
// reports a whole period.
func untilFree(calls []call, total, limit, period, now int64) int64 {
	if total == 0 && limit > 0 {
		return 0
	}
	// A Get succeeds once total-limit+1 calls (at least the oldest one)
	// have left the window.
	drop := max(total-limit+1, 1)
	var gone int64
	for _, c := range calls {
		gone += c.n
		if gone >= drop {
			return max(c.at+period-now, 0)
		}
	}
	return period
}

// makeContext builds a limiter.Context in Store's conventions from a log's
// total and the time until its next slot frees.
func makeContext(limit, total int64, now time.Time, untilFree time.Duration, reached bool) limiter.Context {
	return limiter.Context{
		Limit:     limit,
		Remaining: max(limit-total, 0),
		Reset:     ceilUnix(now.Add(untilFree)),
		Reached:   reached,
	}
}

// ceilUnix is t in unix seconds rounded up, so a client told to come back
// at Reset never comes back too early.
func ceilUnix(t time.Time) int64 {
	s := t.Unix()
	if t.Nanosecond() > 0 {
		s++
	}
	return s
}
