package cache

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// waitFor polls cond, yielding, until it holds; the test's own deadline
// bounds it.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		if t.Context().Err() != nil {
			t.Fatalf("gave up waiting for %s", what)
		}
		runtime.Gosched()
		time.Sleep(50 * time.Microsecond)
	}
}

func TestGroupCoalesces(t *testing.T) {
	var g Group
	const callers = 200
	var calls atomic.Int32
	release := make(chan struct{})
	fn := func(ctx context.Context) (any, error) {
		calls.Add(1)
		<-release
		return "answer", nil
	}

	var wg sync.WaitGroup
	results := make([]any, callers)
	shared := make([]bool, callers)
	errs := make([]error, callers)
	for i := range callers {
		wg.Go(func() { results[i], shared[i], errs[i] = g.Do(t.Context(), "k", fn) })
	}
	waitFor(t, "all callers to wait", func() bool { return g.Waiters() == callers })
	close(release)
	wg.Wait()

	if n := calls.Load(); n != 1 {
		t.Fatalf("fn ran %d times, want 1", n)
	}
	nShared := 0
	for i := range callers {
		if errs[i] != nil || results[i] != "answer" {
			t.Fatalf("caller %d got %v, %v", i, results[i], errs[i])
		}
		if shared[i] {
			nShared++
		}
	}
	if nShared != callers-1 || g.Coalesced() != callers-1 {
		t.Fatalf("shared by %d callers, Coalesced = %d; want %d", nShared, g.Coalesced(), callers-1)
	}
	if g.Waiters() != 0 {
		t.Fatalf("Waiters = %d after all returned", g.Waiters())
	}

	// The next call after the flight runs fn again.
	if v, sh, err := g.Do(t.Context(), "k", func(context.Context) (any, error) { return "again", nil }); v != "again" || sh || err != nil {
		t.Fatalf("later call: %v %v %v", v, sh, err)
	}
}

func TestGroupKeysIndependent(t *testing.T) {
	var g Group
	release := make(chan struct{})
	started := make(chan string, 2)
	fn := func(key string) func(context.Context) (any, error) {
		return func(context.Context) (any, error) {
			started <- key
			<-release
			return key, nil
		}
	}
	var wg sync.WaitGroup
	for _, k := range []string{"a", "b"} {
		wg.Go(func() {
			if v, _, _ := g.Do(t.Context(), k, fn(k)); v != k {
				t.Errorf("key %s got %v", k, v)
			}
		})
	}
	<-started
	<-started // both ran at once
	close(release)
	wg.Wait()
}

// TestGroupWaiterLeaves checks that a waiter whose client goes away
// returns at once, while the fetch goes on, uncancelled, for the others.
func TestGroupWaiterLeaves(t *testing.T) {
	for _, leaver := range []string{"starter", "joiner"} {
		t.Run(leaver, func(t *testing.T) {
			var g Group
			release := make(chan struct{})
			fnCtx := make(chan context.Context, 1)
			fn := func(ctx context.Context) (any, error) {
				fnCtx <- ctx
				<-release
				return "answer", ctx.Err()
			}

			leaveCtx, leave := context.WithCancel(t.Context())
			defer leave()
			leaverDone := make(chan error, 1)
			stayerDone := make(chan any, 1)
			runLeaver := func() {
				go func() {
					_, _, err := g.Do(leaveCtx, "k", fn)
					leaverDone <- err
				}()
			}
			runStayer := func() {
				go func() {
					v, _, err := g.Do(t.Context(), "k", fn)
					if err != nil {
						v = err
					}
					stayerDone <- v
				}()
			}
			if leaver == "starter" {
				runLeaver()
				ctx := <-fnCtx
				defer func() {
					if ctx.Err() != nil {
						t.Error("fn's context cancelled with the starter's")
					}
				}()
				runStayer()
			} else {
				runStayer()
				<-fnCtx
				runLeaver()
			}
			waitFor(t, "both to wait", func() bool { return g.Waiters() == 2 })

			leave()
			if err := <-leaverDone; !errors.Is(err, context.Canceled) {
				t.Fatalf("leaver got %v, want context.Canceled", err)
			}
			select {
			case v := <-stayerDone:
				t.Fatalf("stayer returned %v before the fetch ended", v)
			default:
			}
			close(release)
			if v := <-stayerDone; v != "answer" {
				t.Fatalf("stayer got %v, want the answer (fn's ctx must not be cancelled)", v)
			}
		})
	}
}

func TestGroupCancelledBeforeStart(t *testing.T) {
	var g Group
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	ran := false
	if _, _, err := g.Do(ctx, "k", func(context.Context) (any, error) { ran = true; return nil, nil }); !errors.Is(err, context.Canceled) || ran {
		t.Fatalf("err %v, ran %v", err, ran)
	}
}

func TestGroupDetachedContextKeepsValues(t *testing.T) {
	type ctxKey struct{}
	var g Group
	ctx, cancel := context.WithTimeout(context.WithValue(t.Context(), ctxKey{}, "v"), time.Hour)
	defer cancel()
	v, _, err := g.Do(ctx, "k", func(ctx context.Context) (any, error) {
		if _, ok := ctx.Deadline(); ok {
			return nil, errors.New("fn inherited a deadline")
		}
		return ctx.Value(ctxKey{}), nil
	})
	if err != nil || v != "v" {
		t.Fatalf("got %v, %v", v, err)
	}
}

func TestGroupErrorsAndPanics(t *testing.T) {
	var g Group
	boom := errors.New("boom")
	if _, _, err := g.Do(t.Context(), "k", func(context.Context) (any, error) { return nil, boom }); err != boom {
		t.Fatalf("err = %v, want boom", err)
	}
	_, _, err := g.Do(t.Context(), "k", func(context.Context) (any, error) { panic("kaboom") })
	var pe *PanicError
	if !errors.As(err, &pe) || pe.Value != "kaboom" || !strings.Contains(pe.Error(), "kaboom") || len(pe.Stack) == 0 {
		t.Fatalf("panic came back as %v", err)
	}
}
