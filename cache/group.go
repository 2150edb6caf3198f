package cache

import (
	"context"
	"fmt"
	"runtime/debug"
	"sync/atomic"

	"golang.org/x/sync/singleflight"
)

// Group coalesces concurrent fetches of one key into a single call, so a
// burst of misses costs one upstream call. The zero Group is ready to use.
type Group struct {
	flights   singleflight.Group
	waiters   atomic.Int64
	coalesced atomic.Int64
}

// Do runs fn for key unless a call for key is already in flight, in which
// case it waits for that call's result. shared reports that v and err came
// from a call another caller started.
//
// fn runs with a context detached from every waiter's cancellation (the
// first caller's values, without its cancel or deadline), so it should set
// its own deadline. A caller whose ctx ends stops waiting and gets
// ctx.Err() at once, while the call goes on for the others and its result
// is used by whoever is still waiting (fn may also store it).
//
// A panic in fn is returned to every waiter as an error, carrying the
// panic value and stack, instead of crashing the process from the
// goroutine fn runs on.
func (g *Group) Do(ctx context.Context, key string, fn func(ctx context.Context) (any, error)) (v any, shared bool, err error) {
	if err := ctx.Err(); err != nil {
		return nil, false, err
	}
	// started is set only by the caller whose fn runs; the channel send
	// of the result orders the write before this caller's read.
	var started bool
	ch := g.flights.DoChan(key, func() (v any, err error) {
		started = true
		defer func() {
			if p := recover(); p != nil {
				v, err = nil, &PanicError{Value: p, Stack: debug.Stack()}
			}
		}()
		return fn(context.WithoutCancel(ctx))
	})
	// Counted once DoChan has registered this caller with the flight, so
	// Waiters never includes a caller that could still start a new one.
	g.waiters.Add(1)
	defer g.waiters.Add(-1)
	select {
	case res := <-ch:
		if !started {
			g.coalesced.Add(1)
		}
		return res.Val, !started, res.Err
	case <-ctx.Done():
		return nil, false, ctx.Err()
	}
}

// Waiters returns how many callers are in Do now, waiting for a result
// (each call's starter included).
func (g *Group) Waiters() int64 { return g.waiters.Load() }

// Coalesced returns how many callers so far got the result of a call
// another caller started, instead of causing one.
func (g *Group) Coalesced() int64 { return g.coalesced.Load() }

// PanicError is the error Do returns when fn panicked.
type PanicError struct {
	// Value is what fn panicked with.
	Value any
	// Stack is fn's goroutine stack at the panic.
	Stack []byte
}

// Error implements error.
func (e *PanicError) Error() string {
	return fmt.Sprintf("cache: coalesced fetch panicked: %v\n\n%s", e.Value, e.Stack)
}
