// Package breaker is a circuit breaker for one dependency (Redis): once a
// call fails, callers stop waiting on the dependency at all, and a
// background probe closes the circuit again when the dependency answers.
//
// It has two states. Up (closed): calls go through; the first failure
// reported opens it. Down (open): Allow reports false at once, and one
// goroutine probes every ProbeEvery until a probe succeeds, which closes it.
// Each transition is reported once to OnChange.
package breaker

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultProbeEvery is how often a Breaker made without ProbeEvery probes
// while down.
const DefaultProbeEvery = 250 * time.Millisecond

// Breaker guards calls to one dependency. Set the exported fields before
// first use; the zero value (with Probe set) is ready. Safe for concurrent
// use.
type Breaker struct {
	// Probe checks the dependency; nil error means it is healthy. It is
	// called on the probe goroutine only, with a context bounded by
	// ProbeTimeout.
	Probe func(ctx context.Context) error
	// ProbeEvery is the pause between probes while down; zero means
	// DefaultProbeEvery.
	ProbeEvery time.Duration
	// ProbeTimeout bounds one probe; zero means ProbeEvery.
	ProbeTimeout time.Duration
	// OnChange, if set, is called once per transition, on the goroutine
	// that caused it: up false with the failure that opened the circuit,
	// up true (err nil) when a probe closed it.
	OnChange func(up bool, err error)

	down     atomic.Bool
	failures atomic.Int64

	// mu guards closed and stop, and orders probing.Add before Close's
	// Wait.
	mu     sync.Mutex
	closed bool
	stop   chan struct{}
	// probing counts the running probe goroutine, for Close to wait on.
	probing sync.WaitGroup
}

// Allow reports whether calls may go to the dependency now: false while
// the circuit is open.
func (b *Breaker) Allow() bool { return !b.down.Load() }

// Up is Allow, named for gauges and readiness.
func (b *Breaker) Up() bool { return !b.down.Load() }

// Failures returns how many failures have been reported so far.
func (b *Breaker) Failures() int64 { return b.failures.Load() }

// Fail reports a failed call. The first failure while up opens the circuit
// and starts the probe.
func (b *Breaker) Fail(err error) {
	b.failures.Add(1)
	if !b.down.CompareAndSwap(false, true) {
		return
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return
	}
	if b.stop == nil {
		b.stop = make(chan struct{})
	}
	stop := b.stop
	b.probing.Add(1)
	b.mu.Unlock()
	if b.OnChange != nil {
		b.OnChange(false, err)
	}
	go b.probe(stop)
}

// probe runs while the circuit is open, until a probe succeeds or Close.
func (b *Breaker) probe(stop <-chan struct{}) {
	defer b.probing.Done()
	every := b.ProbeEvery
	if every <= 0 {
		every = DefaultProbeEvery
	}
	timeout := b.ProbeTimeout
	if timeout <= 0 {
		timeout = every
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		err := b.Probe(ctx)
		cancel()
		if err != nil {
			continue
		}
		b.down.Store(false)
		if b.OnChange != nil {
			b.OnChange(true, nil)
		}
		return
	}
}

// Close stops a running probe and waits for it to end (a probe under way
// finishes first, within ProbeTimeout), so nothing uses the dependency
// after Close; the breaker then stays in its state.
func (b *Breaker) Close() {
	b.mu.Lock()
	if !b.closed {
		b.closed = true
		if b.stop != nil {
			close(b.stop)
		}
	}
	b.mu.Unlock()
	b.probing.Wait()
}
