package proxy_test

import (
	"context"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/ulule/limiter/v3"

	"github.com/caproxy/caproxy/limit"
)

// TestBudgetDownDenies runs the proxy on a Redis budget that cannot be
// reached, under on_failure deny: a miss with nothing stale gets 503 with
// Retry-After and makes no upstream call; an expired answer is served
// STALE instead.
func TestBudgetDownDenies(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()
	client := redis.NewClient(&redis.Options{Addr: dead, MaxRetries: -1, DialerRetries: 1, DialTimeout: 100 * time.Millisecond})
	defer client.Close()
	clk := newFakeClock()
	// The answer for agent002 is fetched while the budget still works.
	mem := limit.NewMemoryStore()
	mem.Now = clk.Now
	store := &switchStore{}
	store.to.Store(&storeBox{mem})
	h := newHarness(t, setup{clock: clk, ttl: time.Second, store: store})
	if r := h.aht(apikeyAccount, "agent002"); r.code != http.StatusOK {
		t.Fatalf("warm-up: %d %s", r.code, r.body)
	}
	store.to.Store(&storeBox{limit.NewRedisStore(client, "x:")})
	before := h.sim.Stats().AHTCalls

	r := h.aht(apikeyAccount, "agent001")
	if r.code != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" || r.status() != "error" {
		t.Fatalf("miss with the budget store down: %d %s (Retry-After %q), want 503 CloudAgent-shaped with Retry-After",
			r.code, r.body, r.header.Get("Retry-After"))
	}
	clk.Advance(2 * time.Second) // agent002's answer is now stale
	if r := h.aht(apikeyAccount, "agent002"); r.code != http.StatusOK || r.header.Get("X-Cache") != "STALE" {
		t.Fatalf("expired key with the budget store down: %d %q, want 200 STALE", r.code, r.header.Get("X-Cache"))
	}
	if got := h.sim.Stats().AHTCalls; got != before {
		t.Fatalf("%d upstream calls with the budget store down, want none", got-before)
	}
}

// switchStore is a limit.Store that forwards to the store in to, which a
// test may swap while the proxy serves.
type switchStore struct{ to atomic.Pointer[storeBox] }

type storeBox struct{ limit.Store }

func (s *switchStore) Get(ctx context.Context, key string, rate limiter.Rate) (limiter.Context, error) {
	return s.to.Load().Get(ctx, key, rate)
}
func (s *switchStore) Peek(ctx context.Context, key string, rate limiter.Rate) (limiter.Context, error) {
	return s.to.Load().Peek(ctx, key, rate)
}
func (s *switchStore) Reset(ctx context.Context, key string, rate limiter.Rate) (limiter.Context, error) {
	return s.to.Load().Reset(ctx, key, rate)
}
func (s *switchStore) Increment(ctx context.Context, key string, n int64, rate limiter.Rate) (limiter.Context, error) {
	return s.to.Load().Increment(ctx, key, n, rate)
}
func (s *switchStore) NextFree(ctx context.Context, key string, rate limiter.Rate) (time.Time, error) {
	return s.to.Load().NextFree(ctx, key, rate)
}
func (s *switchStore) GetAbove(ctx context.Context, key string, rate limiter.Rate, reserve int64) (limiter.Context, error) {
	return s.to.Load().GetAbove(ctx, key, rate, reserve)
}
