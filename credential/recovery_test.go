package credential

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caproxy/caproxy/cloudagent"
)

// miss does what the proxy does for one cache miss: Apply, call AHT, and on
// a token refusal Reject and try once more with a new token. It returns
// nil on success, Apply's error, or errRefused when CloudAgent refused the
// token again. accept, when set, reports a successful call to the source.
func miss(t *testing.T, ts *TokenSource, srv func(http.Header) string, accept bool) error {
	t.Helper()
	for attempt := 0; ; attempt++ {
		h := http.Header{}
		handle, err := ts.Apply(context.Background(), h)
		if err != nil {
			return err
		}
		msg := srv(h)
		switch {
		case msg == "":
			if accept {
				ts.Accept(handle)
			}
			return nil
		case !cloudagent.IsTokenProblem(msg):
			t.Errorf("AHT answered %q", msg)
			return nil
		}
		ts.Reject(handle)
		if attempt == 1 {
			return errRefused
		}
	}
}

var errRefused = errors.New("token refused twice")

// burst runs n concurrent misses and returns their errors.
func burst(t *testing.T, n int, one func() error) []error {
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range errs {
		wg.Go(func() { errs[i] = one() })
	}
	wg.Wait()
	return errs
}

// TestFreshTokenRefusedPausesGeneration has CloudAgent refuse every token:
// bursts of 16 concurrent misses every second for 30 s cost at most 3
// generations (pauses of 5, 10, 20 s), misses meanwhile fail with a
// RecoveringError, and once CloudAgent accepts tokens again a miss
// succeeds within a minute.
func TestFreshTokenRefusedPausesGeneration(t *testing.T) {
	for _, accept := range []bool{true, false} {
		name := "with Accept"
		if !accept {
			name = "without Accept"
		}
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, 10, nil)
			call := func(h http.Header) string { return e.aht(t, demoUser, h) }
			e.sim.SetRefuseTokens(true)
			start := e.clk.Now()
			recovering := 0
			for range 30 {
				for _, err := range burst(t, 16, func() error { return miss(t, e.ts, call, accept) }) {
					switch re, ok := errors.AsType[*RecoveringError](err); {
					case ok:
						recovering++
						if !errors.Is(err, ErrRecovering) || !re.RetryAt.After(e.clk.Now()) || re.RetryAfter(e.clk.Now()) < 1 {
							t.Fatalf("recovering error %v: want ErrRecovering with a retry time ahead", err)
						}
					case err == nil:
						t.Fatal("a miss succeeded while CloudAgent refuses every token")
					case !errors.Is(err, errRefused):
						t.Fatalf("miss: %v", err)
					}
				}
				e.clk.Advance(time.Second)
			}
			if g := e.gens(); g < 1 || g > 3 {
				t.Fatalf("%d generations in 30 s of refused tokens, want 1 to 3", g)
			}
			if recovering == 0 {
				t.Error("no miss was told generation pauses")
			}
			if p := e.ts.RecoveryPauses(); p != e.gens() {
				t.Errorf("%d recovery pauses for %d refused fresh tokens", p, e.gens())
			}
			if n := strings.Count(e.logs.String(), "pausing token generation"); int64(n) != e.ts.RecoveryPauses() {
				t.Errorf("%d pause log lines for %d pauses:\n%s", n, e.ts.RecoveryPauses(), e.logs)
			}
			if !e.ts.Ready() {
				t.Error("Ready during a recovery pause = false; a load balancer would drop this replica's hits too")
			}
			spent := e.gens()

			// CloudAgent accepts tokens again: service is back within a
			// minute, with one more generation.
			e.sim.SetRefuseTokens(false)
			back := e.clk.Now()
			for miss(t, e.ts, call, accept) != nil {
				if e.clk.Now().Sub(back) > time.Minute {
					t.Fatalf("no miss succeeded within a minute of CloudAgent accepting tokens (started %v)", start)
				}
				e.clk.Advance(time.Second)
			}
			if g := e.gens(); g != spent+1 {
				t.Errorf("recovery cost %d generations, want 1", g-spent)
			}
			if !accept {
				// The token proves itself by age: a refusal after a minute
				// is a token that ended, not a fresh one, so no pause.
				e.clk.Advance(freshTokenAge)
			}
			// The run of refusals is over: the working token's refusal is
			// replaced at once, and the new token's refusal pauses
			// generation for the shortest pause again.
			e.sim.SetRefuseTokens(true)
			now := e.clk.Now()
			if err := miss(t, e.ts, call, accept); !errors.Is(err, errRefused) {
				t.Fatalf("miss after recovery: %v, want the new token refused too", err)
			}
			_, err := e.ts.Apply(context.Background(), http.Header{})
			re, ok := errors.AsType[*RecoveringError](err)
			if !ok || !re.RetryAt.Equal(now.Add(minRecoveryPause)) || re.Refused != 1 {
				t.Fatalf("Apply after the refusals: %v; want a pause of %v", err, minRecoveryPause)
			}
		})
	}
}

// TestOldTokenRefusedDoesNotPause checks that a refused token older than
// a minute (replaced by another app, or revoked) is replaced at once.
func TestOldTokenRefusedDoesNotPause(t *testing.T) {
	e := newEnv(t, 10, nil)
	h1, _ := e.apply(t)
	e.clk.Advance(freshTokenAge)
	e.ts.Reject(h1)
	if _, err := e.ts.Apply(context.Background(), http.Header{}); err != nil {
		t.Fatalf("Apply after an old token's refusal: %v", err)
	}
	if g, p := e.gens(), e.ts.RecoveryPauses(); g != 2 || p != 0 {
		t.Errorf("%d generations, %d pauses; want 2, 0", g, p)
	}
}

// TestRecoveryPauseGrowsAndCaps checks the pause lengths of a long run of
// refused fresh tokens: 5 s doubling, never above 4 min.
func TestRecoveryPauseGrowsAndCaps(t *testing.T) {
	e := newEnv(t, 1000, nil)
	want := []time.Duration{5 * time.Second, 10 * time.Second, 20 * time.Second, 40 * time.Second,
		80 * time.Second, 160 * time.Second, 240 * time.Second, 240 * time.Second}
	for i, w := range want {
		h, _ := e.apply(t)
		now := e.clk.Now()
		e.ts.Reject(h)
		_, err := e.ts.Apply(context.Background(), http.Header{})
		re, ok := errors.AsType[*RecoveringError](err)
		if !ok || re.RetryAt.Sub(now) != w || re.Refused != i+1 {
			t.Fatalf("refusal %d: %v; want a pause of %v", i+1, err, w)
		}
		e.clk.Advance(w)
	}
}

// TestSharedFreshTokenRefusedHoldsReplicas has CloudAgent refuse every
// token with three replicas sharing one store: bursts on all replicas for
// 30 s cost at most 3 generations, as on one node.
func TestSharedFreshTokenRefusedHoldsReplicas(t *testing.T) {
	e := newShEnv(t, true)
	rs := e.replicas(3)
	call := func(h http.Header) string { return simAHT(t, e.srv, shUser, h) }
	e.sim.SetRefuseTokens(true)
	for range 30 {
		var wg sync.WaitGroup
		for _, ts := range rs {
			for range 6 {
				wg.Go(func() {
					if err := miss(t, ts, call, true); err == nil {
						t.Error("a miss succeeded while CloudAgent refuses every token")
					}
				})
			}
		}
		wg.Wait()
		e.clk.Advance(time.Second)
	}
	if g := e.gens(); g < 1 || g > 3 {
		t.Fatalf("%d generations in 30 s of refused tokens on 3 replicas, want 1 to 3", g)
	}
	e.sim.SetRefuseTokens(false)
	back := e.clk.Now()
	for _, ts := range rs {
		for miss(t, ts, call, true) != nil {
			if e.clk.Now().Sub(back) > time.Minute {
				t.Fatal("a replica was not served within a minute of CloudAgent accepting tokens")
			}
			e.clk.Advance(time.Second)
		}
	}
}
