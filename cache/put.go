package cache

// Put takes in e, an entry fetched from the Shared level, under key,
// keeping e's own times instead of judging and timing the answer again as
// Store does (the replica that fetched it did that). It reports whether e
// was kept. It is not kept if it is nil or already dead on the cache's
// clock, if the cache is configured to keep nothing (every lifetime zero),
// if its body is larger than MaxEntryBytes, or if the entry held for key
// was fetched later than e: an answer this replica fetched itself
// meanwhile is newer, and wins.
//
// The cache takes ownership of e: nobody may modify it afterwards. e may
// be served stale here until its StaleUntil even if this cache's own
// lifetimes are shorter; the LRU's wall-clock backstop may still drop it
// earlier, which only costs another trip to the shared level.
func (c *Cache) Put(key string, e *Entry) bool {
	if e == nil || c.tooBig(e.Body) {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.neededBackstop() <= 0 || !c.now().Before(e.StaleUntil) {
		return false
	}
	lru := c.lru.Load()
	if cur, ok := lru.Peek(key); ok && cur.Fetched.After(e.Fetched) {
		return false
	}
	c.add(lru, key, e)
	return true
}
