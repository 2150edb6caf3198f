package cache

import (
	"testing"
	"time"

	"github.com/caproxy/caproxy/internal/fakeclock"
)

func TestPut(t *testing.T) {
	key := KeyFor("demo", KindAgent, "agent1")
	// shared is the entry taken in, fetched elsewhere 10 s before the
	// clock's start.
	at := sharedT0.Add(-10 * time.Second)
	shared := sharedEntry(at, 30*time.Second, 10*time.Minute, string(sharedOK))
	cases := []struct {
		name string
		opts Options
		// held, if not nil, is stored first, fetched at sharedT0 + held.
		held *time.Duration
		e    *Entry
		want bool
	}{
		{"into an empty cache", Options{TTL: time.Second}, nil, shared, true},
		{"keeps its own, longer times", Options{TTL: time.Second, StaleTTL: time.Second}, nil, shared, true},
		{"over an older entry", Options{TTL: time.Minute}, durPtr(-20 * time.Second), shared, true},
		{"over an entry fetched at the same time", Options{TTL: time.Minute}, durPtr(-10 * time.Second), shared, true},
		{"not over a newer entry", Options{TTL: time.Minute}, durPtr(0), shared, false},
		{"not if dead", Options{TTL: time.Minute}, nil, sharedEntry(at, time.Second, 9*time.Second-time.Nanosecond, "x"), false},
		{"not if dead just now", Options{TTL: time.Minute}, nil, sharedEntry(at, 10*time.Second, 0, "x"), false},
		{"stale ones too", Options{TTL: time.Minute}, nil, sharedEntry(at, time.Second, time.Minute, "x"), true},
		{"negative ones too", Options{NegativeTTL: time.Second}, nil, sharedEntry(at, 15*time.Second, 0, `{"status":"error","message":"agentId is Invalid"}`), true},
		{"not nil", Options{TTL: time.Minute}, nil, nil, false},
		{"not if the cache keeps nothing", Options{}, nil, shared, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			clk := fakeclock.New(sharedT0)
			tc.opts.Now = clk.Now
			c := New(tc.opts)
			var held *Entry
			if tc.held != nil {
				clk.Set(sharedT0.Add(*tc.held))
				var stored bool
				if held, stored = c.Store(key, sharedOK, 200, "application/json"); !stored {
					t.Fatal("held entry not stored")
				}
				clk.Set(sharedT0)
			}
			if got := c.Put(key, tc.e); got != tc.want {
				t.Fatalf("Put = %v, want %v", got, tc.want)
			}
			got, ok := c.Get(key)
			switch {
			case tc.want && (!ok || got != tc.e):
				t.Fatalf("Get = %p, %v; want the entry put, %p", got, ok, tc.e)
			case !tc.want && held != nil && got != held:
				t.Fatalf("Get = %p, %v; want the entry held, %p", got, ok, held)
			case !tc.want && held == nil && ok:
				t.Fatalf("Get = %+v after a refused Put", got)
			}
		})
	}
}

// TestPutThenLifetimes checks that an entry put is judged by its own
// times: fresh, then stale, then gone.
func TestPutThenLifetimes(t *testing.T) {
	clk := fakeclock.New(sharedT0)
	c := New(Options{TTL: time.Hour, StaleTTL: time.Hour, Now: clk.Now})
	key := KeyFor("demo", KindCampaign, "Sales")
	e := sharedEntry(sharedT0, 5*time.Second, 5*time.Second, string(sharedOK))
	if !c.Put(key, e) {
		t.Fatal("Put refused")
	}
	steps := []struct {
		at        time.Duration
		ok, fresh bool
	}{
		{0, true, true},
		{5*time.Second - time.Nanosecond, true, true},
		{5 * time.Second, true, false},
		{10*time.Second - time.Nanosecond, true, false},
		{10 * time.Second, false, false},
	}
	for _, st := range steps {
		clk.Set(sharedT0.Add(st.at))
		got, ok := c.Get(key)
		if ok != st.ok || (ok && got.Fresh(clk.Now()) != st.fresh) {
			t.Fatalf("at +%v: Get = %+v, %v; want ok %v fresh %v", st.at, got, ok, st.ok, st.fresh)
		}
	}
}

func durPtr(d time.Duration) *time.Duration { return &d }
