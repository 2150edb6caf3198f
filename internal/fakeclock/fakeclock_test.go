package fakeclock_test

import (
	"sync"
	"testing"
	"time"

	"github.com/caproxy/caproxy/internal/fakeclock"
	"github.com/caproxy/caproxy/limit"
)

// Clock is what limit.WithClock takes.
var _ limit.Clock = (*fakeclock.Clock)(nil)

var t0 = time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)

func TestAfter(t *testing.T) {
	advance := func(d time.Duration) func(*fakeclock.Clock) {
		return func(c *fakeclock.Clock) { c.Advance(d) }
	}
	set := func(d time.Duration) func(*fakeclock.Clock) {
		return func(c *fakeclock.Clock) { c.Set(t0.Add(d)) }
	}
	cases := []struct {
		name  string
		after time.Duration
		moves []func(*fakeclock.Clock)
		// wantNow is where the clock stands after the moves, from t0.
		wantNow time.Duration
		// wantFired is whether After's channel fired; it carries the
		// clock's time then, which is wantNow in every case here.
		wantFired bool
	}{
		{"zero fires at once", 0, nil, 0, true},
		{"negative fires at once", -time.Second, nil, 0, true},
		{"not before the deadline", 10 * time.Second, []func(*fakeclock.Clock){advance(10*time.Second - time.Nanosecond)}, 10*time.Second - time.Nanosecond, false},
		{"Advance to the deadline", 10 * time.Second, []func(*fakeclock.Clock){advance(10 * time.Second)}, 10 * time.Second, true},
		{"Advance past it in steps", 10 * time.Second, []func(*fakeclock.Clock){advance(6 * time.Second), advance(6 * time.Second)}, 12 * time.Second, true},
		{"Set to the deadline", 10 * time.Second, []func(*fakeclock.Clock){set(10 * time.Second)}, 10 * time.Second, true},
		{"Set past it", 10 * time.Second, []func(*fakeclock.Clock){set(time.Hour)}, time.Hour, true},
		{"Set backwards", 10 * time.Second, []func(*fakeclock.Clock){set(-time.Hour)}, -time.Hour, false},
		{"negative Advance stands still", 10 * time.Second, []func(*fakeclock.Clock){advance(-time.Hour)}, 0, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := fakeclock.New(t0)
			ch := c.After(tc.after)
			for _, move := range tc.moves {
				move(c)
			}
			if got := c.Now(); !got.Equal(t0.Add(tc.wantNow)) {
				t.Fatalf("Now = t0%+v, want t0%+v", got.Sub(t0), tc.wantNow)
			}
			wantWaiters := 1
			if tc.wantFired {
				wantWaiters = 0
			}
			if got := c.Waiters(); got != wantWaiters {
				t.Fatalf("Waiters = %d, want %d", got, wantWaiters)
			}
			select {
			case at := <-ch:
				if !tc.wantFired {
					t.Fatalf("After(%v) fired at t0%+v, want not yet", tc.after, at.Sub(t0))
				}
				if !at.Equal(t0.Add(tc.wantNow)) {
					t.Fatalf("After(%v) carried t0%+v, want t0%+v", tc.after, at.Sub(t0), tc.wantNow)
				}
			default:
				if tc.wantFired {
					t.Fatalf("After(%v) did not fire", tc.after)
				}
			}
		})
	}
}

func TestZeroValue(t *testing.T) {
	var c fakeclock.Clock
	if !c.Now().IsZero() {
		t.Fatalf("zero Clock's Now = %v, want the zero time", c.Now())
	}
	ch := c.After(time.Minute)
	c.Advance(time.Minute)
	if at := <-ch; !at.Equal(time.Time{}.Add(time.Minute)) {
		t.Fatalf("After fired with %v", at)
	}
}

// TestConcurrent parks goroutines on the clock while others read it, then
// releases them all with one Advance. Its point is -race.
func TestConcurrent(t *testing.T) {
	const n = 8
	c := fakeclock.New(t0)
	var wg sync.WaitGroup
	fired := make(chan time.Time, n)
	for i := range n {
		wg.Go(func() { fired <- <-c.After(time.Duration(i+1) * time.Second) })
		wg.Go(func() { _ = c.Now() })
	}
	for deadline := time.Now().Add(10 * time.Second); c.Waiters() < n; {
		if time.Now().After(deadline) {
			t.Fatalf("%d waiters parked, want %d", c.Waiters(), n)
		}
		time.Sleep(time.Millisecond)
	}
	c.Advance(n * time.Second)
	wg.Wait()
	close(fired)
	for at := range fired {
		if !at.Equal(t0.Add(n * time.Second)) {
			t.Fatalf("waiter fired at t0%+v, want t0+%v", at.Sub(t0), n*time.Second)
		}
	}
	if c.Waiters() != 0 {
		t.Fatalf("Waiters = %d after all fired", c.Waiters())
	}
}
