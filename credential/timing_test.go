package credential

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/caproxy/caproxy/cloudagent"
)

// slowGeneration makes each generateToken call take d on the fake clock,
// as a slow upstream does.
func slowGeneration(e **env, d time.Duration) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == cloudagent.PathGenerateToken {
				(*e).clk.Advance(d)
			}
			next.ServeHTTP(w, r)
		})
	}
}

// TestExpiryCountedFromBeforeTheCall checks that a token's life is counted
// from when its generation was sent, not from when the answer came: with a
// generation taking 30 s, the refresh falls due 53 min after the call went
// out, not 30 s later.
func TestExpiryCountedFromBeforeTheCall(t *testing.T) {
	var e *env
	e = newEnv(t, 10, slowGeneration(&e, 30*time.Second))
	t0 := e.clk.Now()
	e.apply(t)
	e.clk.Set(t0.Add(DefaultTokenTTL - DefaultRefreshBefore + 15*time.Second))
	e.apply(t)
	if g := e.gens(); g != 2 {
		t.Fatalf("%d generations at 53m15s after the first call went out, want 2 (refresh due at 53m)", g)
	}
}

// TestSharedExpiryCountedFromBeforeTheCall is the same with a shared store.
func TestSharedExpiryCountedFromBeforeTheCall(t *testing.T) {
	e := newShEnv(t, true)
	t0 := e.clk.Now()
	ts := e.replica()
	ts.Client = &http.Client{Transport: advanceOnGenerate{e, 30 * time.Second}}
	shApply(t, ts)
	tok, ok, err := e.store.Get(context.Background(), shUser)
	if err != nil || !ok || !tok.Expires.Equal(t0.Add(DefaultTokenTTL)) {
		t.Fatalf("stored token expires %v (ok %v, err %v), want %v", tok.Expires, ok, err, t0.Add(DefaultTokenTTL))
	}
}

// advanceOnGenerate is a transport that takes d on the fake clock for each
// generateToken call.
type advanceOnGenerate struct {
	e *shEnv
	d time.Duration
}

func (a advanceOnGenerate) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Path == cloudagent.PathGenerateToken {
		a.e.clk.Advance(a.d)
	}
	return a.e.srv.Client().Transport.RoundTrip(r)
}

// TestRefreshBeforeCappedAtHalfTheTTL checks that a RefreshBefore longer
// than the token's life is cut to half of it, so a token is used for a
// while instead of being replaced on every call.
func TestRefreshBeforeCappedAtHalfTheTTL(t *testing.T) {
	e := newEnv(t, 10, nil)
	e.ts.TTL, e.ts.RefreshBefore = 10*time.Minute, 20*time.Minute
	t0 := e.clk.Now()
	h1, _ := e.apply(t)
	e.clk.Set(t0.Add(4*time.Minute + 59*time.Second))
	if h, _ := e.apply(t); h != h1 || e.gens() != 1 {
		t.Fatalf("at 4m59s of a 10 min token: regenerated (%d generations), want it kept until 5m", e.gens())
	}
	e.clk.Set(t0.Add(5 * time.Minute))
	if h, _ := e.apply(t); h == h1 || e.gens() != 2 {
		t.Fatalf("at 5m of a 10 min token: not refreshed (%d generations)", e.gens())
	}
}

// TestFailedGenerationBackoffDoubles checks the backoff after failed
// generations: 1 s, 2 s, 4 s, no upstream call in between.
func TestFailedGenerationBackoffDoubles(t *testing.T) {
	e := newEnv(t, 10, nil)
	e.ts.APIKey = "wrong-key-S3CRET"
	tries := func() int64 { return e.sim.Stats().TokenRejected }
	for i, wait := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second} {
		if _, err := e.ts.Apply(context.Background(), http.Header{}); err == nil {
			t.Fatal("Apply with a wrong key succeeded")
		}
		if n := tries(); n != int64(i+1) {
			t.Fatalf("after attempt %d: %d upstream tries", i+1, n)
		}
		e.clk.Advance(wait - time.Millisecond)
		e.ts.Apply(context.Background(), http.Header{})
		if n := tries(); n != int64(i+1) {
			t.Fatalf("%v after failure %d: tried again (%d tries), want a backoff of %v", wait-time.Millisecond, i+1, n, wait)
		}
		e.clk.Advance(time.Millisecond)
	}
}

// TestCanceledCallerSpendsNoGeneration checks that an Apply whose context
// has already ended starts no generation: nobody would use the token.
func TestCanceledCallerSpendsNoGeneration(t *testing.T) {
	// A generation that started would hang here until the test ends, so
	// it is seen in flight rather than raced against.
	release := make(chan struct{})
	e := newEnv(t, 10, func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == cloudagent.PathGenerateToken {
				<-release
			}
			next.ServeHTTP(w, r)
		})
	})
	defer close(release)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := e.ts.Apply(ctx, http.Header{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Apply with an ended context: %v, want context.Canceled", err)
	}
	e.ts.mu.Lock()
	started := e.ts.flight != nil
	e.ts.mu.Unlock()
	if started {
		t.Fatal("Apply with an ended context started a generation")
	}
}

// TestSuspectDropsOnlyAnOldToken checks Suspect's age rule: a token younger
// than MinSuspectAge is kept, an older one replaced.
func TestSuspectDropsOnlyAnOldToken(t *testing.T) {
	e := newEnv(t, 10, nil)
	t0 := e.clk.Now()
	h1, _ := e.apply(t)
	e.clk.Set(t0.Add(DefaultMinSuspectAge - time.Second))
	e.ts.Suspect(h1)
	if h, _ := e.apply(t); h != h1 || e.gens() != 1 {
		t.Fatalf("a %v old token was dropped on suspicion (%d generations)", DefaultMinSuspectAge-time.Second, e.gens())
	}
	e.clk.Set(t0.Add(DefaultMinSuspectAge))
	e.ts.Suspect(h1)
	if h, _ := e.apply(t); h == h1 || e.gens() != 2 {
		t.Fatalf("a %v old token was kept on suspicion (%d generations)", DefaultMinSuspectAge, e.gens())
	}
}

// TestRefreshEndsRefusalRun checks that a token that lived to its refresh
// ends a run of refused fresh tokens, so the next refusal pauses for the
// shortest pause, not a longer one.
func TestRefreshEndsRefusalRun(t *testing.T) {
	e := newEnv(t, 10, nil)
	for range 2 { // two fresh tokens refused: the run is at 2
		h, _ := e.apply(t)
		e.ts.Reject(h)
		_, err := e.ts.Apply(context.Background(), http.Header{})
		re, ok := errors.AsType[*RecoveringError](err)
		if !ok {
			t.Fatalf("Apply after a refused fresh token: %v", err)
		}
		e.clk.Set(re.RetryAt)
	}
	e.apply(t) // a working token, never refused nor accepted...
	e.clk.Advance(DefaultTokenTTL - DefaultRefreshBefore)
	h, _ := e.apply(t) // ...lives to its refresh
	now := e.clk.Now()
	e.ts.Reject(h) // the refreshed token is refused at once
	_, err := e.ts.Apply(context.Background(), http.Header{})
	if re, ok := errors.AsType[*RecoveringError](err); !ok || !re.RetryAt.Equal(now.Add(minRecoveryPause)) {
		t.Fatalf("refusal after a refresh: %v, want a pause of %v", err, minRecoveryPause)
	}
}

// TestSharedRefusalRunCarriesToIdleReplica checks that a replica that
// meets another's recovery hold continues its count: when its own fresh
// token is then refused, it pauses as long as the other would.
func TestSharedRefusalRunCarriesToIdleReplica(t *testing.T) {
	e := newShEnv(t, true)
	a, c := e.replica(), e.replica()
	for range 2 { // A's two fresh tokens refused: A holds for 10 s
		h, _ := shApply(t, a)
		a.Reject(h)
		_, err := a.Apply(context.Background(), http.Header{})
		re, ok := errors.AsType[*RecoveringError](err)
		if !ok {
			t.Fatalf("A after a refused fresh token: %v", err)
		}
		if re.Refused == 2 {
			break
		}
		e.clk.Set(re.RetryAt)
	}
	_, err := c.Apply(context.Background(), http.Header{})
	re, ok := errors.AsType[*RecoveringError](err)
	if !ok || re.Refused != 2 {
		t.Fatalf("C during A's hold: %v, want A's recovery hold with 2 refusals", err)
	}
	e.clk.Set(re.RetryAt)
	h, _ := shApply(t, c) // C generates the third token...
	now := e.clk.Now()
	c.Reject(h) // ...which is refused too
	_, err = c.Apply(context.Background(), http.Header{})
	if re, ok := errors.AsType[*RecoveringError](err); !ok || !re.RetryAt.Equal(now.Add(4*minRecoveryPause)) {
		t.Fatalf("C after the third refused token: %v, want a pause of %v", err, 4*minRecoveryPause)
	}
}
