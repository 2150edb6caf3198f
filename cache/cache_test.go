package cache

import (
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/caproxy/caproxy/cloudagent"
	"github.com/caproxy/caproxy/internal/fakeclock"
)

// newFakeClock returns a clock tests move by hand.
func newFakeClock() *fakeclock.Clock {
	return fakeclock.New(time.Date(2026, 11, 28, 4, 0, 0, 0, time.UTC))
}

var (
	agentOK    = []byte(`{"status":"success","message":{"AgentID":"agent1","AgentName":"Asha","AHT":"00:02:37"}}`)
	campaignOK = []byte(`{"status":"success","message":{"CampaignID":"7","CampaignName":"Sales","AHT":"00:00:27"}}`)
)

const jsonCT = "application/json"

func newTestCache(clk *fakeclock.Clock, maxEntries int) *Cache {
	return New(Options{MaxEntries: maxEntries, TTL: 30 * time.Second, StaleTTL: 10 * time.Minute, NegativeTTL: 5 * time.Second, Now: clk.Now})
}

func TestFreshStaleGone(t *testing.T) {
	clk := newFakeClock()
	c := newTestCache(clk, 0)
	key := KeyFor("demo", KindAgent, "agent1")
	start := clk.Now()

	e, stored := c.Store(key, agentOK, 200, jsonCT)
	if !stored {
		t.Fatal("success answer not stored")
	}
	if !e.Fetched.Equal(start) || !e.FreshUntil.Equal(start.Add(30*time.Second)) || !e.StaleUntil.Equal(start.Add(30*time.Second+10*time.Minute)) {
		t.Fatalf("entry times: %+v", e)
	}

	steps := []struct {
		at        time.Duration
		ok, fresh bool
		age       int
	}{
		{0, true, true, 0},
		{999 * time.Millisecond, true, true, 0},
		{29 * time.Second, true, true, 29},
		{30*time.Second - time.Nanosecond, true, true, 29},
		{30 * time.Second, true, false, 30},
		{5 * time.Minute, true, false, 300},
		{30*time.Second + 10*time.Minute - time.Nanosecond, true, false, 629},
		{30*time.Second + 10*time.Minute, false, false, 0},
	}
	for _, s := range steps {
		clk.Advance(start.Add(s.at).Sub(clk.Now()))
		got, ok := c.Get(key)
		if ok != s.ok {
			t.Fatalf("at %v: Get ok = %v, want %v", s.at, ok, s.ok)
		}
		if !ok {
			continue
		}
		if got != e {
			t.Fatalf("at %v: Get returned another entry", s.at)
		}
		if f := got.Fresh(c.Now()); f != s.fresh {
			t.Fatalf("at %v: Fresh = %v, want %v", s.at, f, s.fresh)
		}
		if a := got.Age(c.Now()); a != s.age {
			t.Fatalf("at %v: Age = %d, want %d", s.at, a, s.age)
		}
	}
	if n := c.Len(); n != 0 {
		t.Fatalf("dead entry not dropped: Len = %d", n)
	}
}

func TestNegativeEntries(t *testing.T) {
	for _, msg := range []string{cloudagent.MsgInvalidAgent, cloudagent.MsgInvalidCampaign} {
		t.Run(msg, func(t *testing.T) {
			clk := newFakeClock()
			c := newTestCache(clk, 0)
			key := KeyFor("demo", KindAgent, "ghost")
			e, stored := c.Store(key, cloudagent.ErrorBody(msg), 200, jsonCT)
			if !stored {
				t.Fatal("negative answer not stored")
			}
			if !e.FreshUntil.Equal(e.Fetched.Add(5*time.Second)) || !e.StaleUntil.Equal(e.FreshUntil) {
				t.Fatalf("negative entry times: %+v", e)
			}
			clk.Advance(5*time.Second - time.Nanosecond)
			if got, ok := c.Get(key); !ok || !got.Fresh(c.Now()) {
				t.Fatalf("negative entry gone or not fresh before NegativeTTL: %v", ok)
			}
			clk.Advance(time.Nanosecond)
			if _, ok := c.Get(key); ok {
				t.Fatal("negative entry served after NegativeTTL (never stale)")
			}
		})
	}
}

func TestNotCacheable(t *testing.T) {
	for _, tc := range []struct {
		name   string
		body   []byte
		status int
	}{
		{"bad credentials", cloudagent.ErrorBody(cloudagent.MsgInvalidCredentials), 200},
		{"limit exceeded", cloudagent.ErrorBody(cloudagent.MsgLimitExceeded), 200},
		{"limit exceeded 429", cloudagent.ErrorBody(cloudagent.MsgLimitExceeded), 429},
		{"both empty", cloudagent.ErrorBody(cloudagent.MsgBothEmpty), 200},
		{"api key empty", cloudagent.ErrorBody(cloudagent.MsgAPIKeyEmpty), 200},
		{"token expired", cloudagent.TokenErrorBody(cloudagent.MsgTokenExpired), 200},
		{"token invalid", cloudagent.TokenErrorBody(cloudagent.MsgTokenInvalid), 401},
		{"token api credentials", cloudagent.TokenErrorBody(cloudagent.MsgTokenInvalidCredentials), 200},
		{"success with HTTP 500", agentOK, 500},
		{"success with HTTP 203", agentOK, 203},
		{"invalid agent with HTTP 400", cloudagent.ErrorBody(cloudagent.MsgInvalidAgent), 400},
		{"html", []byte("<html>Bad Gateway</html>"), 200},
		{"empty", nil, 200},
		{"status not success", []byte(`{"status":"ok","message":{}}`), 200},
		{"truncated json", agentOK[:20], 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := newFakeClock()
			c := newTestCache(clk, 0)
			key := KeyFor("demo", KindAgent, "agent1")
			e, stored := c.Store(key, tc.body, tc.status, "text/plain")
			if stored {
				t.Fatal("stored")
			}
			if e == nil || string(e.Body) != string(tc.body) || e.Status != tc.status || e.ContentType != "text/plain" ||
				!e.Fetched.Equal(clk.Now()) || e.Fresh(clk.Now()) || e.Age(clk.Now()) != 0 {
				t.Fatalf("returned entry: %+v", e)
			}
			if _, ok := c.Get(key); ok || c.Len() != 0 {
				t.Fatal("Get found a non-cacheable answer")
			}

			// An earlier good answer survives, to serve stale.
			good, _ := c.Store(key, agentOK, 200, jsonCT)
			c.Store(key, tc.body, tc.status, "text/plain")
			if got, ok := c.Get(key); !ok || got != good {
				t.Fatal("non-cacheable answer displaced a stored one")
			}
		})
	}
}

func TestStoreReplaces(t *testing.T) {
	clk := newFakeClock()
	c := newTestCache(clk, 0)
	key := KeyFor("demo", KindAgent, "agent1")
	c.Store(key, agentOK, 200, jsonCT)
	neg, _ := c.Store(key, cloudagent.ErrorBody(cloudagent.MsgInvalidAgent), 200, jsonCT)
	if got, _ := c.Get(key); got != neg {
		t.Fatal("a newer negative answer did not replace the success")
	}
	clk.Advance(time.Second)
	ok, _ := c.Store(key, agentOK, 200, jsonCT)
	if got, _ := c.Get(key); got != ok || c.Len() != 1 {
		t.Fatal("a newer success did not replace the negative answer")
	}
}

func TestZeroTTLs(t *testing.T) {
	clk := newFakeClock()
	c := New(Options{Now: clk.Now})
	key := KeyFor("demo", KindCampaign, "Sales")
	if _, stored := c.Store(key, campaignOK, 200, jsonCT); stored {
		t.Fatal("stored with no lifetime")
	}
	if _, stored := c.Store(key, cloudagent.ErrorBody(cloudagent.MsgInvalidCampaign), 200, jsonCT); stored {
		t.Fatal("negative stored with no lifetime")
	}

	// Stale only: kept as a fallback, never a hit.
	c.SetTTLs(0, time.Minute, 0)
	if _, stored := c.Store(key, campaignOK, 200, jsonCT); !stored {
		t.Fatal("not stored with a stale lifetime")
	}
	if e, ok := c.Get(key); !ok || e.Fresh(c.Now()) {
		t.Fatalf("stale-only entry: ok=%v", ok)
	}
}

func TestSetTTLs(t *testing.T) {
	clk := newFakeClock()
	c := New(Options{TTL: time.Second, StaleTTL: time.Second, NegativeTTL: time.Second, Now: clk.Now})
	old := KeyFor("demo", KindAgent, "old")
	oldEntry, _ := c.Store(old, agentOK, 200, jsonCT)
	lru := c.lru.Load()

	// Shorter: same LRU, new entries get the new lifetimes.
	c.SetTTLs(500*time.Millisecond, 0, 0)
	if c.lru.Load() != lru {
		t.Fatal("LRU replaced though its backstop was long enough")
	}
	e, _ := c.Store(KeyFor("demo", KindAgent, "short"), agentOK, 200, jsonCT)
	if got := e.FreshUntil.Sub(e.Fetched); got != 500*time.Millisecond || !e.StaleUntil.Equal(e.FreshUntil) {
		t.Fatalf("after SetTTLs: fresh for %v, stale until %v", got, e.StaleUntil)
	}

	// Longer than the backstop: entries move to a new LRU, in LRU order.
	c.SetTTLs(time.Hour, time.Hour, time.Minute)
	if c.lru.Load() == lru {
		t.Fatal("LRU kept though entries may now outlive its backstop")
	}
	if c.backstop != 2*time.Hour {
		t.Fatalf("backstop = %v, want 2h", c.backstop)
	}
	if got, ok := c.Get(old); !ok || got != oldEntry {
		t.Fatal("entry lost moving to the new LRU")
	}
	if keys := c.lru.Load().Keys(); len(keys) != 2 || keys[0] != KeyFor("demo", KindAgent, "short") || keys[1] != old {
		t.Fatalf("keys after move (oldest first): %q", keys)
	}
	e, _ = c.Store(KeyFor("demo", KindAgent, "long"), agentOK, 200, jsonCT)
	if got := e.StaleUntil.Sub(e.Fetched); got != 2*time.Hour {
		t.Fatalf("new entry lives %v, want 2h", got)
	}
	// Negative TTLs count as zero.
	c.SetTTLs(-time.Second, -time.Second, -time.Second)
	if _, stored := c.Store(old, agentOK, 200, jsonCT); stored {
		t.Fatal("stored with negative lifetimes")
	}
}

func TestRemovePurge(t *testing.T) {
	clk := newFakeClock()
	c := newTestCache(clk, 0)
	accounts := []string{"a", "ab", "a|b", "b"}
	for _, acct := range accounts {
		for i := range 3 {
			c.Store(KeyFor(acct, KindAgent, strconv.Itoa(i)), agentOK, 200, jsonCT)
		}
		c.Store(KeyFor(acct, KindCampaign, "0"), campaignOK, 200, jsonCT)
	}
	if n := c.Len(); n != 16 {
		t.Fatalf("Len = %d, want 16", n)
	}
	if n := c.PurgeAccount("a"); n != 4 {
		t.Fatalf("PurgeAccount(a) removed %d, want 4", n)
	}
	if _, ok := c.Get(KeyFor("a", KindAgent, "0")); ok {
		t.Fatal("account a still cached")
	}
	for _, acct := range accounts[1:] {
		if _, ok := c.Get(KeyFor(acct, KindCampaign, "0")); !ok {
			t.Fatalf("PurgeAccount(a) removed account %q's entry", acct)
		}
	}
	if n := c.PurgeAccount("nobody"); n != 0 {
		t.Fatalf("PurgeAccount(nobody) = %d", n)
	}

	key := KeyFor("b", KindAgent, "1")
	if !c.Remove(key) || c.Remove(key) {
		t.Fatal("Remove: want true then false")
	}
	if _, ok := c.Get(key); ok {
		t.Fatal("removed entry still served")
	}
	c.Purge()
	if n := c.Len(); n != 0 {
		t.Fatalf("Len after Purge = %d", n)
	}
}

func TestMaxEntriesEvictsLRU(t *testing.T) {
	clk := newFakeClock()
	c := newTestCache(clk, 3)
	k := func(i int) string { return KeyFor("demo", KindAgent, strconv.Itoa(i)) }
	for i := range 3 {
		c.Store(k(i), agentOK, 200, jsonCT)
	}
	c.Get(k(0)) // 0 is now the most recently used; 1 the least
	c.Store(k(3), agentOK, 200, jsonCT)
	if _, ok := c.Get(k(1)); ok {
		t.Fatal("least recently used entry not evicted")
	}
	for _, i := range []int{0, 2, 3} {
		if _, ok := c.Get(k(i)); !ok {
			t.Fatalf("entry %d evicted", i)
		}
	}
	c.Resize(1) // keeps 3, the last used
	if _, ok := c.Get(k(3)); !ok || c.Len() != 1 {
		t.Fatalf("after Resize(1): Len = %d", c.Len())
	}
	c.Resize(0) // unbounded
	for i := range 10 {
		c.Store(k(i), agentOK, 200, jsonCT)
	}
	if n := c.Len(); n != 10 {
		t.Fatalf("unbounded Len = %d, want 10", n)
	}
}

// TestDropKeepsNewerEntry checks that dropping a dead entry never removes
// an answer stored for the key in the meantime.
func TestDropKeepsNewerEntry(t *testing.T) {
	clk := newFakeClock()
	c := newTestCache(clk, 0)
	key := KeyFor("demo", KindAgent, "agent1")
	dead, _ := c.Store(key, agentOK, 200, jsonCT)
	newer, _ := c.Store(key, agentOK, 200, jsonCT)
	c.drop(key, dead)
	if got, ok := c.Get(key); !ok || got != newer {
		t.Fatal("drop removed a newer entry")
	}
}

func TestDefaultClock(t *testing.T) {
	c := New(Options{TTL: time.Minute})
	before := time.Now()
	e, stored := c.Store("k", agentOK, 200, jsonCT)
	if !stored || e.Fetched.Before(before) || c.Now().Before(e.Fetched) || !e.Fresh(c.Now()) {
		t.Fatalf("default clock: %+v", e)
	}
}

// TestConcurrentUse runs every operation at once, for the race detector.
func TestConcurrentUse(t *testing.T) {
	clk := newFakeClock()
	c := newTestCache(clk, 50)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 500 {
				key := KeyFor("acct"+strconv.Itoa(g%2), KindAgent, strconv.Itoa(i%80))
				switch i % 50 {
				case 7:
					c.PurgeAccount("acct0")
				case 13:
					c.SetTTLs(time.Duration(30+i)*time.Second, 10*time.Minute, 5*time.Second)
				case 17:
					c.Resize(40 + i%20)
				case 23:
					c.Remove(key)
				case 29:
					clk.Advance(time.Second)
				default:
					if e, ok := c.Get(key); ok {
						_ = e.Fresh(c.Now())
						_ = len(e.Body)
					} else {
						c.Store(key, agentOK, 200, jsonCT)
					}
				}
			}
		})
	}
	wg.Wait()
	if n := c.Len(); n > 60 {
		t.Fatalf("Len = %d beyond any bound set", n)
	}
}

func BenchmarkCacheGetParallel(b *testing.B) {
	c := New(Options{MaxEntries: 100000, TTL: time.Hour, StaleTTL: time.Hour})
	const n = 1024
	keys := make([]string, n)
	for i := range keys {
		keys[i] = KeyFor("demo", KindAgent, "agent"+strconv.Itoa(i))
		c.Store(keys[i], agentOK, 200, jsonCT)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			e, ok := c.Get(keys[i%n])
			if !ok || !e.Fresh(c.Now()) {
				b.Fatal("miss")
			}
			i++
		}
	})
}
