package refresh

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/caproxy/caproxy/internal/fakeclock"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// cfg is 50 calls per 60 s window, 10 reserved, ttl 30 s.
func cfg() Config {
	return Config{TTL: 30 * time.Second, Window: time.Minute, PerWindow: 50, Reserve: 10}
}

// ask records n asks for key spread evenly over the span before now.
func ask(s *Scheduler[int], key string, n int, fetched, now time.Time, span time.Duration) {
	for i := n; i > 0; i-- {
		s.Asked(key, "acct", 0, fetched, now.Add(-span*time.Duration(i-1)/time.Duration(n)))
	}
}

func TestNextOrder(t *testing.T) {
	type key struct {
		name    string
		asks    int           // over the last ttl
		age     time.Duration // of the answer held; -1: none
		want    string        // reason, "" when not a candidate
		wantPos int           // position in the hand-out order
	}
	cases := []struct {
		name string
		keys []key
	}{
		{"missing before stale before ahead", []key{
			{"ahead", 5, 25 * time.Second, ReasonAhead, 2},
			{"stale", 1, 40 * time.Second, ReasonStale, 1},
			{"missing", 1, -1, ReasonMissing, 0},
		}},
		{"stale by demand times age", []key{
			{"old-rare", 1, 100 * time.Second, ReasonStale, 1}, // (1+1)*100
			{"young-hot", 9, 31 * time.Second, ReasonStale, 0}, // (9+1)*31
			{"young-rare", 1, 40 * time.Second, ReasonStale, 2},
		}},
		{"ahead only when hot and due", []key{
			{"cold-due", 1, 28 * time.Second, "", -1},
			{"hot-early", 5, 10 * time.Second, "", -1},
			{"hot-due-later", 5, 23 * time.Second, ReasonAhead, 1},
			{"hot-due-sooner", 2, 29 * time.Second, ReasonAhead, 0},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := New[int](cfg())
			now := t0.Add(time.Hour)
			for _, k := range tc.keys {
				var fetched time.Time
				if k.age >= 0 {
					fetched = now.Add(-k.age)
				}
				ask(s, k.name, k.asks, fetched, now, 29*time.Second)
			}
			var got []string
			for {
				j, ok := s.Next(now)
				if !ok {
					break
				}
				got = append(got, j.Key+"/"+j.Reason)
			}
			var want []string
			n := 0
			for _, k := range tc.keys {
				if k.want != "" {
					n++
				}
			}
			want = make([]string, n)
			for _, k := range tc.keys {
				if k.want != "" {
					want[k.wantPos] = k.name + "/" + k.want
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("order %v, want %v", got, want)
			}
		})
	}
}

func TestDemandPerTTL(t *testing.T) {
	cases := []struct {
		name  string
		every time.Duration // between asks
		hot   bool
	}{
		{"once per 40 s is cold", 40 * time.Second, false},
		{"once per ttl is cold", 30 * time.Second, false},
		{"every 10 s is hot", 10 * time.Second, true},
		{"every second is hot", time.Second, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := New[int](cfg())
			// The answer is always 24 s old at the ask: due for
			// refresh-ahead (lead 7.5 s) if the key is hot.
			now := t0
			for i := 0; i < 20; i++ {
				s.Asked("k", "acct", 0, now.Add(-24*time.Second), now)
				if i < 19 {
					now = now.Add(tc.every)
				}
			}
			j, ok := s.Next(now)
			if ok != tc.hot || ok && j.Reason != ReasonAhead {
				t.Fatalf("handed out %v (%+v), want %v", ok, j, tc.hot)
			}
		})
	}
}

func TestPaceSpreadsCalls(t *testing.T) {
	c := cfg() // 40 refreshes per minute, burst 4
	s := New[int](c)
	for i := range 200 {
		s.Asked(fmt.Sprintf("k%03d", i), "acct", 0, t0.Add(-time.Hour), t0)
	}
	// Step through one window in 100 ms steps, handing out what is due.
	perSecond := map[int]int{}
	total := 0
	for now := t0; now.Before(t0.Add(time.Minute)); now = now.Add(100 * time.Millisecond) {
		for {
			j, ok := s.Next(now)
			if !ok {
				break
			}
			s.Done(j, Refreshed, now, now, 0)
			perSecond[int(now.Sub(t0)/time.Second)]++
			total++
		}
	}
	// 40 per window plus the first burst, never more than a burst plus
	// one second's rate in any second.
	if total < 40 || total > 44 {
		t.Fatalf("%d refreshes in one window, want 40 to 44 (rate 40 + burst 4)", total)
	}
	for sec, n := range perSecond {
		if sec > 0 && n > 1 {
			t.Fatalf("%d refreshes in second %d after the burst, want at most 1 (40 per 60 s)", n, sec)
		}
	}
}

func TestGroupsPacedApart(t *testing.T) {
	c := cfg()
	c.PerWindow, c.Reserve = 11, 1 // 10 per window, burst 1
	s := New[int](c)
	s.Asked("a1", "A", 0, t0.Add(-time.Hour), t0)
	s.Asked("a2", "A", 0, t0.Add(-time.Hour), t0)
	s.Asked("b1", "B", 0, t0.Add(-time.Minute), t0)
	var got []string
	for {
		j, ok := s.Next(t0)
		if !ok {
			break
		}
		got = append(got, j.Key)
	}
	if fmt.Sprint(got) != "[a1 b1]" && fmt.Sprint(got) != "[a2 b1]" {
		t.Fatalf("handed out %v at once, want one of A's (burst 1) and B's", got)
	}
}

func TestDoneResults(t *testing.T) {
	cases := []struct {
		name      string
		res       Result
		fetched   time.Duration // after now; 0: unchanged
		retry     time.Duration
		nextAt    time.Duration // when the key is handed out again
		tokenBack bool
	}{
		{"refreshed: fresh until ttl-lead", Refreshed, 1, 0, 30*time.Second - 30*time.Second/4 + 1, false},
		{"no budget: held back for retry", NoBudget, 0, 5 * time.Second, 5 * time.Second, true},
		{"not needed: pace given back", NotNeeded, 1, 0, 30*time.Second - 30*time.Second/4 + 1, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := cfg()
			c.PerWindow, c.Reserve = 2, 1 // 1 per minute, burst 1
			s := New[int](c)
			now := t0
			for i := range 4 {
				s.Asked("hot", "acct", 0, now.Add(-time.Minute), now.Add(time.Duration(i)))
			}
			j, ok := s.Next(now)
			if !ok {
				t.Fatal("nothing handed out")
			}
			var fetched time.Time
			if tc.fetched != 0 {
				fetched = now
			}
			s.Done(j, tc.res, fetched, now, tc.retry)
			// Keep it hot.
			for i := range 4 {
				s.Asked("hot", "acct", 0, time.Time{}, now.Add(tc.nextAt-time.Duration(i+1)*time.Millisecond))
			}
			if _, ok := s.Next(now.Add(tc.nextAt - time.Millisecond)); ok {
				t.Fatalf("handed out again before %v", tc.nextAt)
			}
			_, ok = s.Next(now.Add(tc.nextAt))
			if tc.tokenBack && !ok {
				t.Fatalf("not handed out at %v although its pace was given back", tc.nextAt)
			}
			if !tc.tokenBack && ok && tc.nextAt < time.Minute {
				t.Fatalf("handed out at %v although the pace allows 1 a minute", tc.nextAt)
			}
		})
	}
}

func TestBoundedAndIdleDropped(t *testing.T) {
	c := cfg()
	c.MaxKeys = 3
	s := New[int](c)
	for i := range 5 {
		s.Asked(fmt.Sprint(i), "acct", 0, t0, t0)
	}
	if s.Len() != 3 || s.Untracked() != 2 {
		t.Fatalf("len %d untracked %d, want 3 and 2", s.Len(), s.Untracked())
	}
	// After Idle (2×30 s + 60 s) with no ask, Next drops them.
	s.Next(t0.Add(2*time.Minute + time.Second))
	if s.Len() != 0 {
		t.Fatalf("%d keys still tracked after idle", s.Len())
	}
	if !s.Asked("new", "acct", 0, t0, t0.Add(2*time.Minute+time.Second)) {
		t.Fatal("a new key was refused after idle keys were dropped")
	}
}

func TestRunOnFakeClock(t *testing.T) {
	clk := fakeclock.New(t0)
	c := Config{TTL: 6 * time.Second, Window: 6 * time.Second, PerWindow: 50, Reserve: 10}
	s := New[string](c)
	// 20 hot keys, answered at t0.
	for i := range 20 {
		k := fmt.Sprintf("k%02d", i)
		for range 3 {
			s.Asked(k, "acct", k, t0, t0)
		}
	}
	var mu sync.Mutex
	fetched := map[string]time.Time{}
	calls := 0
	do := func(ctx context.Context, j Job[string]) (Result, time.Time, time.Duration) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		now := clk.Now()
		fetched[j.Key] = now
		return Refreshed, now, 0
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Run(ctx, clk, RunOptions{Tick: 50 * time.Millisecond, Parallel: 1}, do)
	}()
	// Five windows in 50 ms steps; clients keep every key hot.
	for step := 1; step <= 600; step++ {
		waitParked(t, clk)
		clk.Advance(50 * time.Millisecond)
		now := clk.Now()
		if step%20 == 0 {
			mu.Lock()
			for i := range 20 {
				k := fmt.Sprintf("k%02d", i)
				f := fetched[k]
				if f.IsZero() {
					f = t0
				}
				if now.Sub(f) >= c.TTL && now.Sub(t0) > c.Window {
					mu.Unlock()
					t.Fatalf("at %v key %s expired (fetched %v) after the first window", now.Sub(t0), k, f.Sub(t0))
				}
				s.Asked(k, "acct", k, f, now)
			}
			mu.Unlock()
		}
	}
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	// Kept fresh through 30 s (checked above) on at most one call per
	// key per ttl: 20 × 30/6. Refreshing at the start of the lead (ttl/4)
	// took 120.
	if calls > 100 {
		t.Fatalf("%d refreshes in 5 windows, want at most 100 (20 keys × one per 6 s ttl)", calls)
	}
}

// waitParked waits until the Run loop is parked on the clock (or busy in
// do, which returns at once), so that a step never races the loop.
func waitParked(t *testing.T, clk *fakeclock.Clock) {
	t.Helper()
	for i := 0; clk.Waiters() == 0; i++ {
		if i > 1e6 {
			t.Fatal("Run never waited on the clock")
		}
		runtime.Gosched()
	}
}

// TestStaleOnlyWhenAskedSinceExpiry: an expired answer nobody asked for
// since is owed no call; one ask makes it a candidate.
func TestStaleOnlyWhenAskedSinceExpiry(t *testing.T) {
	s := New[int](cfg())
	s.Asked("k", "acct", 0, t0, t0.Add(10*time.Second)) // asked while fresh
	if j, ok := s.Next(t0.Add(50 * time.Second)); ok {
		t.Fatalf("handed out %+v: expired, but not asked for since", j)
	}
	s.Asked("k", "acct", 0, t0, t0.Add(51*time.Second))
	if j, ok := s.Next(t0.Add(51 * time.Second)); !ok || j.Reason != ReasonStale {
		t.Fatalf("Next after an ask of the expired key = %+v %v, want stale", j, ok)
	}
}

// TestScarce: a group is scarce while missing or stale keys wait for its
// pace, and not once they are all handed out.
func TestScarce(t *testing.T) {
	c := cfg()
	c.PerWindow, c.Reserve = 11, 1 // 10 per minute, burst 1
	s := New[int](c)
	now := t0.Add(time.Hour)
	s.Asked("a", "acct", 0, now.Add(-time.Minute), now)
	s.Asked("b", "acct", 0, now.Add(-time.Minute), now)
	if s.Scarce("acct") {
		t.Fatal("scarce before any Next")
	}
	j, ok := s.Next(now)
	if !ok || !s.Scarce("acct") {
		t.Fatalf("Next = %v; Scarce = %v, want true (one stale key left waiting for the pace)", ok, s.Scarce("acct"))
	}
	s.Done(j, Refreshed, now, now, 0)
	now = now.Add(6 * time.Second) // one more token
	if _, ok := s.Next(now); !ok {
		t.Fatal("second key not handed out after the pace allowed it")
	}
	if s.Scarce("acct") {
		t.Fatal("still scarce with nothing left waiting")
	}
	if s.Scarce("other") {
		t.Fatal("an unknown group is scarce")
	}
}

// TestAheadAsLateAsSafe: once a refresh has been timed, a hot key is
// refreshed margin (twice the refresh time plus two ticks) plus one tick
// before it expires, earlier when keys expiring together need the pace
// to get through them, and never before the lead.
func TestAheadAsLateAsSafe(t *testing.T) {
	// cfg: ttl 30 s, lead 7.5 s, tick 600 ms (60 s/50/2), one refresh per
	// 1.5 s (40 per minute).
	cases := []struct {
		name    string
		latency time.Duration // of the timed refresh
		keys    int           // hot keys expiring together
		before  time.Duration // first handed out this long before expiry
	}{
		{"one key: margin plus a tick", 200 * time.Millisecond, 1, 400*time.Millisecond + 3*600*time.Millisecond},
		{"three keys: two pace intervals earlier", 200 * time.Millisecond, 3, 400*time.Millisecond + 3*600*time.Millisecond + 2*1500*time.Millisecond},
		{"slow refreshes: the lead at most", 5 * time.Second, 1, 30 * time.Second / 4},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := New[int](cfg())
			// Time one refresh of a key with no answer.
			s.Asked("probe", "acct", 0, time.Time{}, t0)
			j, ok := s.Next(t0)
			if !ok || j.Key != "probe" {
				t.Fatalf("Next = %+v %v, want the probe", j, ok)
			}
			s.Done(j, Refreshed, t0.Add(tc.latency), t0.Add(tc.latency), 0)
			if got, want := s.Margin(), min(2*tc.latency+2*600*time.Millisecond, 30*time.Second/4); got != want {
				t.Fatalf("Margin = %v, want %v", got, want)
			}
			expires := t0.Add(time.Hour)
			fetched := expires.Add(-30 * time.Second)
			var first time.Time
			for now := fetched; now.Before(expires); now = now.Add(100 * time.Millisecond) {
				for k := range tc.keys {
					s.Asked(fmt.Sprint("hot", k), "acct", 0, fetched, now)
				}
				s.Asked("probe", "acct", 0, now, now) // keep it fresh and tracked
				if j, ok := s.Next(now); ok {
					if j.Reason != ReasonAhead {
						t.Fatalf("handed out %+v, want refresh-ahead", j)
					}
					first = now
					break
				}
			}
			if got := expires.Sub(first); first.IsZero() || got != tc.before {
				t.Fatalf("first refresh %v before expiry, want %v", got, tc.before)
			}
		})
	}
}

// TestAheadKeepsUpWithPace: hot keys expiring closer together than the
// pace can refresh them (one per 1.5 s, ten keys expiring 1 s apart) are
// started from the lead on, counting the keys not yet within it, so each
// is refreshed at least Margin before it expires.
func TestAheadKeepsUpWithPace(t *testing.T) {
	s := New[int](cfg())
	const latency = 200 * time.Millisecond
	s.Asked("probe", "acct", 0, time.Time{}, t0)
	j, _ := s.Next(t0)
	s.Done(j, Refreshed, t0.Add(latency), t0.Add(latency), 0)
	margin := s.Margin()

	base := t0.Add(time.Hour) // key i expires at base + i s
	expires := map[string]time.Time{}
	for i := range 10 {
		expires[fmt.Sprint("hot", i)] = base.Add(time.Duration(i) * time.Second)
	}
	var first time.Time
	refreshed := map[string]bool{}
	for now := base.Add(-30 * time.Second); now.Before(base.Add(10 * time.Second)); now = now.Add(100 * time.Millisecond) {
		for k, exp := range expires {
			if !refreshed[k] {
				s.Asked(k, "acct", 0, exp.Add(-30*time.Second), now)
			}
		}
		s.Asked("probe", "acct", 0, now, now)
		j, ok := s.Next(now)
		if !ok {
			continue
		}
		if first.IsZero() {
			first = now
		}
		if left := expires[j.Key].Sub(now); left < margin {
			t.Fatalf("%s refreshed %v before it expires, want at least the margin %v", j.Key, left, margin)
		}
		refreshed[j.Key] = true
		s.Done(j, Refreshed, now.Add(latency), now.Add(latency), 0)
	}
	if len(refreshed) != 10 {
		t.Fatalf("%d of 10 hot keys refreshed", len(refreshed))
	}
	// The last key, 9 s after the first, is started 9 pace intervals
	// (13.5 s) after it, margin before its expiry; the first a tick
	// (600 ms) before the chain must begin.
	if want := base.Add(-(9*1500*time.Millisecond - 9*time.Second + margin + 600*time.Millisecond)); !first.Equal(want) {
		t.Fatalf("first refresh %v before the first expiry, want %v", base.Sub(first), base.Sub(want))
	}
}
