package breaker

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// waitFor bounds every wait in these tests: far beyond what a loaded
// machine needs, so a hang fails the test instead of running into go
// test's timeout.
const waitFor = 10 * time.Second

// receive waits (bounded) for a value on ch; what names it in the failure.
func receive(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(waitFor):
		t.Fatalf("no %s within %v", what, waitFor)
	}
}

// TestOpenProbeClose opens the breaker with a failure, keeps it open while
// the probe fails, and closes it once the probe succeeds, reporting each
// transition exactly once.
func TestOpenProbeClose(t *testing.T) {
	var healthy atomic.Bool
	var mu sync.Mutex
	var changes []bool
	changed := make(chan struct{}, 4)
	b := &Breaker{
		Probe: func(ctx context.Context) error {
			if healthy.Load() {
				return nil
			}
			return errors.New("still down")
		},
		ProbeEvery: time.Millisecond,
		OnChange: func(up bool, err error) {
			mu.Lock()
			changes = append(changes, up)
			mu.Unlock()
			if !up && err == nil {
				t.Error("OnChange(false) without the failure")
			}
			changed <- struct{}{}
		},
	}
	defer b.Close()
	if !b.Allow() || !b.Up() {
		t.Fatal("a new breaker is not up")
	}
	boom := errors.New("boom")
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() { b.Fail(boom) })
	}
	wg.Wait()
	receive(t, changed, "transition to down")
	if b.Allow() {
		t.Fatal("Allow after a failure")
	}
	if got := b.Failures(); got != 8 {
		t.Fatalf("Failures = %d, want 8", got)
	}
	healthy.Store(true)
	receive(t, changed, "transition to up")
	if !b.Allow() {
		t.Fatal("not up after a successful probe")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(changes) != 2 || changes[0] || !changes[1] {
		t.Fatalf("transitions %v, want [false true]", changes)
	}
}

// TestCloseStopsProbe checks that Close ends a probe that never succeeds.
func TestCloseStopsProbe(t *testing.T) {
	probes := make(chan struct{}, 100)
	var afterClose atomic.Int64 // probes begun once Close has returned
	var closed atomic.Bool
	b := &Breaker{
		Probe: func(ctx context.Context) error {
			if closed.Load() {
				afterClose.Add(1)
			}
			select {
			case probes <- struct{}{}:
			default:
			}
			return errors.New("down")
		},
		ProbeEvery: time.Millisecond,
	}
	b.Fail(errors.New("x"))
	receive(t, probes, "probe while down")
	// Close returns once the probe has stopped: that is the event waited
	// for, bounded, rather than a pause and a look for silence.
	returned := make(chan struct{})
	go func() { b.Close(); closed.Store(true); close(returned) }()
	receive(t, returned, "return from Close (the probe did not stop)")
	if n := afterClose.Load(); n != 0 {
		t.Fatalf("%d probes after Close", n)
	}
	if b.Allow() {
		t.Fatal("Close changed the state")
	}
}
