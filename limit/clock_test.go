package limit

import (
	"time"

	"github.com/caproxy/caproxy/internal/fakeclock"
)

// autoClock is a fakeclock.Clock whose After moves the clock forward by d
// itself and fires at once, so a Budget.Wait runs instantly yet sees
// exactly the time it asked to wait for. On a plain fakeclock.Clock,
// After fires only when a test calls Advance or Set.
type autoClock struct{ *fakeclock.Clock }

func (c autoClock) After(d time.Duration) <-chan time.Time {
	c.Advance(d)
	return c.Clock.After(0)
}
