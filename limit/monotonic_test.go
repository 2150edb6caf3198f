package limit

import (
	"context"
	"testing"
	"time"
	"unsafe"

	"github.com/ulule/limiter/v3"
)

// wallStepped returns t with its wall clock moved by d and its monotonic
// reading unchanged: what time.Now returns after an NTP step. The time
// package has no way to build one, so this edits the wall-seconds bits of
// Time's layout (wall: monotonic flag, 33-bit seconds since 1885, 30-bit
// nanoseconds; ext: the monotonic reading). The test checks the result
// before relying on it.
func wallStepped(t time.Time, d time.Duration) time.Time {
	type layout struct {
		wall uint64
		ext  int64
		loc  *time.Location
	}
	p := (*layout)(unsafe.Pointer(&t))
	p.wall += uint64(d/time.Second) << 30
	return t
}

// TestMemoryStoreIgnoresWallClockSteps: a wall clock stepped forward by
// two windows (NTP) must not free the slots still inside CloudAgent's
// real window, which only the monotonic clock measures.
func TestMemoryStoreIgnoresWallClockSteps(t *testing.T) {
	base := time.Now() // carries a monotonic reading
	stepped := wallStepped(base.Add(time.Second), 2*time.Minute)
	if got := stepped.Sub(base); got != time.Second {
		t.Fatalf("wallStepped: monotonic distance %v, want 1s (time.Time layout changed?)", got)
	}
	if got := time.Duration(stepped.UnixNano() - base.UnixNano()); got != 2*time.Minute+time.Second {
		t.Fatalf("wallStepped: wall distance %v, want 2m1s (time.Time layout changed?)", got)
	}

	now := base
	s := &MemoryStore{Now: func() time.Time { return now }}
	rate := limiter.Rate{Period: time.Minute, Limit: 2}
	ctx := context.Background()
	for range 2 {
		if c, err := s.Get(ctx, "acct", rate); err != nil || c.Reached {
			t.Fatalf("call within the limit refused: %+v %v", c, err)
		}
	}
	now = stepped
	if c, err := s.Get(ctx, "acct", rate); err != nil || !c.Reached {
		t.Fatalf("after a wall-clock step of 2m (1s of real time) a third call was admitted: %+v %v", c, err)
	}
	now = base.Add(time.Minute + time.Second) // a real window later
	if c, err := s.Get(ctx, "acct", rate); err != nil || c.Reached {
		t.Fatalf("a real window later the call was refused: %+v %v", c, err)
	}
}
