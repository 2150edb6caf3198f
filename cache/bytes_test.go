package cache

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"
)

// successBody is a successful AHT answer for agent of exactly n bytes.
func successBody(t testing.TB, agent string, n int) []byte {
	t.Helper()
	head := `{"status":"success","message":{"AgentID":"` + agent + `","AHT":"00:00:01","Pad":"`
	tail := `"}}`
	pad := n - len(head) - len(tail)
	if pad < 0 {
		t.Fatalf("a body of %d bytes is too short for agent %q", n, agent)
	}
	return []byte(head + strings.Repeat("x", pad) + tail)
}

func newBytesCache(t testing.TB, maxBytes int64) *Cache {
	t.Helper()
	clk := newFakeClock()
	return New(Options{MaxEntries: 100000, MaxBytes: maxBytes, TTL: 30 * time.Second, StaleTTL: 10 * time.Minute,
		NegativeTTL: 5 * time.Second, Now: clk.Now})
}

// heldBytes sums the bodies the cache's LRU holds, to check Bytes against.
func heldBytes(c *Cache) (n int64, keys []string) {
	lru := c.lru.Load()
	for _, k := range lru.Keys() {
		if e, ok := lru.Peek(k); ok {
			n += int64(len(e.Body))
			keys = append(keys, k)
		}
	}
	return n, keys
}

// checkBytes fails t unless Bytes is what the LRU holds and at most max.
func checkBytes(t *testing.T, c *Cache, maxBytes int64) {
	t.Helper()
	held, _ := heldBytes(c)
	if got := c.Bytes(); got != held || got > maxBytes {
		t.Fatalf("Bytes() = %d, the LRU holds %d; want them equal and at most %d", got, held, maxBytes)
	}
}

// TestMaxBytesKeepsNewest stores past max_bytes, with Store and with Put:
// the bytes held never exceed it, and the newest answers are the ones kept.
func TestMaxBytesKeepsNewest(t *testing.T) {
	const maxBytes, size = 10_000, 1_000
	for _, via := range []string{"Store", "Put"} {
		t.Run(via, func(t *testing.T) {
			c := newBytesCache(t, maxBytes)
			const n = 50
			for i := range n {
				key := KeyFor("demo", KindAgent, fmt.Sprintf("agent%02d", i))
				body := successBody(t, fmt.Sprintf("agent%02d", i), size)
				if via == "Store" {
					if _, stored := c.Store(key, body, 200, jsonCT); !stored {
						t.Fatalf("answer %d of %d bytes not stored", i, size)
					}
				} else {
					now := c.Now()
					if !c.Put(key, &Entry{Body: body, Status: 200, Fetched: now, FreshUntil: now.Add(time.Minute), StaleUntil: now.Add(time.Hour)}) {
						t.Fatalf("answer %d of %d bytes not put", i, size)
					}
				}
				checkBytes(t, c, maxBytes)
			}
			kept := maxBytes / size
			if c.Bytes() != int64(kept*size) {
				t.Errorf("Bytes() = %d, want %d (%d answers of %d)", c.Bytes(), kept*size, kept, size)
			}
			for i := range n {
				_, ok := c.Get(KeyFor("demo", KindAgent, fmt.Sprintf("agent%02d", i)))
				if want := i >= n-kept; ok != want {
					t.Errorf("answer %d of %d held: %v, want %v (the newest %d kept)", i, n, ok, want, kept)
				}
			}
		})
	}
}

// TestMaxBytesRecency evicts the least recently used answer, not the
// oldest stored: a hit makes an answer recent.
func TestMaxBytesRecency(t *testing.T) {
	const maxBytes, size = 16_000, 2_000 // MaxEntryBytes is 2000
	c := newBytesCache(t, maxBytes)
	key := func(i int) string { return KeyFor("demo", KindAgent, fmt.Sprint("agent", i)) }
	for i := range 8 {
		if i == 4 {
			if _, ok := c.Get(key(0)); !ok { // agent0 becomes the most recent
				t.Fatal("agent0 missing")
			}
		}
		c.Store(key(i), successBody(t, fmt.Sprint("agent", i), size), 200, jsonCT)
	}
	checkBytes(t, c, maxBytes)
	c.Store(key(8), successBody(t, "agent8", size), 200, jsonCT) // one over: agent1 goes
	checkBytes(t, c, maxBytes)
	for i := range 9 {
		if _, ok := c.Get(key(i)); ok != (i != 1) {
			t.Errorf("agent%d held: %v, want %v", i, ok, i != 1)
		}
	}
}

// TestOversizedAnswerNotCached serves an answer above max_bytes/EntryShare
// without keeping it, and leaves the earlier answer for the key in place.
func TestOversizedAnswerNotCached(t *testing.T) {
	const maxBytes = 8_000
	c := newBytesCache(t, maxBytes)
	if got := c.MaxEntryBytes(); got != maxBytes/EntryShare {
		t.Fatalf("MaxEntryBytes() = %d, want %d", got, maxBytes/EntryShare)
	}
	key := KeyFor("demo", KindAgent, "agent1")
	atCeiling := successBody(t, "agent1", maxBytes/EntryShare)
	if _, stored := c.Store(key, atCeiling, 200, jsonCT); !stored {
		t.Fatalf("an answer of exactly MaxEntryBytes (%d) was not stored", len(atCeiling))
	}
	big := successBody(t, "agent1", maxBytes/EntryShare+1)
	e, stored := c.Store(key, big, 200, jsonCT)
	if stored || e == nil || string(e.Body) != string(big) || e.Status != 200 {
		t.Fatalf("oversized answer of %d bytes: stored %v; want it returned to serve and not stored", len(big), stored)
	}
	if got, ok := c.Get(key); !ok || string(got.Body) != string(atCeiling) {
		t.Errorf("after an oversized answer the key does not hold the earlier answer (held: %v)", ok)
	}
	now := c.Now()
	other := KeyFor("demo", KindAgent, "agent2")
	if c.Put(other, &Entry{Body: successBody(t, "agent2", maxBytes/EntryShare+1), Status: 200, Fetched: now, FreshUntil: now.Add(time.Minute), StaleUntil: now.Add(time.Hour)}) {
		t.Error("Put kept an oversized entry")
	}
	if _, ok := c.Get(other); ok {
		t.Error("oversized entry held after Put")
	}
	if c.Bytes() != int64(len(atCeiling)) {
		t.Errorf("Bytes() = %d, want %d", c.Bytes(), len(atCeiling))
	}
}

// TestBytesFollowRemovals checks Bytes through every way an entry leaves:
// replacement, Remove, PurgeAccount, Purge, eviction by count, SetMaxBytes
// and the move to a new LRU of SetTTLs.
func TestBytesFollowRemovals(t *testing.T) {
	c := newBytesCache(t, 1<<20)
	a1, a2, b1 := KeyFor("a", KindAgent, "x1"), KeyFor("a", KindAgent, "x2"), KeyFor("b", KindAgent, "x1")
	c.Store(a1, successBody(t, "x1", 300), 200, jsonCT)
	c.Store(a1, successBody(t, "x1", 200), 200, jsonCT)
	c.Store(a2, successBody(t, "x2", 400), 200, jsonCT)
	c.Store(b1, successBody(t, "x1", 500), 200, jsonCT)
	if c.Bytes() != 1100 {
		t.Fatalf("Bytes() = %d after a replacement, want 1100", c.Bytes())
	}
	c.Remove(a2)
	if c.Bytes() != 700 {
		t.Fatalf("Bytes() = %d after Remove, want 700", c.Bytes())
	}
	c.PurgeAccount("a")
	if c.Bytes() != 500 {
		t.Fatalf("Bytes() = %d after PurgeAccount, want 500", c.Bytes())
	}
	c.Purge()
	if c.Bytes() != 0 {
		t.Fatalf("Bytes() = %d after Purge, want 0", c.Bytes())
	}

	for i := range 10 {
		c.Store(KeyFor("a", KindAgent, fmt.Sprint("y", i)), successBody(t, fmt.Sprint("y", i), 1000), 200, jsonCT)
	}
	c.Resize(6)
	checkBytes(t, c, 6000)
	c.SetMaxBytes(3500)
	checkBytes(t, c, 3500)
	if c.Bytes() != 3000 || c.MaxEntryBytes() != 3500/EntryShare {
		t.Fatalf("after SetMaxBytes(3500): Bytes() = %d, MaxEntryBytes() = %d; want 3000 and %d", c.Bytes(), c.MaxEntryBytes(), 3500/EntryShare)
	}
	c.SetMaxBytes(1 << 20)
	c.SetTTLs(time.Hour, time.Hour, time.Minute) // a longer backstop: a new LRU
	checkBytes(t, c, 3000)
	if c.Bytes() != 3000 {
		t.Fatalf("Bytes() = %d after SetTTLs moved the entries, want 3000", c.Bytes())
	}
	c.Purge() // nothing counted twice: the old LRU's removals no longer count
	if c.Bytes() != 0 {
		t.Fatalf("Bytes() = %d after Purge, want 0", c.Bytes())
	}
}

// TestBytesConcurrent stores, puts, removes and reads from many goroutines;
// afterwards Bytes is exactly what is held, and within the bound.
func TestBytesConcurrent(t *testing.T) {
	const maxBytes = 50_000
	c := newBytesCache(t, maxBytes)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), 1))
			for range 500 {
				agent := fmt.Sprint("agent", r.IntN(100))
				key := KeyFor("demo", KindAgent, agent)
				switch r.IntN(5) {
				case 0, 1:
					c.Store(key, successBody(t, agent, 100+r.IntN(maxBytes/EntryShare)), 200, jsonCT)
				case 2:
					now := c.Now()
					c.Put(key, &Entry{Body: successBody(t, agent, 100+r.IntN(maxBytes/EntryShare)), Status: 200,
						Fetched: now, FreshUntil: now.Add(time.Minute), StaleUntil: now.Add(time.Hour)})
				case 3:
					c.Remove(key)
				case 4:
					c.Get(key)
				}
				if b := c.Bytes(); b < 0 {
					t.Errorf("Bytes() = %d", b)
				}
			}
		})
	}
	wg.Go(func() { // reloads meanwhile
		for i := range 20 {
			c.SetMaxBytes(int64(maxBytes - i*1000))
			c.SetTTLs(time.Duration(31+i)*time.Second, 10*time.Minute, 5*time.Second)
		}
	})
	wg.Wait()
	checkBytes(t, c, maxBytes)
}

// TestRedisSharedEntryCeiling writes nothing above the Cache's
// MaxEntryBytes to a real Redis, and follows a changed max_bytes.
func TestRedisSharedEntryCeiling(t *testing.T) {
	ctx := context.Background()
	rdb := newRedisClient(t)
	c := newBytesCache(t, 8_000)
	s := NewRedisShared(rdb, sharedTestPrefix, WithSharedClock(c.Now), WithEntryCeiling(c.MaxEntryBytes))
	now := c.Now()
	entry := func(agent string, n int) *Entry {
		return &Entry{Body: successBody(t, agent, n), Status: 200, ContentType: jsonCT, Fetched: now,
			FreshUntil: now.Add(time.Minute), StaleUntil: now.Add(time.Hour)}
	}
	fits, big := KeyFor("demo", KindAgent, "fits"), KeyFor("demo", KindAgent, "big")
	if err := s.Set(ctx, fits, entry("fits", 1_000)); err != nil {
		t.Fatal(err)
	}
	if err := s.Set(ctx, big, entry("big", 1_001)); err != nil {
		t.Fatalf("an oversized entry is skipped without error, got %v", err)
	}
	if _, ok, err := s.Get(ctx, fits); !ok || err != nil {
		t.Errorf("entry at the ceiling: ok %v err %v, want it shared", ok, err)
	}
	if n, err := rdb.Exists(ctx, sharedTestPrefix+big).Result(); err != nil || n != 0 {
		t.Errorf("oversized entry in Redis: exists %d (err %v), want 0", n, err)
	}
	c.SetMaxBytes(16_000) // a reload raising max_bytes raises the ceiling
	if err := s.Set(ctx, big, entry("big", 1_001)); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := s.Get(ctx, big); !ok || err != nil {
		t.Errorf("after max_bytes doubled, an entry of 1001 bytes: ok %v err %v, want it shared", ok, err)
	}
}
