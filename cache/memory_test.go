package cache

import (
	"fmt"
	"runtime"
	"testing"
	"time"
)

// BenchmarkMemoryPerEntry fills a cache with 100k successful AHT answers
// of about 100 bytes each, stored the way the proxy stores them (a fresh
// body slice, a key from KeyFor), and reports the heap they hold per entry
// (B/entry): body, key, Entry and the LRU's own bookkeeping. Run it with
// -benchtime=1x; ns/op is the time to fill the cache.
func BenchmarkMemoryPerEntry(b *testing.B) {
	const n = 100_000
	keys := make([]string, n)
	bodies := make([][]byte, n)
	var bodyBytes int
	for i := range n {
		id := fmt.Sprintf("agent%06d", i)
		keys[i] = KeyFor("demo", KindAgent, id)
		bodies[i] = fmt.Appendf(nil, `{"status":"success","message":{"AgentID":"%s","AgentName":"Agent %06d","AHT":"00:02:37"}}`, id, i)
		bodyBytes += len(bodies[i])
	}
	var perEntry float64
	for b.Loop() {
		b.StopTimer()
		// Each stored key and body is a fresh copy, counted: the cache
		// holds it, as it holds what the upstream sent.
		before := heapInUse()
		ks, bs := make([]string, n), make([][]byte, n)
		for i := range n {
			ks[i] = string([]byte(keys[i]))
			bs[i] = append([]byte(nil), bodies[i]...)
		}
		b.StartTimer()
		c := New(Options{MaxEntries: n, TTL: time.Hour, StaleTTL: time.Hour})
		for i := range n {
			if _, ok := c.Store(ks[i], bs[i], 200, "application/json"); !ok {
				b.Fatalf("answer %d not stored", i)
			}
		}
		b.StopTimer()
		// The cache now owns the copies; drop the benchmark's references.
		ks, bs = nil, nil
		after := heapInUse()
		if c.Len() != n {
			b.Fatalf("%d entries, want %d", c.Len(), n)
		}
		perEntry = float64(after-before) / n
		runtime.KeepAlive(c)
		b.StartTimer()
	}
	b.ReportMetric(perEntry, "B/entry")
	b.ReportMetric(float64(bodyBytes)/n, "body-B/entry")
}

// heapInUse is the live heap after a full collection.
func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
