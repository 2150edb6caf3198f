package limit

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/ulule/limiter/v3"

	"github.com/caproxy/caproxy/internal/fakeclock"
	"github.com/caproxy/caproxy/internal/redistest"
)

// storeKit is one Store under test with its notion of time: a fake clock
// for MemoryStore and BoltStore, the real clock (short sleeps) for
// RedisStore.
type storeKit struct {
	name  string
	store Store
	now   func() time.Time
	sleep func(d time.Duration)
	// slack is how far a reported time may sit from the ideal one:
	// zero on the fake clock; for Redis, the time a round trip takes
	// plus the server's microsecond resolution.
	slack time.Duration
}

func (k storeKit) sleepUntil(t time.Time) { k.sleep(t.Sub(k.now())) }

func memoryKit() storeKit {
	clock := fakeclock.New(t0)
	return storeKit{
		name:  "memory",
		store: &MemoryStore{Now: clock.Now},
		now:   clock.Now,
		sleep: clock.Advance,
	}
}

func redisKit(t testing.TB, addr string) storeKit {
	client := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { client.Close() })
	return storeKit{
		name:  "redis",
		store: NewRedisStore(client, "test:"+t.Name()+":"),
		now:   time.Now,
		sleep: time.Sleep,
		slack: 50 * time.Millisecond,
	}
}

// must fails the test on a store error: must(t)(store.Get(...)).
func must(t *testing.T) func(limiter.Context, error) limiter.Context {
	return func(c limiter.Context, err error) limiter.Context {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
}

// within fails unless got is in [lo-slack, hi+slack].
func within(t *testing.T, what string, got, lo, hi time.Time, slack time.Duration) {
	t.Helper()
	if got.Before(lo.Add(-slack)) || got.After(hi.Add(slack)) {
		t.Fatalf("%s = %v, want within [%v, %v] ± %v", what, got.Format(time.StampMicro),
			lo.Format(time.StampMicro), hi.Format(time.StampMicro), slack)
	}
}

var long = limiter.Rate{Period: time.Minute, Limit: 5}

// conformance is what every Store must do, whatever keeps its logs.
var conformance = []struct {
	name string
	run  func(t *testing.T, k storeKit)
}{
	{"get fills then refuses", func(t *testing.T, k storeKit) {
		ctx := context.Background()
		for i := range long.Limit {
			c := must(t)(k.store.Get(ctx, "a", long))
			if c.Reached || c.Remaining != long.Limit-1-i || c.Limit != long.Limit {
				t.Fatalf("Get #%d = %+v", i+1, c)
			}
		}
		c := must(t)(k.store.Get(ctx, "a", long))
		if !c.Reached || c.Remaining != 0 {
			t.Fatalf("Get over the limit = %+v, want Reached, Remaining 0", c)
		}
	}},
	{"keys are independent", func(t *testing.T, k storeKit) {
		ctx := context.Background()
		for range long.Limit {
			must(t)(k.store.Get(ctx, "a", long))
		}
		if c := must(t)(k.store.Get(ctx, "b", long)); c.Reached {
			t.Fatalf("Get on another key = %+v", c)
		}
	}},
	{"release gives one slot back", func(t *testing.T, k storeKit) {
		ctx := context.Background()
		rel := k.store.(Releaser)
		if err := rel.Release(ctx, "a", k.now()); err != nil {
			t.Fatalf("Release on an empty key: %v", err)
		}
		early := k.now()
		k.sleep(10 * time.Millisecond)
		for range long.Limit - 1 {
			must(t)(k.store.Get(ctx, "a", long))
		}
		taken := k.now()
		k.sleep(10 * time.Millisecond)
		must(t)(k.store.Get(ctx, "a", long)) // the last slot, after taken
		if err := rel.Release(ctx, "a", early); err != nil {
			t.Fatal(err)
		}
		if c := must(t)(k.store.Peek(ctx, "a", long)); c.Remaining != 0 {
			t.Fatalf("Release before any call freed a slot: %+v", c)
		}
		if err := rel.Release(ctx, "a", taken); err != nil {
			t.Fatal(err)
		}
		if c := must(t)(k.store.Peek(ctx, "a", long)); c.Remaining != 1 {
			t.Fatalf("after Release: %+v, want 1 remaining", c)
		}
		if c := must(t)(k.store.Get(ctx, "a", long)); c.Reached {
			t.Fatalf("Get after Release refused: %+v", c)
		}
		if c := must(t)(k.store.Get(ctx, "a", long)); !c.Reached {
			t.Fatalf("Release gave back more than one slot: %+v", c)
		}
	}},
	{"peek records nothing", func(t *testing.T, k storeKit) {
		ctx := context.Background()
		for range 20 {
			c := must(t)(k.store.Peek(ctx, "a", long))
			if c.Reached || c.Remaining != long.Limit {
				t.Fatalf("Peek on a fresh key = %+v", c)
			}
		}
		for i := range long.Limit {
			if c := must(t)(k.store.Get(ctx, "a", long)); c.Reached {
				t.Fatalf("Get #%d after peeks refused", i+1)
			}
		}
		if c := must(t)(k.store.Peek(ctx, "a", long)); !c.Reached || c.Remaining != 0 {
			t.Fatalf("Peek on a full key = %+v, want Reached", c)
		}
	}},
	{"reset header rounds up", func(t *testing.T, k storeKit) {
		ctx := context.Background()
		before := k.now()
		c := must(t)(k.store.Peek(ctx, "a", long))
		after := k.now()
		if c.Reset < ceilUnix(before) || c.Reset > ceilUnix(after.Add(k.slack)) {
			t.Fatalf("Reset on an empty key = %d, want ceil(now) = %d", c.Reset, ceilUnix(before))
		}
		before = k.now()
		c = must(t)(k.store.Get(ctx, "a", long))
		after = k.now()
		lo, hi := ceilUnix(before.Add(long.Period-k.slack)), ceilUnix(after.Add(long.Period+k.slack))
		if c.Reset < lo || c.Reset > hi {
			t.Fatalf("Reset after one call = %d, want ceil(call+period) in [%d, %d]", c.Reset, lo, hi)
		}
	}},
	{"increment records beyond the limit", func(t *testing.T, k storeKit) {
		ctx := context.Background()
		before := k.now()
		c := must(t)(k.store.Increment(ctx, "a", long.Limit+3, long))
		after := k.now()
		if !c.Reached || c.Remaining != 0 {
			t.Fatalf("Increment(limit+3) = %+v, want Reached", c)
		}
		if c := must(t)(k.store.Get(ctx, "a", long)); !c.Reached {
			t.Fatalf("Get after Increment(limit+3) admitted")
		}
		next, err := k.store.NextFree(ctx, "a", long)
		if err != nil {
			t.Fatal(err)
		}
		within(t, "NextFree", next, before.Add(long.Period), after.Add(long.Period), k.slack)
	}},
	{"increment of zero records nothing", func(t *testing.T, k storeKit) {
		ctx := context.Background()
		must(t)(k.store.Increment(ctx, "a", 0, long))
		must(t)(k.store.Increment(ctx, "a", -4, long))
		if c := must(t)(k.store.Peek(ctx, "a", long)); c.Remaining != long.Limit {
			t.Fatalf("Peek after Increment(0) = %+v", c)
		}
	}},
	{"increment counts toward gets", func(t *testing.T, k storeKit) {
		ctx := context.Background()
		must(t)(k.store.Increment(ctx, "a", 2, long))
		c := must(t)(k.store.Get(ctx, "a", long))
		if c.Remaining != long.Limit-3 {
			t.Fatalf("Get after Increment(2) = %+v, want Remaining %d", c, long.Limit-3)
		}
	}},
	{"reset forgets", func(t *testing.T, k storeKit) {
		ctx := context.Background()
		for range long.Limit {
			must(t)(k.store.Get(ctx, "a", long))
		}
		c := must(t)(k.store.Reset(ctx, "a", long))
		if c.Remaining != long.Limit || c.Reached {
			t.Fatalf("Reset = %+v", c)
		}
		if c := must(t)(k.store.Get(ctx, "a", long)); c.Reached || c.Remaining != long.Limit-1 {
			t.Fatalf("Get after Reset = %+v", c)
		}
	}},
	{"next free is now when a slot is free", func(t *testing.T, k storeKit) {
		ctx := context.Background()
		must(t)(k.store.Get(ctx, "a", long))
		before := k.now()
		next, err := k.store.NextFree(ctx, "a", long)
		if err != nil {
			t.Fatal(err)
		}
		within(t, "NextFree", next, before, k.now(), k.slack)
	}},
	{"zero limit admits nothing and backs off a window", func(t *testing.T, k storeKit) {
		ctx := context.Background()
		zero := limiter.Rate{Period: time.Minute, Limit: 0}
		if c := must(t)(k.store.Get(ctx, "a", zero)); !c.Reached || c.Remaining != 0 {
			t.Fatalf("Get with limit 0 = %+v", c)
		}
		before := k.now()
		next, err := k.store.NextFree(ctx, "a", zero)
		if err != nil {
			t.Fatal(err)
		}
		within(t, "NextFree", next, before.Add(time.Minute), k.now().Add(time.Minute), k.slack)
	}},
	{"window slides: each call frees its own slot", func(t *testing.T, k storeKit) {
		// Three calls, one at s and two at s+gap; the window is 2*gap so
		// the first leaves alone while the others stay.
		ctx := context.Background()
		const gap = 250 * time.Millisecond
		rate := limiter.Rate{Period: 2 * gap, Limit: 3}
		start := k.now()
		must(t)(k.store.Get(ctx, "a", rate))
		k.sleepUntil(start.Add(gap))
		second := k.now()
		must(t)(k.store.Get(ctx, "a", rate))
		must(t)(k.store.Get(ctx, "a", rate))
		if c := must(t)(k.store.Get(ctx, "a", rate)); !c.Reached {
			t.Fatalf("4th call within the window admitted")
		}
		next, err := k.store.NextFree(ctx, "a", rate)
		if err != nil {
			t.Fatal(err)
		}
		within(t, "NextFree", next, start.Add(rate.Period), second.Add(k.slack).Add(rate.Period-gap), k.slack)

		k.sleepUntil(next)
		if c := must(t)(k.store.Get(ctx, "a", rate)); c.Reached {
			t.Fatalf("Get at NextFree refused: %+v", c)
		}
		// The calls at s+gap hold their slots until s+3*gap. Only judge
		// that when this machine was not stalled past it.
		c := must(t)(k.store.Get(ctx, "a", rate))
		if k.now().Before(second.Add(rate.Period)) && !c.Reached {
			t.Fatalf("a call got the slot of a call still inside the window")
		}
	}},
	{"refused gets record nothing", func(t *testing.T, k storeKit) {
		ctx := context.Background()
		rate := limiter.Rate{Period: 300 * time.Millisecond, Limit: 2}
		// A loaded machine may stall past the window before the refusals
		// are judged; such an attempt proves nothing, so it is run again
		// on a fresh key, and the test fails if no attempt could judge.
		for attempt := range 5 {
			key := fmt.Sprint("a", attempt)
			must(t)(k.store.Get(ctx, key, rate))
			must(t)(k.store.Get(ctx, key, rate))
			next, err := k.store.NextFree(ctx, key, rate)
			if err != nil {
				t.Fatal(err)
			}
			k.sleep(100 * time.Millisecond)
			for range 10 {
				if c := must(t)(k.store.Get(ctx, key, rate)); !c.Reached && k.now().Before(next.Add(-k.slack)) {
					t.Fatalf("Get on a full key admitted")
				}
			}
			if !k.now().Before(next.Add(-k.slack)) {
				continue // stalled: the admitted calls may have left
			}
			later, err := k.store.NextFree(ctx, key, rate)
			if err != nil {
				t.Fatal(err)
			}
			within(t, "NextFree after refusals", later, next, next, k.slack)
			k.sleepUntil(later)
			if c := must(t)(k.store.Get(ctx, key, rate)); c.Reached {
				t.Fatalf("Get once the admitted calls left refused: refusals were recorded")
			}
			return
		}
		t.Fatal("the machine stalled past the window in every attempt; nothing was judged")
	}},
	{"take above leaves the reserve under concurrency", func(t *testing.T, k storeKit) {
		// In each of 20 rounds (an account each), 16 callers race for a
		// budget of 10 that must leave 3: the check and the spending are
		// one store operation, so exactly 7 are admitted, however the
		// callers interleave.
		ctx := context.Background()
		const limit, reserve = 10, 3
		b := NewBudget(k.store, limit, time.Minute)
		for round := range 20 {
			account := fmt.Sprint("demo", round)
			var admitted atomic.Int64
			start := make(chan struct{})
			var wg sync.WaitGroup
			for range 16 {
				wg.Go(func() {
					<-start
					for range 4 {
						ok, _, err := b.TakeAbove(ctx, account, reserve)
						if err != nil {
							t.Error(err)
							return
						}
						if ok {
							admitted.Add(1)
						}
					}
				})
			}
			close(start)
			wg.Wait()
			if got := admitted.Load(); got != limit-reserve {
				t.Fatalf("round %d: TakeAbove(reserve %d) admitted %d of 64 racing calls, want exactly %d", round, reserve, got, limit-reserve)
			}
			for i := range reserve {
				if ok, _, _ := b.Take(ctx, account); !ok {
					t.Fatalf("round %d: Take #%d of the reserve refused", round, i+1)
				}
			}
			if ok, _, _ := b.Take(ctx, account); ok {
				t.Fatalf("round %d: Take beyond the limit admitted", round)
			}
		}
	}},
	{"one budget with a token-generation guard beside it", func(t *testing.T, k storeKit) {
		ctx := context.Background()
		upstream := NewBudget(k.store, 3, time.Minute)
		tokens := NewBudget(k.store, 10, time.Hour, WithPrefix("tokengen:"))
		for range 10 {
			if ok, _, _ := tokens.Take(ctx, "demo"); !ok {
				t.Fatal("token generation refused within 10 per hour")
			}
		}
		if ok, _, _ := tokens.Take(ctx, "demo"); ok {
			t.Fatal("11th token generation within the hour admitted")
		}
		if ok, st, _ := upstream.Take(ctx, "demo"); !ok || st.Remaining != 2 {
			t.Fatalf("upstream budget affected by the token guard: %v %+v", ok, st)
		}
	}},
}

func TestStoreConformance(t *testing.T) {
	addr := redistest.Start(t)
	for _, tc := range conformance {
		t.Run("memory/"+tc.name, func(t *testing.T) {
			t.Parallel()
			tc.run(t, memoryKit())
		})
		t.Run("redis/"+tc.name, func(t *testing.T) {
			t.Parallel()
			tc.run(t, redisKit(t, addr))
		})
		t.Run("bolt/"+tc.name, func(t *testing.T) {
			t.Parallel()
			tc.run(t, boltKit(t))
		})
		t.Run("bolt-reopened/"+tc.name, func(t *testing.T) {
			t.Parallel()
			tc.run(t, reopenedKit(t))
		})
	}
}

// TestRedisSameMicrosecond checks that calls in the same server
// microsecond each count (each has its own name): the script is run with a fixed time (its
// test-only arguments) so every call collides.
func TestRedisSameMicrosecond(t *testing.T) {
	addr := redistest.Start(t)
	client := redis.NewClient(&redis.Options{Addr: addr})
	defer client.Close()
	ctx := context.Background()
	rate := limiter.Rate{Period: time.Minute, Limit: 10}
	now := time.Now()
	sec, usec := now.Unix(), now.Nanosecond()/1000
	seq := 0
	run := func(o op, count int64) []int64 {
		t.Helper()
		seq++
		v, err := redisSliding.Run(ctx, client, []string{"test:k"},
			int(o), rate.Limit, rate.Period.Microseconds(), count, "replica", seq, 0, 0, sec, usec, 0, 1).Int64Slice()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	for i := range 6 {
		if v := run(opGet, 0); v[0] != 1 || v[1] != int64(i+1) {
			t.Fatalf("Get #%d in one microsecond = %v, want admitted with total %d", i+1, v, i+1)
		}
	}
	run(opIncrement, 2)
	run(opIncrement, 2) // same weight, same microsecond: must not merge
	if v := run(opGet, 0); v[0] != 0 || v[1] != 10 {
		t.Fatalf("Get after 6 calls and two Increment(2) = %v, want refused with total 10", v)
	}
	members, err := client.ZRange(ctx, "test:k", 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(members) != 8 {
		t.Fatalf("sorted set holds %d members, want 8: %q", len(members), members)
	}

	// Through the store: the key expires one window after its last call.
	store := NewRedisStore(client, "test:")
	if _, err := store.Get(ctx, "ttl", rate); err != nil {
		t.Fatal(err)
	}
	ttl, err := client.PTTL(ctx, "test:ttl").Result()
	if err != nil {
		t.Fatal(err)
	}
	if ttl <= 0 || ttl > rate.Period {
		t.Fatalf("PTTL = %v, want within (0, %v]", ttl, rate.Period)
	}
}

// TestRedisSharedBudget runs two replicas, each with its own Redis client,
// spending one account's budget concurrently: together they admit exactly
// the limit.
func TestRedisSharedBudget(t *testing.T) {
	addr := redistest.Start(t)
	const limit = 50
	var budgets []*Budget
	for range 2 {
		client := redis.NewClient(&redis.Options{Addr: addr})
		t.Cleanup(func() { client.Close() })
		budgets = append(budgets, NewBudget(NewRedisStore(client, "caproxy:"), limit, time.Minute))
	}
	var admitted atomic.Int64
	var wg sync.WaitGroup
	for g := range 20 {
		b := budgets[g%2]
		wg.Go(func() {
			for range 10 {
				ok, _, err := b.Take(context.Background(), "demo")
				if err != nil {
					t.Error(err)
					return
				}
				if ok {
					admitted.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if got := admitted.Load(); got != limit {
		t.Fatalf("two replicas admitted %d of 200 calls, want exactly %d", got, limit)
	}
	st, err := budgets[1].State(context.Background(), "demo")
	if err != nil {
		t.Fatal(err)
	}
	if st.Remaining != 0 || st.NextFree.IsZero() {
		t.Fatalf("State after the budget is spent = %+v", st)
	}
}

// TestRedisStoreErrors checks that a dead Redis is an error, not a silent
// admission.
func TestRedisStoreErrors(t *testing.T) {
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialerRetries: 1})
	defer client.Close()
	b := NewBudget(NewRedisStore(client, "x:"), 5, time.Minute)
	ok, _, err := b.Take(context.Background(), "demo")
	if err == nil || ok {
		t.Fatalf("Take on unreachable Redis = %v, %v; want an error", ok, err)
	}
	if !strings.Contains(err.Error(), "budget:demo") {
		t.Fatalf("error %q does not name the key", err)
	}
}
