package limit

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/ulule/limiter/v3"

	"github.com/caproxy/caproxy/internal/redistest"
)

// benchKeys are the account names benchmarks spread calls over.
var benchKeys = func() []string {
	keys := make([]string, 1024)
	for i := range keys {
		keys[i] = "acct-" + strconv.Itoa(i)
	}
	return keys
}()

// BenchmarkMemoryStoreGet measures Get from all CPUs over 1024 keys at the
// proxy's real rate (50 per minute): after warm-up most calls are refusals
// on full logs, the hot path of a busy proxy.
func BenchmarkMemoryStoreGet(b *testing.B) {
	store := NewMemoryStore()
	rate := limiter.Rate{Period: time.Minute, Limit: 50}
	ctx := context.Background()
	var next atomic.Uint64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := next.Add(1) * 7919
		for pb.Next() {
			i++
			if _, err := store.Get(ctx, benchKeys[i%uint64(len(benchKeys))], rate); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkBudgetTake measures Budget.Take on a MemoryStore, one goroutine,
// with slots always free (a window of a microsecond) so every call is an
// admission.
func BenchmarkBudgetTake(b *testing.B) {
	budget := NewBudget(NewMemoryStore(), 50, time.Microsecond)
	ctx := context.Background()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if _, _, err := budget.Take(ctx, benchKeys[i%len(benchKeys)]); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRedisBudgetTake measures Budget.Take on a local redis-server:
// one script round trip per admission (a 10 ms window keeps logs short).
func BenchmarkRedisBudgetTake(b *testing.B) {
	client := redis.NewClient(&redis.Options{Addr: redistest.Start(b)})
	defer client.Close()
	budget := NewBudget(NewRedisStore(client, "bench:"), 1<<40, 10*time.Millisecond)
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for i := 0; pb.Next(); i++ {
			if _, _, err := budget.Take(ctx, benchKeys[i%len(benchKeys)]); err != nil {
				b.Fatal(err)
			}
		}
	})
}
