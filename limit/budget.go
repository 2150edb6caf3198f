package limit

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ulule/limiter/v3"
)

// DefaultBudgetPrefix starts the store keys of a Budget made without
// WithPrefix; the token-generation guard uses another, such as "tokengen:".
const DefaultBudgetPrefix = "budget:"

// State is a budget's standing for one account, for replies, headers,
// metrics and the admin page.
type State struct {
	// Limit is how many calls the window allows.
	Limit int64
	// Remaining is how many of them are free now.
	Remaining int64
	// NextFree is when a call will next be allowed; zero when a slot is
	// free now.
	NextFree time.Time
}

// Clock is the time source a Budget waits on. It must agree with the
// store's clock (the real clock for RedisStore and a default MemoryStore).
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Budget is a per-account allowance of perWindow calls in any trailing
// window, on a sliding-log Store behind ulule's Limiter. It is safe for
// concurrent use, and shared by every replica when its store is shared.
// Make one with NewBudget: a Budget needs a store, so its zero value is not
// usable.
type Budget struct {
	store  Store
	prefix string
	clock  Clock
	// lim holds the ulule Limiter for the current rate; SetLimit swaps
	// in a new one so readers never see a half-updated Rate.
	lim atomic.Pointer[limiter.Limiter]

	// waitMu guards waiting: how many Wait calls are pending per account,
	// so TakeAbove leaves a freed slot to them.
	waitMu  sync.Mutex
	waiting map[string]int
}

// SendWindow is the window caproxy counts its calls to an upstream limit of
// w in: w plus 1/60 (one second a minute). CloudAgent counts a call when it
// arrives and caproxy when it sends it; calls no more than w apart when
// they arrive were sent less than w + w/60 apart whenever the one-way delays
// differ by less than w/60, so a budget of n calls in SendWindow(w) keeps
// CloudAgent's n in w.
func SendWindow(w time.Duration) time.Duration { return w + w/60 }

// Option configures a Budget.
type Option func(*Budget)

// WithPrefix sets the prefix of the budget's store keys (default
// DefaultBudgetPrefix), so several budgets can share one store.
func WithPrefix(prefix string) Option { return func(b *Budget) { b.prefix = prefix } }

// WithClock sets the clock Wait measures and sleeps with (default the real
// clock). Tests pass the fake clock their MemoryStore uses.
func WithClock(c Clock) Option { return func(b *Budget) { b.clock = c } }

// NewBudget returns a budget of perWindow calls per account in any trailing
// window, kept in store.
func NewBudget(store Store, perWindow int64, window time.Duration, opts ...Option) *Budget {
	b := &Budget{store: store, prefix: DefaultBudgetPrefix, clock: realClock{}}
	for _, o := range opts {
		o(b)
	}
	b.lim.Store(limiter.New(store, limiter.Rate{Period: window, Limit: perWindow}))
	return b
}

// SetLimit changes how many calls a window allows, for a live config
// reload. Calls already recorded keep counting against the new limit.
func (b *Budget) SetLimit(perWindow int64) {
	for {
		old := b.lim.Load()
		rate := old.Rate
		rate.Limit = perWindow
		if b.lim.CompareAndSwap(old, limiter.New(b.store, rate)) {
			return
		}
	}
}

// Limit returns how many calls a window allows now.
func (b *Budget) Limit() int64 { return b.lim.Load().Rate.Limit }

// Window returns the length of the trailing window.
func (b *Budget) Window() time.Duration { return b.lim.Load().Rate.Period }

func (b *Budget) key(account string) string { return b.prefix + account }

// Take spends one call of account's budget if a slot is free now. ok tells
// whether it did; st is the standing afterwards.
func (b *Budget) Take(ctx context.Context, account string) (ok bool, st State, err error) {
	lim := b.lim.Load()
	key := b.key(account)
	c, err := lim.Get(ctx, key)
	if err != nil {
		return false, State{}, err
	}
	return b.taken(ctx, key, lim.Rate, c)
}

// TakeAbove is Take for work that may wait (background refreshes): it
// spends a call only if more than reserve slots are free, so at least
// reserve stay for calls that cannot wait. The check and the spending are
// one store operation (Store.GetAbove), so concurrent callers, on any
// replica, never leave fewer than reserve free. While a Wait for account
// is pending on this Budget it spends nothing, whatever the reserve: a
// slot that frees belongs to the caller already waiting for it.
func (b *Budget) TakeAbove(ctx context.Context, account string, reserve int64) (ok bool, st State, err error) {
	lim := b.lim.Load()
	key := b.key(account)
	if b.waiters(account) > 0 {
		st, err := b.State(ctx, account)
		return false, st, err
	}
	c, err := b.store.GetAbove(ctx, key, lim.Rate, reserve)
	if err != nil {
		return false, State{}, err
	}
	return b.taken(ctx, key, lim.Rate, c)
}

// taken is what Take and TakeAbove report for the store's answer c: ok,
// and the standing, with the precise moment of the next free slot when
// none is free.
func (b *Budget) taken(ctx context.Context, key string, rate limiter.Rate, c limiter.Context) (ok bool, st State, err error) {
	ok = !c.Reached
	st = State{Limit: c.Limit, Remaining: c.Remaining}
	if c.Remaining > 0 {
		return ok, st, nil
	}
	// Context.Reset is whole seconds; ask for the precise moment.
	next, err := b.store.NextFree(ctx, key, rate)
	if err != nil {
		if ok {
			// The call is admitted; only the detail is missing.
			return true, st, nil
		}
		return false, st, err
	}
	if next.After(b.clock.Now()) {
		st.NextFree = next
	}
	return ok, st, nil
}

// Wait is Take, but when no slot is free it waits for the exact moment one
// frees and tries again (another caller may take it first), for up to
// maxWait in all. It gives up at once, without waiting, when the next free
// slot is further away than what is left of maxWait, and returns ctx's
// error when ctx ends first.
func (b *Budget) Wait(ctx context.Context, account string, maxWait time.Duration) (ok bool, st State, err error) {
	b.addWaiter(account, 1)
	defer b.addWaiter(account, -1)
	deadline := b.clock.Now().Add(maxWait)
	for {
		ok, st, err = b.Take(ctx, account)
		if err != nil || ok {
			return ok, st, err
		}
		if err := ctx.Err(); err != nil {
			return false, st, err
		}
		if st.NextFree.IsZero() {
			// A slot freed between the refusal and the query: try again.
			continue
		}
		if st.NextFree.After(deadline) {
			return false, st, nil
		}
		select {
		case <-ctx.Done():
			return false, st, ctx.Err()
		case <-b.clock.After(st.NextFree.Sub(b.clock.Now())):
		}
	}
}

// addWaiter counts a Wait for account in (n 1) or out (n -1).
func (b *Budget) addWaiter(account string, n int) {
	b.waitMu.Lock()
	defer b.waitMu.Unlock()
	if b.waiting == nil {
		b.waiting = map[string]int{}
	}
	if b.waiting[account] += n; b.waiting[account] <= 0 {
		delete(b.waiting, account)
	}
}

// waiters returns how many Wait calls for account are pending.
func (b *Budget) waiters(account string) int {
	b.waitMu.Lock()
	defer b.waitMu.Unlock()
	return b.waiting[account]
}

// Exhaust marks account's budget spent for a whole window from now, for
// when the upstream says its limit is exceeded although the budget had
// room (someone else spends the same account).
func (b *Budget) Exhaust(ctx context.Context, account string) error {
	lim := b.lim.Load()
	_, err := lim.Increment(ctx, b.key(account), max(lim.Rate.Limit, 1))
	return err
}

// Release gives back a call Take admitted for account at or before taken
// (read from the budget's clock right after Take) that never reached the
// upstream. Stores that cannot release (not Releasers) keep it counted.
func (b *Budget) Release(ctx context.Context, account string, taken time.Time) error {
	r, ok := b.store.(Releaser)
	if !ok {
		return nil
	}
	return r.Release(ctx, b.key(account), taken)
}

// Now reads the budget's clock.
func (b *Budget) Now() time.Time { return b.clock.Now() }

// State reports account's standing without spending anything.
func (b *Budget) State(ctx context.Context, account string) (State, error) {
	lim := b.lim.Load()
	key := b.key(account)
	c, err := lim.Peek(ctx, key)
	if err != nil {
		return State{}, err
	}
	st := State{Limit: c.Limit, Remaining: c.Remaining}
	if c.Remaining > 0 {
		return st, nil
	}
	next, err := b.store.NextFree(ctx, key, lim.Rate)
	if err != nil {
		return st, err
	}
	if next.After(b.clock.Now()) {
		st.NextFree = next
	}
	return st, nil
}
