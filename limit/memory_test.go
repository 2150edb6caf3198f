package limit

import (
	"context"
	"fmt"
	"hash/maphash"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ulule/limiter/v3"

	"github.com/caproxy/caproxy/internal/fakeclock"
)

var t0 = time.Date(2026, 11, 28, 11, 0, 0, 0, time.UTC)

// TestMemoryStoreProperty drives MemoryStore with seeded random arrival
// patterns on a fake clock and checks every answer against a brute-force
// reference: never more than N admitted in any window of length Period
// (safety), refused only when N were admitted in the trailing Period
// (maximality), and exact Remaining, NextFree and Reset.
func TestMemoryStoreProperty(t *testing.T) {
	ctx := context.Background()
	for seed := range uint64(300) {
		rng := rand.New(rand.NewPCG(seed, 42))
		clock := fakeclock.New(t0)
		store := &MemoryStore{Now: clock.Now}
		rate := limiter.Rate{
			Limit:  1 + rng.Int64N(10),
			Period: time.Duration(1+rng.Int64N(100)) * time.Millisecond,
		}
		var admitted []time.Time // reference log, oldest first
		inWindow := func(now time.Time) (n int64, oldestInWindow int) {
			oldestInWindow = len(admitted)
			for i := len(admitted) - 1; i >= 0 && admitted[i].After(now.Add(-rate.Period)); i-- {
				n++
				oldestInWindow = i
			}
			return n, oldestInWindow
		}
		for step := range 400 {
			// Bursty arrivals: often no gap at all, sometimes long pauses.
			switch r := rng.IntN(10); {
			case r < 4:
			case r < 9:
				clock.Advance(time.Duration(rng.Int64N(int64(rate.Period) / 4)))
			default:
				clock.Advance(time.Duration(rng.Int64N(2 * int64(rate.Period))))
			}
			now := clock.Now()
			before, oldest := inWindow(now)
			c, err := store.Get(ctx, "k", rate)
			if err != nil {
				t.Fatal(err)
			}
			fail := func(format string, args ...any) {
				t.Helper()
				t.Fatalf("seed %d step %d (limit %d period %v, %d in window): %s",
					seed, step, rate.Limit, rate.Period, before, fmt.Sprintf(format, args...))
			}
			if wantRefused := before >= rate.Limit; c.Reached != wantRefused {
				fail("Reached=%v, want %v", c.Reached, wantRefused)
			}
			if !c.Reached {
				admitted = append(admitted, now)
				before++
			}
			if want := rate.Limit - before; c.Remaining != max(want, 0) {
				fail("Remaining=%d, want %d", c.Remaining, want)
			}
			// Next slot frees when the oldest call in the window leaves.
			wantReset := ceilUnix(admitted[oldest].Add(rate.Period))
			if c.Reset != wantReset {
				fail("Reset=%d, want %d", c.Reset, wantReset)
			}
			next, _ := store.NextFree(ctx, "k", rate)
			wantNext := now
			if before >= rate.Limit {
				wantNext = admitted[len(admitted)-int(rate.Limit)].Add(rate.Period)
			}
			if !next.Equal(wantNext) {
				fail("NextFree=%v, want %v", next.Sub(t0), wantNext.Sub(t0))
			}
		}
		// Safety over the whole run: slide a window over every admission.
		for i := range admitted {
			n := 0
			for j := i; j < len(admitted) && admitted[j].Sub(admitted[i]) < rate.Period; j++ {
				n++
			}
			if int64(n) > rate.Limit {
				t.Fatalf("seed %d: %d admitted within %v of %v, limit %d",
					seed, n, rate.Period, admitted[i].Sub(t0), rate.Limit)
			}
		}
	}
}

// TestBoundaryBurst sends N calls just before a window boundary and N just
// after, on the fake clock. The sliding store admits N in total; ulule's
// fixed-window memory store admits 2N for the same pattern, which is why
// the budget cannot use it. (ulule's store reads the wall clock, so that
// half is not a test here: a timing-dependent comparison on a loaded
// machine could only skip or flake.)
func TestBoundaryBurst(t *testing.T) {
	const n = 50
	ctx := context.Background()

	t.Run("sliding, fake clock, minute boundary", func(t *testing.T) {
		clock := fakeclock.New(time.Date(2026, 11, 28, 11, 59, 59, 0, time.UTC))
		store := &MemoryStore{Now: clock.Now}
		rate := limiter.Rate{Period: time.Minute, Limit: n}
		got := 0
		for range 2 * n {
			c, err := store.Get(ctx, "acct", rate)
			if err != nil {
				t.Fatal(err)
			}
			if !c.Reached {
				got++
			}
			clock.Advance(15 * time.Millisecond) // 100 calls over 11:59:59.000-12:00:00.500
		}
		if got != n {
			t.Fatalf("sliding store admitted %d of a boundary burst, want %d", got, n)
		}
	})
}

// TestMemoryStoreConcurrentTake hammers Budget.Take from 100 goroutines
// over many keys: never more than N per key, and exactly N for every key
// that was asked more than N times (no time passes within the window).
func TestMemoryStoreConcurrentTake(t *testing.T) {
	const (
		limit      = 7
		keys       = 40
		goroutines = 100
		perG       = 60
	)
	b := NewBudget(NewMemoryStore(), limit, time.Hour)
	var admitted, asked [keys]atomic.Int64
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 7))
			for range perG {
				k := rng.IntN(keys)
				asked[k].Add(1)
				ok, st, err := b.Take(context.Background(), fmt.Sprint("acct-", k))
				if err != nil {
					t.Error(err)
					return
				}
				if st.Limit != limit {
					t.Errorf("State.Limit = %d", st.Limit)
				}
				if ok {
					admitted[k].Add(1)
				}
			}
		})
	}
	wg.Wait()
	for k := range keys {
		got, want := admitted[k].Load(), min(asked[k].Load(), limit)
		if got != want {
			t.Errorf("key %d: admitted %d of %d asked, want %d", k, got, asked[k].Load(), want)
		}
	}
}

// TestMemoryStoreStaysBounded checks that keys whose calls have left the
// window are dropped, by the next touch or by a shard's sweep.
func TestMemoryStoreStaysBounded(t *testing.T) {
	ctx := context.Background()
	clock := fakeclock.New(t0)
	store := &MemoryStore{Now: clock.Now, SweepInterval: time.Second}
	rate := limiter.Rate{Period: 100 * time.Millisecond, Limit: 3}
	for i := range 5000 {
		store.Get(ctx, fmt.Sprint("k", i), rate)
	}
	if n := store.Len(); n != 5000 {
		t.Fatalf("Len = %d after 5000 keys, want 5000", n)
	}
	// A touch after the window empties the log and drops the key.
	clock.Advance(200 * time.Millisecond)
	store.Peek(ctx, "k0", rate)
	if n := store.Len(); n != 4999 {
		t.Fatalf("Len = %d after touching an expired key, want 4999", n)
	}
	// After a sweep interval, any use sweeps its shard; touching a key per
	// shard sweeps them all.
	clock.Advance(2 * time.Second)
	for i := range 5000 {
		store.Peek(ctx, fmt.Sprint("other", i), rate)
	}
	if n := store.Len(); n != 0 {
		t.Fatalf("Len = %d after sweeps, want 0", n)
	}
	// A log never holds calls that left the window.
	for range 10 {
		store.Increment(ctx, "hot", 1, rate)
		clock.Advance(50 * time.Millisecond)
	}
	// Now is 500ms; only the call at 450ms is inside (400ms, 500ms].
	if c, _ := store.Peek(ctx, "hot", rate); c.Remaining != 2 {
		t.Fatalf("Remaining = %d, want 2 (one call in the trailing 100ms)", c.Remaining)
	}
	sh := &store.shards[maphash.String(shardSeed, "hot")%memShards]
	sh.mu.Lock()
	held := len(sh.logs["hot"].calls)
	sh.mu.Unlock()
	if held != 1 {
		t.Fatalf("log holds %d entries, want 1", held)
	}
}

// TestMemoryStoreZeroValue checks that a zero MemoryStore works.
func TestMemoryStoreZeroValue(t *testing.T) {
	var s MemoryStore
	c, err := s.Get(context.Background(), "k", limiter.Rate{Period: time.Minute, Limit: 1})
	if err != nil || c.Reached || c.Remaining != 0 {
		t.Fatalf("Get on zero MemoryStore = %+v, %v", c, err)
	}
}
