package redisconn

import (
	"context"
	"net"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/caproxy/caproxy/cache"
	"github.com/caproxy/caproxy/internal/redistest"
	"github.com/caproxy/caproxy/limit"
)

// countingHook counts the round trips a client makes (a pipeline is one).
type countingHook struct{ n *atomic.Int64 }

func (h countingHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h countingHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error { h.n.Add(1); return next(ctx, cmd) }
}
func (h countingHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error { h.n.Add(1); return next(ctx, cmds) }
}

// missRedis is the Redis work of one AHT miss in the proxy: look the key up
// in the shared cache, take a slot of the shared budget, share the answer.
type missRedis struct {
	shared *cache.RedisShared
	budget *limit.Budget
	entry  *cache.Entry
}

func newMissRedis(client redis.UniversalClient) *missRedis {
	now := time.Now()
	return &missRedis{
		shared: cache.NewRedisShared(client, "bench:cache:"),
		// A 10 ms window keeps the log short, so every Take is admitted
		// and does one script run.
		budget: limit.NewBudget(limit.NewRedisStore(client, "bench:"), 1<<40, 10*time.Millisecond),
		entry: &cache.Entry{Body: []byte(`{"status":"success","message":{"AgentID":"a","AgentName":"A","AHT":"00:01:00"}}`),
			Status: 200, ContentType: "application/json", Fetched: now, FreshUntil: now.Add(time.Hour), StaleUntil: now.Add(2 * time.Hour)},
	}
}

// run does one miss's Redis work for key and returns the first error.
func (m *missRedis) run(ctx context.Context, key string) error {
	if _, _, err := m.shared.Get(ctx, key); err != nil {
		return err
	}
	if _, _, err := m.budget.Take(ctx, "demo"); err != nil {
		return err
	}
	return m.shared.Set(ctx, key, m.entry)
}

// BenchmarkMissRedis measures the Redis part of one AHT miss (shared
// cache lookup, budget slot, shared store) with Redis up and with Redis
// down, through the client caproxy used before issue 10 ("plain": go-redis
// defaults from the URL) and through redisconn ("breaker": bounded calls,
// no retries, circuit breaker). It reports round trips per miss. Redis down
// with the plain client takes seconds per miss: run with -benchtime=5x.
func BenchmarkMissRedis(b *testing.B) {
	for _, state := range []string{"up", "down"} {
		for _, kind := range []string{"plain", "breaker"} {
			b.Run(state+"/"+kind, func(b *testing.B) {
				addr := redistest.Start(b)
				if state == "down" {
					addr = deadAddr(b)
				}
				var client redis.UniversalClient
				switch kind {
				case "plain":
					opt, err := redis.ParseURL("redis://" + addr)
					if err != nil {
						b.Fatal(err)
					}
					client = redis.NewClient(opt)
				default:
					c, err := Open(Options{URL: "redis://" + addr})
					if err != nil {
						b.Fatal(err)
					}
					if state == "down" {
						c.WarmUp(context.Background(), 10*time.Millisecond) // opens the circuit
					}
					client = c.Client
					defer c.Close()
				}
				defer client.Close()
				var trips atomic.Int64
				client.AddHook(countingHook{&trips})
				m := newMissRedis(client)
				ctx := context.Background()
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; b.Loop(); i++ {
					err := m.run(ctx, "4:demo|agent|agent"+strconv.Itoa(i%300))
					if (err != nil) != (state == "down") {
						b.Fatalf("miss with Redis %s: %v", state, err)
					}
				}
				b.ReportMetric(float64(trips.Load())/float64(b.N), "roundtrips/op")
			})
		}
	}
}

// deadAddr returns a loopback address nothing listens on.
func deadAddr(b *testing.B) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}
