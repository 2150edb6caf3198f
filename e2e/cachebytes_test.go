package e2e

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/caproxy/caproxy/cache"
	"github.com/caproxy/caproxy/internal/redistest"
)

// TestCacheMaxBytes runs a proxy on a real Redis with cache.max_bytes so
// small that no answer fits its share: answers are served but kept nowhere.
// A reload raising max_bytes caches them (the gauge shows the bytes held),
// and one lowering it again evicts them.
func TestCacheMaxBytes(t *testing.T) {
	addr := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { rdb.Close() })
	cfg := proxyConfig{Redis: "redis://" + addr + "/0", RedisKeys: []string{sharingTimeout}}
	withMaxBytes := func(n int) func(listen, admin string) string {
		return func(listen, admin string) string {
			return strings.Replace(cfg.render(listen, admin), "cache:\n", "cache:\n  max_bytes: "+strconv.Itoa(n)+"\n", 1)
		}
	}
	// An AHT answer is about 100 bytes; max_bytes/8 is 1 byte.
	p := startProxyText(t, withMaxBytes(8))
	c := newClient(t)
	sharedKeys := func() int {
		t.Helper()
		keys, err := rdb.Keys(context.Background(), cache.DefaultSharedPrefix+"*").Result()
		if err != nil {
			t.Fatal(err)
		}
		return len(keys)
	}
	cacheBytes := func() float64 {
		t.Helper()
		r := c.do(http.MethodGet, p.adminURL("/metrics"), "")
		for _, line := range strings.Split(r.body, "\n") {
			if v, ok := strings.CutPrefix(line, "caproxy_cache_bytes "); ok {
				f, err := strconv.ParseFloat(v, 64)
				if err != nil {
					t.Fatalf("caproxy_cache_bytes %q", v)
				}
				return f
			}
		}
		t.Fatalf("/metrics has no caproxy_cache_bytes:\n%s", r.body)
		return 0
	}

	checkAgentAHT(t, c.aht(p, demoKey, "demo", "agent001"), "agent001", "MISS")
	checkAgentAHT(t, c.aht(p, demoKey, "demo", "agent001"), "agent001", "MISS")
	if n, b := sharedKeys(), cacheBytes(); n != 0 || b != 0 {
		t.Fatalf("answers above max_bytes/8: %d kept in Redis, %v bytes held locally; want none", n, b)
	}

	p.writeConfig(t, withMaxBytes(1<<20)(p.listen, p.admin))
	p.signal(t, syscall.SIGHUP)
	p.waitLog(t, "config reloaded", 1)
	r := c.aht(p, demoKey, "demo", "agent001")
	checkAgentAHT(t, r, "agent001", "MISS")
	checkAgentAHT(t, c.aht(p, demoKey, "demo", "agent001"), "agent001", "HIT")
	if n, b := sharedKeys(), cacheBytes(); n != 1 || b != float64(len(r.body)) {
		t.Fatalf("after max_bytes was raised: %d answers in Redis and %v bytes held, want 1 and %d (the answer's body)", n, b, len(r.body))
	}

	p.writeConfig(t, withMaxBytes(8)(p.listen, p.admin))
	p.signal(t, syscall.SIGHUP)
	p.waitLog(t, "config reloaded", 2)
	if b := cacheBytes(); b != 0 {
		t.Fatalf("after max_bytes was lowered to 8: %v bytes held, want 0", b)
	}
}
