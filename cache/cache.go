// Package cache keeps CloudAgent's AHT answers so that repeated questions
// cost no upstream budget: it turns a request body into a canonical cache
// key, holds answers in a bounded in-memory LRU with fresh, stale and
// negative lifetimes on an injectable clock, coalesces concurrent misses
// for one key into a single upstream fetch, and (Shared, RedisShared) keeps
// a second level that several replicas share.
package cache

import (
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caproxy/caproxy/cloudagent"
	"github.com/hashicorp/golang-lru/v2/expirable"
)

// Entry is one upstream answer as the cache holds it.
//
// An Entry is immutable once Store has returned it: readers on many
// goroutines share the same *Entry (and its Body) without locks, so nobody
// may modify its fields or the bytes of Body.
type Entry struct {
	// Body is the upstream body, served as is.
	Body []byte
	// Status is the upstream HTTP status.
	Status int
	// ContentType is the upstream Content-Type ("" if none was sent).
	ContentType string
	// Fetched is when the answer arrived, on the cache's clock.
	Fetched time.Time
	// FreshUntil is when the answer stops being served as a hit.
	FreshUntil time.Time
	// StaleUntil is when the answer stops being served at all, even as a
	// stale fallback. Equal to FreshUntil for answers that must never be
	// served stale (negative answers, answers that were not stored).
	StaleUntil time.Time
}

// Fresh reports whether e may be served as a cache hit at now.
func (e *Entry) Fresh(now time.Time) bool { return now.Before(e.FreshUntil) }

// Age returns the whole seconds since e was fetched, for the Age header;
// never negative, even if the clock went backwards.
func (e *Entry) Age(now time.Time) int {
	d := now.Sub(e.Fetched)
	if d <= 0 {
		return 0
	}
	return int(d / time.Second)
}

// Options configure a Cache.
type Options struct {
	// MaxEntries bounds the number of entries; the least recently used
	// goes first. Zero or less means no bound.
	MaxEntries int
	// MaxBytes bounds the bytes of the bodies held (see Bytes); the least
	// recently used entries go first. An answer whose body is larger than
	// MaxBytes/EntryShare is not kept at all (see MaxEntryBytes). Zero or
	// less means no bound.
	MaxBytes int64
	// TTL is how long a successful answer is fresh. Zero stores nothing
	// fresh (answers may still be kept for StaleTTL as a fallback).
	TTL time.Duration
	// StaleTTL is how long after TTL a successful answer may still be
	// served stale when the upstream cannot be asked.
	StaleTTL time.Duration
	// NegativeTTL is how long "agentId is Invalid" and "campaignName is
	// Invalid" answers are kept. They are never served stale.
	NegativeTTL time.Duration
	// Now is the clock every lifetime is measured on; nil means time.Now.
	// Tests inject their own to move time without sleeping.
	Now func() time.Time
}

// Cache holds AHT answers by key (see KeyFor). All methods are safe for
// concurrent use; a hit (Get) takes no lock besides the LRU's own.
//
// Lifetimes are decided by each Entry's times against the cache's clock.
// The underlying expirable LRU also drops entries on the wall clock after
// max(TTL, NegativeTTL)+StaleTTL, only so that memory of entries nobody asks
// for again is given back.
//
// Create a Cache with New; the zero Cache is not usable.
type Cache struct {
	// lru is swapped (see SetTTLs) only under mu; Get loads it without
	// locking.
	lru atomic.Pointer[expirable.LRU[string, *Entry]]
	now func() time.Time

	// mu serialises everything that changes the cache (Store, Remove,
	// Purge, PurgeAccount, Resize, SetTTLs and Get's dropping of dead
	// entries), so that no change is lost while SetTTLs moves entries to
	// a new LRU. It protects the fields below. Get's hits never take it.
	mu          sync.Mutex
	ttl         time.Duration
	staleTTL    time.Duration
	negativeTTL time.Duration
	maxEntries  int
	// backstop is the LRU's own wall-clock lifetime; 0 means it has none.
	backstop time.Duration
	// retired is set, under mu, when the LRU it belongs to is replaced
	// (see SetTTLs), so that the old LRU's evictions stop counting.
	retired *atomic.Bool

	// bytes is the sum of the body sizes held by the current LRU: added
	// by add, taken away by the LRU's eviction callback (every removal:
	// Remove, RemoveOldest, Purge, expiry, eviction by count).
	bytes atomic.Int64
	// maxBytes is the bound on bytes (0: none); written under mu, read
	// without it by MaxEntryBytes.
	maxBytes atomic.Int64
}

// EntryShare is the share of MaxBytes one answer may take at most: an
// answer larger than MaxBytes/EntryShare is served but not cached (in
// memory nor in the Shared level), so that one huge answer cannot flush
// the many small ones.
const EntryShare = 8

// New returns a Cache configured by opts.
//
// Each LRU with a lifetime starts a cleanup goroutine that cannot be
// stopped, so create one Cache per process (tests may create a few).
func New(opts Options) *Cache {
	c := &Cache{
		now:         opts.Now,
		ttl:         nonNegative(opts.TTL),
		staleTTL:    nonNegative(opts.StaleTTL),
		negativeTTL: nonNegative(opts.NegativeTTL),
		maxEntries:  max(opts.MaxEntries, 0),
	}
	if c.now == nil {
		c.now = time.Now
	}
	c.maxBytes.Store(max(opts.MaxBytes, 0))
	c.backstop = c.neededBackstop()
	c.lru.Store(c.newLRU(c.backstop))
	return c
}

// newLRU returns an empty LRU whose removals count against c.bytes until
// it is retired. Called with mu held (or before c is shared).
func (c *Cache) newLRU(backstop time.Duration) *expirable.LRU[string, *Entry] {
	retired := new(atomic.Bool)
	c.retired = retired
	// The callback runs under the LRU's own lock, on the caller's
	// goroutine or the LRU's cleanup goroutine: it may only count.
	onEvict := func(_ string, e *Entry) {
		if !retired.Load() {
			c.bytes.Add(-int64(len(e.Body)))
		}
	}
	return expirable.NewLRU[string, *Entry](c.maxEntries, onEvict, backstop)
}

// add puts e under key in lru and evicts the least recently used entries
// while the bodies held exceed maxBytes. Called with mu held.
func (c *Cache) add(lru *expirable.LRU[string, *Entry], key string, e *Entry) {
	// The LRU replaces a value in place without calling back, so the
	// entry it replaces is removed first (and counted out).
	lru.Remove(key)
	c.bytes.Add(int64(len(e.Body)))
	lru.Add(key, e)
	c.shrink(lru)
}

// shrink evicts the least recently used entries of lru while the bodies
// held exceed maxBytes. Called with mu held.
func (c *Cache) shrink(lru *expirable.LRU[string, *Entry]) {
	limit := c.maxBytes.Load()
	for limit > 0 && c.bytes.Load() > limit {
		if _, _, ok := lru.RemoveOldest(); !ok {
			return
		}
	}
}

// MaxEntryBytes is the largest body an answer may have to be cached:
// MaxBytes/EntryShare, or 0 when there is no bound. The Shared level keeps
// to it too (see WithEntryCeiling).
func (c *Cache) MaxEntryBytes() int64 { return c.maxBytes.Load() / EntryShare }

// tooBig reports whether body exceeds MaxEntryBytes.
func (c *Cache) tooBig(body []byte) bool {
	n := c.MaxEntryBytes()
	return n > 0 && int64(len(body)) > n
}

// Bytes returns the sum of the body sizes of the entries held, dead ones
// not yet dropped included. Keys and per-entry bookkeeping (a few hundred
// bytes an entry, bounded by MaxEntries) are not counted.
func (c *Cache) Bytes() int64 { return c.bytes.Load() }

// SetMaxBytes changes the bound on the bytes of bodies held (zero or less:
// none), evicting the least recently used entries if more are held. Entries
// held that are larger than the new MaxEntryBytes stay until they go in
// their turn; answers stored from now on must fit it.
func (c *Cache) SetMaxBytes(maxBytes int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.maxBytes.Store(max(maxBytes, 0))
	c.shrink(c.lru.Load())
}

func nonNegative(d time.Duration) time.Duration { return max(d, 0) }

// neededBackstop is the longest any entry stored now may live. Called with
// mu held (or before c is shared).
func (c *Cache) neededBackstop() time.Duration {
	return max(c.ttl, c.negativeTTL) + c.staleTTL
}

// Now returns the time on the cache's clock. Callers judging an Entry
// (Fresh, Age) use it so that tests can drive everything with one clock.
func (c *Cache) Now() time.Time { return c.now() }

// TTL returns how long a successful answer stored now stays fresh.
func (c *Cache) TTL() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ttl
}

// Get returns the entry for key if there is one that may still be served,
// fresh or stale (check Entry.Fresh). An entry past its StaleUntil is
// dropped and reported missing.
func (c *Cache) Get(key string) (e *Entry, ok bool) {
	e, ok = c.lru.Load().Get(key)
	if !ok {
		return nil, false
	}
	if c.now().Before(e.StaleUntil) {
		return e, true
	}
	c.drop(key, e)
	return nil, false
}

// drop removes key if it still holds dead, and not an entry stored since.
func (c *Cache) drop(key string, dead *Entry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	lru := c.lru.Load()
	if cur, ok := lru.Peek(key); ok && cur == dead {
		lru.Remove(key)
	}
}

// answerKind says how an upstream answer may be cached.
type answerKind int

const (
	notCacheable answerKind = iota
	positive                // a successful AHT answer
	negative                // the agent or campaign does not exist
)

// classify decides whether an upstream answer may be cached. Only HTTP 200
// answers qualify: a success, or CloudAgent saying the agent or campaign
// does not exist. Credential and token errors, "max limit exceeded", other
// errors, non-200 statuses and bodies that are not CloudAgent JSON are
// never stored: they say nothing lasting about the question asked.
func classify(status int, body []byte) answerKind {
	if status != 200 {
		return notCacheable
	}
	if cloudagent.IsSuccess(body) {
		return positive
	}
	if msg, ok := cloudagent.ErrorMessage(body); ok &&
		(msg == cloudagent.MsgInvalidAgent || msg == cloudagent.MsgInvalidCampaign) {
		return negative
	}
	return notCacheable
}

// Store records an upstream answer for key and returns it as an Entry,
// whether or not it was stored (stored reports which), so the caller can
// serve every answer the same way. The cache takes ownership of body: the
// caller must not modify it afterwards.
//
// A successful answer (HTTP 200, status "success") is fresh for TTL and may
// be served stale for StaleTTL after that. "agentId is Invalid" and
// "campaignName is Invalid" are kept for NegativeTTL and never served
// stale. Nothing else is stored, and neither is an answer with a zero
// lifetime or a body larger than MaxEntryBytes; an earlier entry for key is
// then left as it was, so it can still serve as a stale fallback.
func (c *Cache) Store(key string, body []byte, status int, contentType string) (e *Entry, stored bool) {
	now := c.now()
	e = &Entry{Body: body, Status: status, ContentType: contentType, Fetched: now, FreshUntil: now, StaleUntil: now}
	kind := classify(status, body)
	if kind == notCacheable || c.tooBig(body) {
		return e, false
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	switch kind {
	case positive:
		e.FreshUntil = now.Add(c.ttl)
		e.StaleUntil = e.FreshUntil.Add(c.staleTTL)
	case negative:
		e.FreshUntil = now.Add(c.negativeTTL)
		e.StaleUntil = e.FreshUntil
	}
	if !now.Before(e.StaleUntil) {
		return e, false
	}
	c.add(c.lru.Load(), key, e)
	return e, true
}

// SetTTLs changes the lifetimes given to answers stored from now on;
// entries already stored keep theirs. Negative durations count as zero.
//
// If entries may now live longer than the LRU's wall-clock backstop, the
// entries move to a new LRU with a longer one, and the old one is emptied.
// The old LRU's cleanup goroutine cannot be stopped and stays behind
// (idle), so this costs one goroutine per such increase.
func (c *Cache) SetTTLs(ttl, staleTTL, negativeTTL time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ttl, c.staleTTL, c.negativeTTL = nonNegative(ttl), nonNegative(staleTTL), nonNegative(negativeTTL)
	need := c.neededBackstop()
	if need <= 0 || (c.backstop != 0 && need <= c.backstop) {
		return
	}
	old := c.lru.Load()
	c.retired.Store(true)
	// Len takes old's lock: an eviction callback that read retired as
	// false has finished counting by the time it returns.
	old.Len()
	next := c.newLRU(need)
	var held int64
	for _, k := range old.Keys() { // oldest first, so recency order is kept
		if e, ok := old.Peek(k); ok {
			next.Add(k, e)
			held += int64(len(e.Body))
		}
	}
	c.bytes.Store(held)
	c.lru.Store(next)
	c.backstop = need
	// Its entries live on in next; emptied, old holds no memory (a Get
	// that loaded it just before the swap misses once).
	old.Purge()
}

// Resize changes the bound on the number of entries, evicting the least
// recently used ones if there are more. Zero or less means no bound.
func (c *Cache) Resize(maxEntries int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.maxEntries = max(maxEntries, 0)
	c.lru.Load().Resize(c.maxEntries)
}

// Purge removes every entry.
func (c *Cache) Purge() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lru.Load().Purge()
}

// PurgeAccount removes every entry of account and returns how many it
// removed. It walks all keys, so it is meant for rare administrative use.
func (c *Cache) PurgeAccount(account string) int {
	prefix := PrefixFor(account)
	c.mu.Lock()
	defer c.mu.Unlock()
	lru := c.lru.Load()
	n := 0
	for _, k := range lru.Keys() {
		if strings.HasPrefix(k, prefix) && lru.Remove(k) {
			n++
		}
	}
	return n
}

// Remove removes the entry for key and reports whether there was one.
func (c *Cache) Remove(key string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Load().Remove(key)
}

// Len returns the number of entries held, including dead ones that no Get
// has dropped yet and the LRU has not yet expired.
func (c *Cache) Len() int { return c.lru.Load().Len() }
