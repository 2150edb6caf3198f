package credential

import (
	"context"
	"testing"
	"time"

	"github.com/caproxy/caproxy/cloudagent"
)

// TestSupersededTokenNotPutBack reproduces issue 19's put-back: Redis loses
// its data, replica C (just started) generates T2, which ends T1 at
// CloudAgent; Redis loses its data again, and replica A, still holding T1,
// is first to put its copy back. C then finds an older token than its own
// in the store and puts T2 back over it, so A, refused on T1, moves to T2:
// no generation beyond T1 and T2. (Before generation epochs, C took T1
// from the store, every replica was refused, and a third token followed.)
func TestSupersededTokenNotPutBack(t *testing.T) {
	e := newShEnv(t, false)
	ctx := context.Background()
	a, b := e.replica(), e.replica()
	_, t1 := shApply(t, a)
	if _, tb := shApply(t, b); tb != t1 || e.gens() != 1 {
		t.Fatalf("before: %d generations, same token %v; want 1, true", e.gens(), tb == t1)
	}
	e.clk.Advance(2 * freshTokenAge) // T1 has worked a while

	flush := func() {
		t.Helper()
		if err := e.rdb.FlushAll(ctx).Err(); err != nil {
			t.Fatal(err)
		}
	}
	flush()
	c := e.replica() // a replica started after the loss has no copy
	hc, t2 := shApply(t, c)
	if t2 == t1 || e.gens() != 2 {
		t.Fatalf("replica C: %d generations, new token %v; want 2, true", e.gens(), t2 != t1)
	}
	c.Accept(hc)
	flush()

	e.clk.Advance(2 * DefaultSharedCheck) // every replica looks at the store again
	ha, ta := shApply(t, a)
	if ta != t1 {
		t.Fatal("replica A did not put its copy back into the empty store")
	}
	if _, tc := shApply(t, c); tc != t2 {
		t.Fatal("replica C took the superseded token from the store instead of putting its own back")
	}
	if tok, ok, err := e.store.Get(ctx, shUser); err != nil || !ok || tok.Value != t2 {
		t.Fatalf("store holds ok %v err %v newest %v; want T2", ok, err, tok.Value == t2)
	}
	// A's call on T1 is refused; A moves to T2 without generating.
	if msg := e.aht(t, ta); msg != cloudagent.MsgTokenExpired {
		t.Fatalf("T1 at CloudAgent: %q, want %q", msg, cloudagent.MsgTokenExpired)
	}
	a.Reject(ha)
	for i, ts := range []*TokenSource{a, b, c} {
		_, tok := shApply(t, ts)
		if tok != t2 {
			t.Fatalf("replica %d does not use the newest token", i)
		}
		if msg := e.aht(t, tok); msg != "" {
			t.Fatalf("replica %d's token refused: %q", i, msg)
		}
	}
	if g := e.gens(); g != 2 {
		t.Fatalf("%d generations, want 2: a needless generation followed the put-back", g)
	}
}

// TestEvictedTokenKeyPutBackOnlyNewest evicts only the token key (as an
// allkeys-* or volatile-* maxmemory policy may): the epoch key, which has
// no TTL, still names the newest token, so a replica holding a superseded
// copy cannot put it back, and the replica holding the newest one can.
func TestEvictedTokenKeyPutBackOnlyNewest(t *testing.T) {
	e := newShEnv(t, false)
	ctx := context.Background()
	a := e.replica()
	h1, t1 := shApply(t, a)
	a.Accept(h1)
	e.clk.Advance(2 * freshTokenAge)
	// Another replica replaces T1 (its refusal, say); A has not looked yet.
	c := e.replica()
	shApply(t, c)
	c.Accept(h1)
	c.Reject(h1)
	_, t2 := shApply(t, c)
	if t2 == t1 || e.gens() != 2 {
		t.Fatalf("%d generations; want 2", e.gens())
	}
	evict := func() {
		t.Helper()
		if err := e.rdb.Del(ctx, shTokenPfx+"{"+shUser+"}:token").Err(); err != nil {
			t.Fatal(err)
		}
	}
	evict()
	// A's superseded copy is refused by the store.
	if put, err := e.store.Put(ctx, shUser, "A", Token{ID: h1, Value: t1, Expires: shT0.Add(DefaultTokenTTL)}, time.Hour); err != nil || put {
		t.Fatalf("put-back of the superseded token = %v, %v; want refused", put, err)
	}
	e.clk.Advance(2 * DefaultSharedCheck)
	if _, tc := shApply(t, c); tc != t2 {
		t.Fatal("replica C lost its token")
	}
	for i, ts := range []*TokenSource{a, c} {
		if _, tok := shApply(t, ts); tok != t2 {
			t.Fatalf("replica %d does not use the newest token", i)
		}
	}
	if g := e.gens(); g != 2 {
		t.Fatalf("%d generations after the eviction, want still 2", g)
	}
}
