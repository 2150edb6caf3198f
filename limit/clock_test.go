package limit

import (
	"sync"
	"time"
)

// fakeClock is a manual clock for MemoryStore and Budget. In auto mode
// After moves the clock forward by d itself and fires at once, so a Wait
// runs instantly yet sees exactly the time it asked to wait for. Otherwise
// timers fire only when a test calls Advance.
type fakeClock struct {
	auto bool

	// mu guards now and timers.
	mu     sync.Mutex
	now    time.Time
	timers []fakeTimer
}

type fakeTimer struct {
	at time.Time
	ch chan time.Time
}

func newFakeClock(start time.Time, auto bool) *fakeClock {
	return &fakeClock{now: start, auto: auto}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	ch := make(chan time.Time, 1)
	if c.auto {
		c.Advance(d)
		ch <- c.Now()
		return ch
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if d <= 0 {
		ch <- c.now
		return ch
	}
	c.timers = append(c.timers, fakeTimer{at: c.now.Add(d), ch: ch})
	return ch
}

// Advance moves the clock forward by d and fires the timers now due.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(max(d, 0))
	kept := c.timers[:0]
	for _, t := range c.timers {
		if !t.at.After(c.now) {
			t.ch <- c.now
			continue
		}
		kept = append(kept, t)
	}
	c.timers = kept
}

// Set moves the clock to t (forward only).
func (c *fakeClock) Set(t time.Time) { c.Advance(t.Sub(c.Now())) }

// Timers returns how many timers are pending, so a test can wait until a
// goroutine is parked on the clock.
func (c *fakeClock) Timers() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}
