package proxy_test

import (
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/caproxy/caproxy/cloudagent/sim"
	"github.com/caproxy/caproxy/limit"
)

// TestSendWindowMarginAbsorbsOneWayDelay runs the AHT budget with
// production's numbers (50 calls, limit.SendWindow of one minute) against a
// simulator that counts calls on arrival after a one-way delay, on the fake
// clock. Fifty calls sent at 0 s arrive at the delay; then, with no delay,
// one new call every 100 ms from 60.001 s to 62 s is sent as soon as the
// budget allows. A delay under the margin (one second) must leave the
// simulator with nothing to refuse; a delay over it must not, which shows
// the check can fail and that the margin is what keeps the limit.
func TestSendWindowMarginAbsorbsOneWayDelay(t *testing.T) {
	for _, tc := range []struct {
		delay      time.Duration
		violations bool
	}{
		{900 * time.Millisecond, false},
		{1100 * time.Millisecond, true},
	} {
		t.Run(tc.delay.String(), func(t *testing.T) {
			clock := newFakeClock()
			start := clock.Now()
			h := newHarness(t, setup{
				clock:     clock,
				sim:       sim.Options{Delay: tc.delay}, // CloudAgent's 50 a minute
				perWindow: 50,
				window:    time.Minute, // the daemon gives the budget limit.SendWindow of it
			})

			var wg sync.WaitGroup
			replies := make([]reply, 50)
			for i := range replies {
				wg.Go(func() { replies[i] = h.aht(apikeyAccount, fmt.Sprintf("agent%03d", i+1)) })
			}
			waitForWaiters(t, clock, len(replies)) // all 50 on the wire
			clock.Advance(tc.delay)                // and arrived
			wg.Wait()
			for i, r := range replies {
				if r.code != http.StatusOK {
					t.Fatalf("call %d at 0 s: HTTP %d %s", i+1, r.code, r.body)
				}
			}

			h.sim.SetDelay(0)
			var admittedAt, refusedAt []time.Duration
			for i, at := 0, time.Minute+time.Millisecond; at <= 62*time.Second; i, at = i+1, at+100*time.Millisecond {
				clock.Set(start.Add(at))
				switch r := h.aht(apikeyAccount, fmt.Sprintf("agent%03d", 100+i)); r.code {
				case http.StatusOK:
					admittedAt = append(admittedAt, at)
				case http.StatusTooManyRequests:
					refusedAt = append(refusedAt, at)
				default:
					t.Fatalf("call at %v: HTTP %d %s", at, r.code, r.body)
				}
			}
			// The budget frees the first slots one SendWindow after they were
			// taken, not one CloudAgent window after. (Over the margin the
			// first call it sends is refused upstream, and caproxy then
			// rests the account for a window.)
			if !tc.violations && (len(refusedAt) == 0 || refusedAt[len(refusedAt)-1] >= limit.SendWindow(time.Minute) ||
				len(admittedAt) == 0 || admittedAt[0] < limit.SendWindow(time.Minute)) {
				t.Fatalf("refused at %v, admitted at %v; want refusals before %v and admissions from then on",
					refusedAt, admittedAt, limit.SendWindow(time.Minute))
			}

			st := h.sim.Stats()
			broken := st.LimitViolations != 0 || st.MaxArrivalsInWindow > 50
			if broken != tc.violations {
				t.Fatalf("one-way delay %v: simulator saw %d limit violations, at most %d calls in a minute; want violations: %v",
					tc.delay, st.LimitViolations, st.MaxArrivalsInWindow, tc.violations)
			}
		})
	}
}

// waitForWaiters waits (in real time, bounded) until n timers wait on clock.
func waitForWaiters(t *testing.T, clock interface{ Waiters() int }, n int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); clock.Waiters() < n; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d timers waiting on the clock", clock.Waiters(), n)
		}
	}
}
