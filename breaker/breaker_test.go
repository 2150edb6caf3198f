package breaker

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

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
	<-changed
	if b.Allow() {
		t.Fatal("Allow after a failure")
	}
	if got := b.Failures(); got != 8 {
		t.Fatalf("Failures = %d, want 8", got)
	}
	healthy.Store(true)
	<-changed
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
	b := &Breaker{
		Probe: func(ctx context.Context) error {
			select {
			case probes <- struct{}{}:
			default:
			}
			return errors.New("down")
		},
		ProbeEvery: time.Millisecond,
	}
	b.Fail(errors.New("x"))
	<-probes
	b.Close()
	// Drain what was sent before Close took effect, then expect silence
	// from a stopped probe: a probe goroutine still running would keep
	// filling the channel.
	time.Sleep(20 * time.Millisecond)
	for len(probes) > 0 {
		<-probes
	}
	time.Sleep(20 * time.Millisecond)
	if n := len(probes); n != 0 {
		t.Fatalf("%d probes after Close", n)
	}
	if b.Allow() {
		t.Fatal("Close changed the state")
	}
}
