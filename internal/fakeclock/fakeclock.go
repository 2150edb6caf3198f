// Package fakeclock provides a manual clock for tests. Time stands still
// until the test moves it, so code that reads or waits on a clock is
// stepped through lifetimes and windows without sleeping.
package fakeclock

import (
	"sync"
	"time"
)

// Clock is a clock that moves only when told to. It is safe for
// concurrent use. Its Now and After methods make it a limit.Clock; After
// fires when Advance or Set moves the clock to or past the deadline.
//
// The zero value is a usable clock standing at the zero time.
type Clock struct {
	mu      sync.Mutex // guards now and waiters
	now     time.Time
	waiters []waiter
}

// waiter is a channel handed out by After, not yet fired.
type waiter struct {
	at time.Time
	ch chan time.Time
}

// New returns a clock standing at t.
func New(t time.Time) *Clock {
	return &Clock{now: t}
}

// Now returns the clock's current time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// After returns a channel that receives the clock's time once the clock
// stands at or past Now()+d. A d <= 0 fires at once, as time.After does.
// The channel is buffered, so the clock never blocks on a reader that has
// gone away.
func (c *Clock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	if d <= 0 {
		ch <- c.now
		return ch
	}
	c.waiters = append(c.waiters, waiter{at: c.now.Add(d), ch: ch})
	return ch
}

// Advance moves the clock forward by d and fires the After channels now
// due. A d <= 0 leaves the clock where it is, as time.Sleep does, so a
// test may "sleep until" a time already passed.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if d > 0 {
		c.setLocked(c.now.Add(d))
	}
}

// Set moves the clock to t and fires the After channels now due. Unlike
// Advance it may move the clock backwards; channels already fired stay
// fired.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.setLocked(t)
}

// setLocked moves the clock to t and fires due waiters; c.mu must be held.
func (c *Clock) setLocked(t time.Time) {
	c.now = t
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		if w.at.After(t) {
			kept = append(kept, w)
			continue
		}
		w.ch <- t
	}
	clear(c.waiters[len(kept):]) // drop fired channels for the collector
	c.waiters = kept
}

// Waiters returns how many After channels have not fired yet, so a test
// can wait until the goroutines it started are parked on the clock
// before it moves the clock.
func (c *Clock) Waiters() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.waiters)
}
