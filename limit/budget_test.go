package limit

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/caproxy/caproxy/internal/fakeclock"
	"github.com/caproxy/caproxy/internal/redistest"
)

// fakeBudget is a Budget on a MemoryStore sharing one fake clock.
// With auto, Wait moves the clock itself (see autoClock).
func fakeBudget(perWindow int64, window time.Duration, auto bool, opts ...Option) (*Budget, *fakeclock.Clock) {
	clock := fakeclock.New(t0)
	store := &MemoryStore{Now: clock.Now}
	var bc Clock = clock
	if auto {
		bc = autoClock{clock}
	}
	return NewBudget(store, perWindow, window, append([]Option{WithClock(bc)}, opts...)...), clock
}

func TestBudgetTakeAndState(t *testing.T) {
	ctx := context.Background()
	b, clock := fakeBudget(3, time.Minute, false)

	st, err := b.State(ctx, "demo")
	if err != nil || st != (State{Limit: 3, Remaining: 3}) {
		t.Fatalf("State of a fresh account = %+v, %v", st, err)
	}
	for i := range int64(3) {
		ok, st, err := b.Take(ctx, "demo")
		if err != nil || !ok || st.Remaining != 2-i {
			t.Fatalf("Take #%d = %v %+v %v", i+1, ok, st, err)
		}
		if i < 2 && !st.NextFree.IsZero() {
			t.Fatalf("Take #%d: NextFree set while slots are free: %+v", i+1, st)
		}
		clock.Advance(10 * time.Second)
	}
	// Spent: the first call (at t0) frees at t0+1m.
	ok, st, err := b.Take(ctx, "demo")
	want := State{Limit: 3, Remaining: 0, NextFree: t0.Add(time.Minute)}
	if err != nil || ok || st != want {
		t.Fatalf("Take on a spent budget = %v %+v %v, want refused %+v", ok, st, err, want)
	}
	if st, _ := b.State(ctx, "demo"); st != want {
		t.Fatalf("State = %+v, want %+v", st, want)
	}
	// State spends nothing.
	clock.Set(t0.Add(time.Minute))
	for range 5 {
		b.State(ctx, "demo")
	}
	if ok, st, _ := b.Take(ctx, "demo"); !ok || st.NextFree != t0.Add(time.Minute+10*time.Second) {
		t.Fatalf("Take once the oldest call left = %v %+v", ok, st)
	}
}

func TestBudgetExhaust(t *testing.T) {
	ctx := context.Background()
	b, clock := fakeBudget(50, time.Minute, false)
	b.Take(ctx, "demo")
	clock.Advance(30 * time.Second)
	if err := b.Exhaust(ctx, "demo"); err != nil {
		t.Fatal(err)
	}
	// Spent for a whole window from now, even after the earlier call left.
	exhausted := clock.Now()
	for _, at := range []time.Duration{0, 31 * time.Second, 59*time.Second + 999*time.Millisecond} {
		clock.Set(exhausted.Add(at))
		ok, st, err := b.Take(ctx, "demo")
		if err != nil || ok || st.NextFree != exhausted.Add(time.Minute) {
			t.Fatalf("Take %v after Exhaust = %v %+v %v, want refused until %v", at, ok, st, err, exhausted.Add(time.Minute))
		}
	}
	clock.Set(exhausted.Add(time.Minute))
	if ok, st, _ := b.Take(ctx, "demo"); !ok || st.Remaining != 49 {
		t.Fatalf("Take a window after Exhaust = %v %+v", ok, st)
	}
}

func TestBudgetWait(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name    string
		maxWait time.Duration
		wantOK  bool
		// wantAt is where the fake clock must stand afterwards,
		// relative to t0: Wait sleeps exactly until the slot frees.
		wantAt time.Duration
	}{
		{"slot frees within maxWait", time.Minute, true, time.Minute},
		{"slot frees exactly at maxWait", 50 * time.Second, true, time.Minute},
		{"slot frees after maxWait: no waiting at all", 49 * time.Second, false, 10 * time.Second},
		{"no maxWait is Take", 0, false, 10 * time.Second},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, clock := fakeBudget(2, time.Minute, true)
			b.Take(ctx, "demo") // at t0: frees at t0+1m
			clock.Advance(10 * time.Second)
			b.Take(ctx, "demo") // at t0+10s
			ok, st, err := b.Wait(ctx, "demo", tc.maxWait)
			if err != nil || ok != tc.wantOK {
				t.Fatalf("Wait = %v %+v %v, want ok=%v", ok, st, err, tc.wantOK)
			}
			if got := clock.Now().Sub(t0); got != tc.wantAt {
				t.Fatalf("clock after Wait at t0+%v, want t0+%v", got, tc.wantAt)
			}
			if !ok && st.NextFree != t0.Add(time.Minute) {
				t.Fatalf("refused Wait: NextFree %v, want t0+1m", st.NextFree.Sub(t0))
			}
		})
	}
}

func TestBudgetWaitContended(t *testing.T) {
	// One slot frees; two waiters race for it. The loser waits again for
	// the next one, which the test then frees.
	ctx := context.Background()
	b, clock := fakeBudget(1, time.Minute, false)
	b.Take(ctx, "demo")
	type res struct {
		ok  bool
		err error
		at  time.Time
	}
	results := make(chan res, 2)
	for range 2 {
		go func() {
			ok, _, err := b.Wait(ctx, "demo", 3*time.Minute)
			results <- res{ok, err, clock.Now()}
		}()
	}
	waitTimers(t, clock, 2)
	clock.Advance(time.Minute)
	first := <-results
	if !first.ok || first.err != nil || !first.at.Equal(t0.Add(time.Minute)) {
		t.Fatalf("first waiter = %+v, want the slot at t0+1m", first)
	}
	waitTimers(t, clock, 1) // the loser parks again, until t0+2m
	clock.Advance(time.Minute)
	second := <-results
	if !second.ok || second.err != nil || !second.at.Equal(t0.Add(2*time.Minute)) {
		t.Fatalf("second waiter = %+v, want the slot at t0+2m", second)
	}
}

func TestBudgetWaitHonoursContext(t *testing.T) {
	b, clock := fakeBudget(1, time.Minute, false)
	b.Take(context.Background(), "demo")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, _, err := b.Wait(ctx, "demo", time.Hour)
		done <- err
	}()
	waitTimers(t, clock, 1)
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait after cancel = %v, want context.Canceled", err)
	}
	// An already ended context does not wait either.
	if _, _, err := b.Wait(ctx, "demo", time.Hour); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait on a cancelled context = %v", err)
	}
}

// waitTimers blocks until n goroutines are parked on clock.
func waitTimers(t *testing.T, clock *fakeclock.Clock, n int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); clock.Waiters() < n; {
		if time.Now().After(deadline) {
			t.Fatalf("%d waiters parked, want %d", clock.Waiters(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestBudgetSetLimit(t *testing.T) {
	ctx := context.Background()
	b, _ := fakeBudget(2, time.Minute, false)
	b.Take(ctx, "demo")
	b.Take(ctx, "demo")
	if ok, _, _ := b.Take(ctx, "demo"); ok {
		t.Fatal("3rd Take within a limit of 2 admitted")
	}
	b.SetLimit(3)
	if b.Limit() != 3 || b.Window() != time.Minute {
		t.Fatalf("Limit, Window = %d, %v", b.Limit(), b.Window())
	}
	if ok, st, _ := b.Take(ctx, "demo"); !ok || st.Limit != 3 {
		t.Fatalf("Take after SetLimit(3) = %v %+v", ok, st)
	}
	b.SetLimit(1) // lowering: recorded calls keep counting
	if st, _ := b.State(ctx, "demo"); st.Remaining != 0 || st.Limit != 1 {
		t.Fatalf("State after SetLimit(1) = %+v", st)
	}

	// Reloads race with Takes without tearing (run under -race).
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			for j := range 200 {
				if i == 0 {
					b.SetLimit(int64(j % 7))
					continue
				}
				b.Take(ctx, "other")
			}
		})
	}
	wg.Wait()
}

// TestTokenGenerationGuard shows that the hourly token-generation limit is
// a Budget of 10 per hour under its own prefix.
func TestTokenGenerationGuard(t *testing.T) {
	ctx := context.Background()
	clock := fakeclock.New(t0)
	store := &MemoryStore{Now: clock.Now}
	guard := NewBudget(store, 10, time.Hour, WithPrefix("tokengen:"), WithClock(clock))
	upstream := NewBudget(store, 50, time.Minute, WithClock(clock))

	for i := range 10 { // one generation every 5 minutes
		if ok, _, err := guard.Take(ctx, "demo"); !ok || err != nil {
			t.Fatalf("generation #%d refused", i+1)
		}
		clock.Advance(5 * time.Minute)
	}
	ok, st, _ := guard.Take(ctx, "demo") // at t0+50m
	if ok || st.NextFree != t0.Add(time.Hour) {
		t.Fatalf("11th generation in an hour = %v %+v, want refused until t0+1h", ok, st)
	}
	if ok, st, _ := upstream.Take(ctx, "demo"); !ok || st.Remaining != 49 {
		t.Fatalf("upstream budget shares the token guard's count: %v %+v", ok, st)
	}
	clock.Set(t0.Add(time.Hour))
	if ok, _, _ := guard.Take(ctx, "demo"); !ok {
		t.Fatal("generation refused an hour after the first")
	}
	if ok, _, _ := guard.Take(ctx, "demo"); ok {
		t.Fatal("two generations admitted when one left the hour")
	}
	if _, err := store.Peek(ctx, "tokengen:demo", guard.lim.Load().Rate); err != nil {
		t.Fatal(err)
	}
}

// TestBudgetWaitRedis waits for a slot on a real Redis in real time.
func TestBudgetWaitRedis(t *testing.T) {
	addr := redistest.Start(t)
	client := redis.NewClient(&redis.Options{Addr: addr})
	defer client.Close()
	ctx := context.Background()
	const window = 300 * time.Millisecond
	b := NewBudget(NewRedisStore(client, "test:"), 2, window)
	// Redis stamps the first call no earlier than this, so its slot frees
	// no earlier than before+window. (NextFree is later still: the store
	// adds the reply's trip so a waiter never wakes early, so a Wait may
	// rightly be admitted before a NextFree reported earlier.)
	before := time.Now()
	b.Take(ctx, "demo")
	b.Take(ctx, "demo")
	_, st, err := b.Take(ctx, "demo")
	if err != nil || st.NextFree.IsZero() || st.NextFree.Before(before.Add(window)) {
		t.Fatalf("Take on a spent budget = %+v %v; want NextFree no earlier than %v", st, err, before.Add(window))
	}
	ok, _, err := b.Wait(ctx, "demo", 5*time.Second)
	if err != nil || !ok {
		t.Fatalf("Wait = %v %v", ok, err)
	}
	if waited := time.Since(before); waited < window {
		t.Fatalf("Wait admitted %v after the first call, before its slot freed (%v)", waited, window)
	}
	// Too short a maxWait gives up without sleeping.
	b.Take(ctx, "fresh")
	b.Take(ctx, "fresh")
	if ok, st, err := b.Wait(ctx, "fresh", time.Millisecond); ok || err != nil || st.NextFree.IsZero() {
		t.Fatalf("Wait with 1ms = %v %+v %v, want refused with NextFree", ok, st, err)
	}
}

// TestBudgetTakeAbove leaves the reserve to Take, in memory and in Redis.
func TestBudgetTakeAbove(t *testing.T) {
	mem, _ := fakeBudget(5, time.Minute, false)
	addr := redistest.Start(t)
	client := redis.NewClient(&redis.Options{Addr: addr})
	defer client.Close()
	stores := map[string]*Budget{
		"memory": mem,
		"redis":  NewBudget(NewRedisStore(client, "test:"), 5, time.Minute),
	}
	for name, b := range stores {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			var got []bool
			for range 5 {
				ok, _, err := b.TakeAbove(ctx, "demo", 2)
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, ok)
			}
			// 5 slots, 2 reserved: 3 taken, then refused.
			if want := []bool{true, true, true, false, false}; fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("TakeAbove(reserve 2) x5 = %v, want %v", got, want)
			}
			// The reserve is still there for Take.
			for i := range 2 {
				if ok, _, err := b.Take(ctx, "demo"); err != nil || !ok {
					t.Fatalf("Take #%d of the reserve = %v %v", i+1, ok, err)
				}
			}
			if ok, _, _ := b.Take(ctx, "demo"); ok {
				t.Fatal("Take admitted a 6th call in a window of 5")
			}
			// Reserve 0 is Take.
			if ok, _, _ := b.TakeAbove(ctx, "other", 0); !ok {
				t.Fatal("TakeAbove(reserve 0) on a fresh account refused")
			}
		})
	}
}

// TestSendWindowProductionMargin checks production's budget (50 calls in
// SendWindow of a minute) on the fake clock: the margin is exactly one
// second a minute, and a slot taken at t frees at t+61 s, not at t+60 s,
// so a call sent when it frees arrives more than a minute after any call
// that arrived up to one second late.
func TestSendWindowProductionMargin(t *testing.T) {
	for w, want := range map[time.Duration]time.Duration{
		time.Minute: 61 * time.Second,
		time.Second: time.Second + time.Second/60,
	} {
		if got := SendWindow(w); got != want {
			t.Errorf("SendWindow(%v) = %v, want %v", w, got, want)
		}
	}
	ctx := context.Background()
	b, clock := fakeBudget(50, SendWindow(time.Minute), false)
	for i := range 50 {
		if i == 25 {
			clock.Set(t0.Add(30 * time.Second))
		}
		if ok, _, err := b.Take(ctx, "demo"); !ok || err != nil {
			t.Fatalf("Take #%d = %v %v", i+1, ok, err)
		}
	}
	for _, at := range []time.Duration{30 * time.Second, time.Minute, 61*time.Second - time.Nanosecond} {
		clock.Set(t0.Add(at))
		if ok, st, err := b.Take(ctx, "demo"); ok || err != nil || st.NextFree != t0.Add(61*time.Second) {
			t.Fatalf("Take at %v = %v %+v %v, want refused until 61 s", at, ok, st, err)
		}
	}
	clock.Set(t0.Add(61 * time.Second))
	for i := range 25 { // the calls taken at 0 s have left the window
		if ok, _, err := b.Take(ctx, "demo"); !ok || err != nil {
			t.Fatalf("Take #%d at 61 s = %v %v", i+1, ok, err)
		}
	}
	if ok, st, _ := b.Take(ctx, "demo"); ok || st.NextFree != t0.Add(91*time.Second) {
		t.Fatalf("Take #26 at 61 s = %v %+v, want refused until 91 s", ok, st)
	}
}

// TestTakeAboveLeavesAFreedSlotToAWaiter: with no reserve, a refresh
// (TakeAbove) must not take the slot a client waiting under max_wait is
// woken for, or the client's wait runs past max_wait (issue 11: a client
// miss never waits longer than max_wait because of refreshes). Another
// account's refresh is not held back.
func TestTakeAboveLeavesAFreedSlotToAWaiter(t *testing.T) {
	ctx := context.Background()
	b, clock := fakeBudget(1, time.Minute, false)
	if ok, _, _ := b.Take(ctx, "demo"); !ok {
		t.Fatal("first Take refused")
	}
	type result struct {
		ok  bool
		err error
	}
	done := make(chan result, 1)
	go func() {
		ok, _, err := b.Wait(ctx, "demo", 90*time.Second)
		done <- result{ok, err}
	}()
	waitTimers(t, clock, 1)
	if ok, _, err := b.TakeAbove(ctx, "other", 0); !ok || err != nil {
		t.Fatalf("another account's TakeAbove = %v, %v", ok, err)
	}
	clock.Advance(time.Minute) // the slot frees; the waiter is woken
	if ok, _, err := b.TakeAbove(ctx, "demo", 0); ok || err != nil {
		t.Errorf("TakeAbove with a caller waiting = %v, %v; want the slot left to the waiter", ok, err)
	}
	if r := <-done; !r.ok || r.err != nil {
		t.Fatalf("the waiter got %v, %v; want the freed slot", r.ok, r.err)
	}
	// Nobody waits any more: TakeAbove spends again once a slot is free.
	clock.Advance(time.Minute)
	if ok, _, err := b.TakeAbove(ctx, "demo", 0); !ok || err != nil {
		t.Errorf("TakeAbove with nobody waiting = %v, %v", ok, err)
	}
}
