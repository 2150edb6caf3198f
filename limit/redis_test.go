package limit

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/caproxy/caproxy/internal/redistest"
)

// replicaBudgets returns n budgets of limit per minute, each a replica with
// its own client and RedisStore on addr.
func replicaBudgets(t *testing.T, addr string, n int, limit int64, opts ...RedisOption) []*Budget {
	t.Helper()
	var bs []*Budget
	for range n {
		client := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialerRetries: 1,
			DialTimeout: 200 * time.Millisecond, ReadTimeout: 200 * time.Millisecond})
		t.Cleanup(func() { client.Close() })
		bs = append(bs, NewBudget(NewRedisStore(client, "caproxy:", opts...), limit, time.Minute))
	}
	return bs
}

// takeN calls Take n times on b and returns how many were admitted and the
// last error.
func takeN(b *Budget, n int) (admitted int64, err error) {
	for range n {
		ok, _, e := b.Take(context.Background(), "demo")
		if e != nil {
			err = e
			continue
		}
		if ok {
			admitted++
		}
	}
	return admitted, err
}

// concurrently runs takeN(b, n) on g goroutines per budget and returns the
// total admitted.
func concurrently(bs []*Budget, g, n int) int64 {
	var total atomic.Int64
	var wg sync.WaitGroup
	for _, b := range bs {
		for range g {
			wg.Go(func() {
				a, _ := takeN(b, n)
				total.Add(a)
			})
		}
	}
	wg.Wait()
	return total.Load()
}

// TestRedisRestartedEmptyKeepsFloor spends 12 of 20 on two replicas, then
// restarts Redis empty: together the replicas admit exactly the 8 left,
// not 20 more (each writes its own calls back and counts the others' it
// last saw).
func TestRedisRestartedEmptyKeepsFloor(t *testing.T) {
	s := redistest.StartServer(t)
	bs := replicaBudgets(t, s.Addr, 2, 20)
	for _, b := range bs {
		if a, err := takeN(b, 6); a != 6 || err != nil {
			t.Fatalf("before the restart: admitted %d of 6, %v", a, err)
		}
	}
	// Each replica must have seen the other's calls once.
	for _, b := range bs {
		if st, err := b.State(context.Background(), "demo"); err != nil || st.Remaining != 8 {
			t.Fatalf("State before the restart = %+v, %v; want 8 remaining", st, err)
		}
	}
	s.Restart()
	// Calls may fail for a moment after the restart (go-redis's pool backs
	// off after failed dials): keep calling for a while.
	var got int64
	// First one replica alone, with many calls at once (its own calls in
	// flight must count exactly), then both.
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); {
		got += concurrently(bs[:1], 16, 5)
		if got > 8 {
			t.Fatalf("after Redis restarted empty one replica admitted %d, want at most the 8 left of 20", got)
		}
	}
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); {
		got += concurrently(bs, 4, 10)
		if got > 8 {
			t.Fatalf("after Redis restarted empty the replicas admitted %d, want exactly the 8 left of 20", got)
		}
	}
	if got != 8 {
		t.Fatalf("after Redis restarted empty the replicas admitted %d, want exactly the 8 left of 20", got)
	}
	// Redis holds all 20 again, written back by their replicas.
	fresh := replicaBudgets(t, s.Addr, 1, 20)[0]
	if st, err := fresh.State(context.Background(), "demo"); err != nil || st.Remaining != 0 {
		t.Fatalf("a new replica sees %+v, %v; want the budget spent", st, err)
	}
}

// TestRedisDownDeny checks the Deny policy: with Redis gone, Take fails
// with ErrUnavailable and admits nothing.
func TestRedisDownDeny(t *testing.T) {
	s := redistest.StartServer(t)
	b := replicaBudgets(t, s.Addr, 1, 20)[0]
	if a, err := takeN(b, 2); a != 2 || err != nil {
		t.Fatalf("admitted %d of 2, %v", a, err)
	}
	s.Kill()
	ok, _, err := b.Take(context.Background(), "demo")
	if ok || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Take with Redis down under deny = %v, %v; want refused with ErrUnavailable", ok, err)
	}
}

// TestRedisDownShare checks the Share policy with two replicas and a limit
// of 10: having spent 3 and 2 through Redis, with Redis gone they admit 2
// and 3 more (each up to its share of 5), 10 in all; when Redis comes back
// empty they admit nothing more in the window (each writes back what it
// spent).
func TestRedisDownShare(t *testing.T) {
	s := redistest.StartServer(t)
	bs := replicaBudgets(t, s.Addr, 2, 10, WithOutagePolicy(Share, 2))
	if a, err := takeN(bs[0], 3); a != 3 || err != nil {
		t.Fatalf("replica 0: admitted %d of 3, %v", a, err)
	}
	if a, err := takeN(bs[1], 2); a != 2 || err != nil {
		t.Fatalf("replica 1: admitted %d of 2, %v", a, err)
	}
	if _, err := bs[0].State(context.Background(), "demo"); err != nil { // sees replica 1's calls
		t.Fatal(err)
	}
	s.Kill()
	a0, err0 := takeN(bs[0], 10)
	a1, err1 := takeN(bs[1], 10)
	if err0 != nil || err1 != nil {
		t.Fatalf("Share returned errors: %v, %v", err0, err1)
	}
	if a0 != 2 || a1 != 3 {
		t.Fatalf("during the outage the replicas admitted %d and %d, want 2 and 3 (each up to its share of 5)", a0, a1)
	}
	if st, err := bs[0].State(context.Background(), "demo"); err != nil || st.Remaining != 0 || st.NextFree.IsZero() {
		t.Fatalf("State during the outage = %+v, %v; want spent with a next free slot", st, err)
	}
	s.Restart()
	// go-redis's pool may keep failing for a moment after failed dials;
	// under Share a failed call is decided locally, so keep calling until
	// both replicas have written their calls back, and check that not one
	// more call was admitted meanwhile.
	fresh := replicaBudgets(t, s.Addr, 1, 10)[0]
	deadline := time.Now().Add(10 * time.Second)
	for {
		if got := concurrently(bs, 2, 5); got != 0 {
			t.Fatalf("after Redis came back empty the replicas admitted %d more, want 0", got)
		}
		st, err := fresh.State(context.Background(), "demo")
		if err == nil && st.Remaining == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a new replica sees %+v, %v; want all 10 calls written back", st, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestRedisDownShareTakeAbove: under Share with Redis gone, TakeAbove
// still leaves the reserve (decided on the local floor), records one call
// each, and Take can then spend the reserve.
func TestRedisDownShareTakeAbove(t *testing.T) {
	s := redistest.StartServer(t)
	b := replicaBudgets(t, s.Addr, 1, 10, WithOutagePolicy(Share, 1))[0]
	if a, err := takeN(b, 3); a != 3 || err != nil {
		t.Fatalf("admitted %d of 3, %v", a, err)
	}
	s.Kill()
	var above int
	for range 10 {
		ok, _, err := b.TakeAbove(context.Background(), "demo", 3)
		if err != nil {
			t.Fatalf("TakeAbove under Share returned %v", err)
		}
		if ok {
			above++
		}
	}
	if above != 4 {
		t.Fatalf("TakeAbove(reserve 3) with Redis down admitted %d after 3 of 10, want 4", above)
	}
	if a, err := takeN(b, 10); a != 3 || err != nil {
		t.Fatalf("Take after them admitted %d, %v; want the 3 of the reserve", a, err)
	}
}
