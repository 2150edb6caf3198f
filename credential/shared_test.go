package credential

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/caproxy/caproxy/cloudagent"
	"github.com/caproxy/caproxy/cloudagent/sim"
	"github.com/caproxy/caproxy/internal/fakeclock"
	"github.com/caproxy/caproxy/internal/redistest"
	"github.com/caproxy/caproxy/internal/syncbuf"
	"github.com/caproxy/caproxy/limit"
)

// The shared-token tests use names of their own so they stay apart from
// token_test.go's helpers.
const (
	shUser     = "demo"
	shKey      = "shared-key-S3CRET-0123456789"
	shTokenPfx = "test:token:"
)

var shT0 = time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC)

// shEnv is one simulator on loopback, one real redis-server and a set of
// replicas: TokenSources for the demo account sharing one token store and
// one generation guard, all on one fake clock.
type shEnv struct {
	clk   *fakeclock.Clock
	sim   *sim.Server
	srv   *httptest.Server
	url   *url.URL
	rdb   *redis.Client
	store TokenStore
	guard Guard
	logs  *syncbuf.Buffer
}

// newShEnv starts the simulator and redis-server. The token store is a
// RedisTokenStore, or a MemoryTokenStore on the fake clock when memory is
// set. The guard is a Budget of 10 generations an hour on Redis.
func newShEnv(t *testing.T, memory bool) *shEnv {
	t.Helper()
	e := &shEnv{clk: fakeclock.New(shT0), logs: &syncbuf.Buffer{}}
	e.sim = sim.New(sim.Options{
		Accounts: []sim.Account{{UserName: shUser, APIKey: shKey, Auth: sim.AuthToken}},
		Now:      e.clk.Now,
	})
	e.srv = httptest.NewServer(e.sim)
	t.Cleanup(e.srv.Close)
	var err error
	if e.url, err = url.Parse(e.srv.URL); err != nil {
		t.Fatal(err)
	}
	e.rdb = redis.NewClient(&redis.Options{Addr: redistest.Start(t)})
	t.Cleanup(func() { e.rdb.Close() })
	if memory {
		e.store = &MemoryTokenStore{Now: e.clk.Now}
	} else {
		e.store = NewRedisTokenStore(e.rdb, shTokenPfx)
	}
	e.guard = limit.NewBudget(limit.NewRedisStore(e.rdb, "test:limit:"), DefaultGenerationsPerHour, time.Hour,
		limit.WithPrefix("tokengen:"))
	return e
}

// replica returns a new replica's TokenSource.
func (e *shEnv) replica() *TokenSource {
	return &TokenSource{
		UserName: shUser,
		APIKey:   shKey,
		Endpoint: e.url,
		Client:   e.srv.Client(),
		Guard:    e.guard,
		Now:      e.clk.Now,
		Logger:   slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Shared:   e.store,
	}
}

func (e *shEnv) replicas(n int) []*TokenSource {
	rs := make([]*TokenSource, n)
	for i := range rs {
		rs[i] = e.replica()
	}
	return rs
}

// gens is how many tokens the simulator generated.
func (e *shEnv) gens() int64 { return e.sim.Stats().TokenGenerations }

// shApply calls ts.Apply and returns the handle and the bearer token set.
func shApply(t *testing.T, ts *TokenSource) (handle, token string) {
	t.Helper()
	h := http.Header{}
	handle, err := ts.Apply(context.Background(), h)
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	token, ok := strings.CutPrefix(h.Get("Authorization"), "Bearer ")
	if !ok || token == "" {
		t.Fatalf("Apply set Authorization %q", h.Get("Authorization"))
	}
	return handle, token
}

// aht calls the simulator's AHT API with token and returns its error
// message, or "" when it accepted the token.
func (e *shEnv) aht(t *testing.T, token string) string {
	return simAHT(t, e.srv, shUser, http.Header{"Authorization": {"Bearer " + token}})
}

// noSecrets fails if s holds the apiKey or any of the tokens.
func noSecrets(t *testing.T, what, s string, secrets ...string) {
	t.Helper()
	for _, sec := range append(secrets, shKey) {
		if sec != "" && strings.Contains(s, sec) {
			t.Errorf("%s reveals a secret: %q", what, s)
		}
	}
}

// applied is one Apply's outcome.
type applied struct {
	handle, auth string
	err          error
}

// applyAll runs n Apply calls at once, call i on rs[i%len(rs)], each after
// before(i) if before is set.
func applyAll(rs []*TokenSource, n int, before func(i int, ts *TokenSource)) []applied {
	out := make([]applied, n)
	var start, wg sync.WaitGroup
	start.Add(1)
	for i := range n {
		ts := rs[i%len(rs)]
		wg.Go(func() {
			start.Wait()
			if before != nil {
				before(i, ts)
			}
			h := http.Header{}
			handle, err := ts.Apply(context.Background(), h)
			out[i] = applied{handle, h.Get("Authorization"), err}
		})
	}
	start.Done()
	wg.Wait()
	return out
}

// sameToken fails unless every result succeeded with one token, and
// returns its handle and token.
func sameToken(t *testing.T, rs []applied) (handle, token string) {
	t.Helper()
	for i, r := range rs {
		if r.err != nil {
			t.Fatalf("Apply %d: %v", i, r.err)
		}
		if r.handle != rs[0].handle || r.auth != rs[0].auth {
			t.Fatalf("Apply %d got handle %q, Apply 0 got %q: replicas use different tokens", i, r.handle, rs[0].handle)
		}
	}
	return rs[0].handle, strings.TrimPrefix(rs[0].auth, "Bearer ")
}

func sumGenerations(rs []*TokenSource) (n int64) {
	for _, ts := range rs {
		n += ts.Generations()
	}
	return n
}

func TestSharedConcurrentApplyOneGeneration(t *testing.T) {
	for _, c := range []struct {
		name   string
		memory bool
	}{{"redis", false}, {"memory", true}} {
		t.Run(c.name, func(t *testing.T) {
			e := newShEnv(t, c.memory)
			rs := e.replicas(3)
			for _, ts := range rs {
				if !ts.Ready() {
					t.Fatal("Ready before the first generation = false")
				}
			}
			handle, tok := sameToken(t, applyAll(rs, 300, nil))

			if g := e.gens(); g != 1 {
				t.Fatalf("upstream generations = %d, want 1", g)
			}
			if n := sumGenerations(rs); n != 1 {
				t.Errorf("replicas report %d generations, want 1", n)
			}
			if handle != TokenID(tok) {
				t.Errorf("handle %q is not the token's ID", handle)
			}
			if msg := e.aht(t, tok); msg != "" {
				t.Fatalf("simulator refused the shared token: %q", msg)
			}
			if !c.memory {
				// The key lives as long as the token (60 min from the fake
				// clock's generation, in the server's time).
				ttl := e.rdb.PTTL(context.Background(), shTokenPfx+"{"+shUser+"}:token").Val()
				if ttl < 59*time.Minute || ttl > DefaultTokenTTL {
					t.Errorf("token key PTTL = %v, want about %v", ttl, DefaultTokenTTL)
				}
			}
			noSecrets(t, "logs", e.logs.String(), tok)
		})
	}
}

// TestSharedRejectRegeneratesOnce rejects one token 50 times across two
// replicas, then shows that the other replicas move to the new token on
// their own Reject or within SharedCheck.
func TestSharedRejectRegeneratesOnce(t *testing.T) {
	e := newShEnv(t, false)
	rs := e.replicas(4)
	h1, tok1 := sameToken(t, applyAll(rs, 8, nil))
	// The token worked: its refusal now is a token that ended, replaced at
	// once (a fresh token's refusal pauses generation instead).
	for _, ts := range rs {
		ts.Accept(h1)
	}

	rejecting := rs[:2]
	h2, tok2 := sameToken(t, applyAll(rejecting, 50, func(_ int, ts *TokenSource) { ts.Reject(h1) }))
	if g := e.gens(); g != 2 {
		t.Fatalf("upstream generations = %d, want 2", g)
	}
	if h2 == h1 {
		t.Fatal("Apply after Reject returned the rejected token")
	}
	if msg := e.aht(t, tok1); msg != cloudagent.MsgTokenExpired {
		t.Errorf("rejected token at the simulator: %q, want %q", msg, cloudagent.MsgTokenExpired)
	}

	// Replica 2 still holds the old token locally; CloudAgent refuses it
	// and the proxy rejects it: the next Apply uses the new token at once.
	rs[2].Reject(h1)
	if h, tok := shApply(t, rs[2]); h != h2 || tok != tok2 {
		t.Fatalf("replica 2 after its Reject: handle %q, want %q", h, h2)
	}
	// Replica 3 notices within SharedCheck without any Reject.
	e.clk.Advance(DefaultSharedCheck)
	h, tok := shApply(t, rs[3])
	if h != h2 || tok != tok2 {
		t.Fatalf("replica 3 after %v: handle %q, want %q", DefaultSharedCheck, h, h2)
	}
	if msg := e.aht(t, tok); msg != "" {
		t.Fatalf("simulator refused the new token taken by replica 3: %q", msg)
	}

	// Late, stale rejections change nothing anywhere.
	for _, ts := range rs {
		ts.Reject(h1)
		ts.Reject("no such handle")
		if h, _ := shApply(t, ts); h != h2 {
			t.Fatalf("after stale Rejects: handle %q, want %q", h, h2)
		}
	}
	if g := e.gens(); g != 2 {
		t.Fatalf("stale Rejects caused generations: %d, want 2", g)
	}
	if n := sumGenerations(rs); n != 2 {
		t.Errorf("replicas report %d generations, want 2", n)
	}
	noSecrets(t, "logs", e.logs.String(), tok1, tok2)
}

func TestSharedProactiveRefresh(t *testing.T) {
	e := newShEnv(t, false)
	rs := e.replicas(3)
	h1, tok1 := sameToken(t, applyAll(rs, 30, nil))

	e.clk.Set(shT0.Add(30 * time.Minute))
	if h, _ := sameToken(t, applyAll(rs, 30, nil)); h != h1 || e.gens() != 1 {
		t.Fatalf("at 30 min: token changed or regenerated (generations %d)", e.gens())
	}

	e.clk.Set(shT0.Add(54 * time.Minute))
	h2, tok2 := sameToken(t, applyAll(rs, 90, nil))
	if h2 == h1 {
		t.Fatal("at 54 min: token not refreshed")
	}
	if g := e.gens(); g != 2 {
		t.Fatalf("upstream generations = %d, want 2", g)
	}
	if msg := e.aht(t, tok1); msg != cloudagent.MsgTokenExpired {
		t.Errorf("old token at the simulator: %q, want %q", msg, cloudagent.MsgTokenExpired)
	}
	if msg := e.aht(t, tok2); msg != "" {
		t.Errorf("refreshed token refused: %q", msg)
	}
	// The new token lives from its own generation.
	e.clk.Set(shT0.Add(54*time.Minute + 45*time.Minute))
	if h, _ := sameToken(t, applyAll(rs, 30, nil)); h != h2 || e.gens() != 2 {
		t.Errorf("45 min into the new token: regenerated (generations %d)", e.gens())
	}
}

// TestSharedClaimHolderDies leaves a claim as a replica that died while
// generating would: the others wait out its lease, then one generates.
func TestSharedClaimHolderDies(t *testing.T) {
	e := newShEnv(t, false)
	const lease = time.Second
	cl, err := e.store.Claim(context.Background(), shUser, "dead-replica", "", lease)
	if err != nil || !cl.Won {
		t.Fatalf("planting the dead claim: %+v, %v", cl, err)
	}
	rs := e.replicas(2)

	// While the lease lasts nobody generates; a caller may give up.
	ctx, cancel := context.WithTimeout(context.Background(), lease/10)
	defer cancel()
	if _, err := rs[0].Apply(ctx, http.Header{}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Apply during the dead claim: %v, want DeadlineExceeded", err)
	}
	if g := e.gens(); g != 0 {
		t.Fatalf("generated during another replica's claim: %d", g)
	}

	_, tok := sameToken(t, applyAll(rs, 20, nil))
	if g := e.gens(); g != 1 {
		t.Fatalf("upstream generations = %d, want 1", g)
	}
	if msg := e.aht(t, tok); msg != "" {
		t.Fatalf("token generated after the lease refused: %q", msg)
	}
	// The dead replica's late Put cannot overwrite it.
	if ok, err := e.store.Put(context.Background(), shUser, "dead-replica",
		Token{ID: "late", Value: "late-token", Expires: shT0.Add(time.Hour)}, time.Hour); ok || err != nil {
		t.Fatalf("late Put by the dead claim holder: stored %v, %v", ok, err)
	}
	if _, got := shApply(t, rs[1]); got != tok {
		t.Fatal("token changed after the dead holder's late Put")
	}
}

// TestSharedFailureHoldsOtherReplicas shows that after one replica's failed
// generation the others neither call CloudAgent nor spend the guard until
// the backoff ends, and report the failure.
func TestSharedFailureHoldsOtherReplicas(t *testing.T) {
	t.Run("guard spent", func(t *testing.T) {
		e := newShEnv(t, false)
		// One generation an hour, shared by the replicas, on the fake clock.
		e.guard = limit.NewBudget(&limit.MemoryStore{Now: e.clk.Now}, 1, time.Hour,
			limit.WithPrefix("tokengen:"), limit.WithClock(e.clk))
		rs := e.replicas(3)
		h1, _ := shApply(t, rs[0])
		rs[0].Accept(h1) // a working token: replaced at once when refused
		rs[0].Reject(h1)

		_, err := rs[1].Apply(context.Background(), http.Header{})
		var le *GenerationLimitError
		if !errors.As(err, &le) || !le.NextFree.Equal(shT0.Add(time.Hour)) {
			t.Fatalf("replica 1: %v, want a GenerationLimitError freeing at %v", err, shT0.Add(time.Hour))
		}
		for _, ts := range []*TokenSource{rs[2], rs[0]} {
			_, err := ts.Apply(context.Background(), http.Header{})
			if !errors.Is(err, ErrGenerationLimit) || !errors.As(err, &le) || le.NextFree.Before(shT0.Add(59*time.Minute)) {
				t.Fatalf("replica held off: %v, want ErrGenerationLimit about an hour ahead", err)
			}
			if ts.Ready() {
				t.Error("Ready with no token and the guard spent = true")
			}
		}
		if n := rs[0].Failures() + rs[1].Failures() + rs[2].Failures(); n != 1 {
			t.Errorf("replicas tried %d refused generations, want 1", n)
		}
		if st := e.sim.Stats(); st.TokenGenerations != 1 || st.TokenRejected != 0 {
			t.Fatalf("upstream saw %d generations, %d refused; want 1, 0", st.TokenGenerations, st.TokenRejected)
		}
	})

	t.Run("upstream refuses", func(t *testing.T) {
		e := newShEnv(t, false)
		rs := e.replicas(2)
		const wrongKey = "wrong-key-S3CRET-9876543210"
		rs[0].APIKey = wrongKey
		_, err := rs[0].Apply(context.Background(), http.Header{})
		var ue *UpstreamError
		if !errors.As(err, &ue) || ue.Message != cloudagent.MsgTokenInvalidCredentials {
			t.Fatalf("replica 0: %v, want an UpstreamError", err)
		}
		_, err = rs[1].Apply(context.Background(), http.Header{})
		if err == nil || errors.Is(err, ErrGenerationLimit) || !strings.Contains(err.Error(), cloudagent.MsgTokenInvalidCredentials) {
			t.Fatalf("replica 1 during the hold: %v, want the other replica's failure", err)
		}
		if rs[1].Ready() {
			t.Error("replica 1 Ready during the hold = true")
		}
		if st := e.sim.Stats(); st.TokenRejected != 1 || st.TokenGenerations != 0 {
			t.Fatalf("upstream saw %d refused and %d generations, want 1 and 0", st.TokenRejected, st.TokenGenerations)
		}
		noSecrets(t, "error", err.Error(), wrongKey)
		noSecrets(t, "logs", e.logs.String(), wrongKey)
	})
}

// TestSharedFailedRefreshKeepsCurrentToken spends the shared guard so that
// the refresh at 54 min is refused: every replica keeps using the current
// token, and only one of them asked the guard.
func TestSharedFailedRefreshKeepsCurrentToken(t *testing.T) {
	e := newShEnv(t, false)
	e.guard = limit.NewBudget(&limit.MemoryStore{Now: e.clk.Now}, 1, time.Hour,
		limit.WithPrefix("tokengen:"), limit.WithClock(e.clk))
	rs := e.replicas(3)
	h1, tok1 := sameToken(t, applyAll(rs, 30, nil))

	e.clk.Set(shT0.Add(54 * time.Minute))
	for range 2 {
		if h, _ := sameToken(t, applyAll(rs, 30, nil)); h != h1 {
			t.Fatal("failed refresh replaced the token")
		}
		e.clk.Advance(DefaultSharedCheck)
	}
	if msg := e.aht(t, tok1); msg != "" {
		t.Fatalf("kept token refused by the simulator: %q", msg)
	}
	for i, ts := range rs {
		if !ts.Ready() {
			t.Errorf("replica %d: Ready with a usable token = false", i)
		}
	}
	if n := rs[0].Failures() + rs[1].Failures() + rs[2].Failures(); n != 1 {
		t.Errorf("replicas made %d refused generation attempts, want 1", n)
	}
	if st := e.sim.Stats(); st.TokenGenerations != 1 || st.TokenRejected != 0 {
		t.Fatalf("upstream saw %d generations, %d refused; want 1, 0", st.TokenGenerations, st.TokenRejected)
	}
	if logs := e.logs.String(); !strings.Contains(logs, "hourly generation limit") || !strings.Contains(logs, "keeping_current_token=true") {
		t.Errorf("no warning about the refused refresh in logs:\n%s", logs)
	}
}

// TestSharedStoreDown shows that a replica keeps its token while the store
// is unreachable, and never generates without it.
func TestSharedStoreDown(t *testing.T) {
	e := newShEnv(t, false)
	own := redis.NewClient(&redis.Options{Addr: e.rdb.Options().Addr})
	ts := e.replica()
	ts.Shared = NewRedisTokenStore(own, shTokenPfx)
	h1, tok1 := shApply(t, ts)

	own.Close()
	e.clk.Advance(DefaultSharedCheck)
	if h, tok := shApply(t, ts); h != h1 || tok != tok1 {
		t.Fatal("store down: the current token was not kept")
	}
	ts.Accept(h1) // a working token: replaced at once when refused
	ts.Reject(h1)
	_, err := ts.Apply(context.Background(), http.Header{})
	if err == nil || !strings.Contains(err.Error(), "shared token store unavailable") {
		t.Fatalf("Apply with no token and the store down: %v", err)
	}
	if g := e.gens(); g != 1 {
		t.Fatalf("generated without the store: %d generations, want 1", g)
	}
	if !errors.Is(err, ErrStoreUnavailable) {
		t.Errorf("Apply with the store down: %v, want ErrStoreUnavailable", err)
	}
	// Still ready: a Redis outage is reported as degraded, and the replica
	// keeps serving what its memory holds (not-ready would make a load
	// balancer drop its hits too).
	if !ts.Ready() {
		t.Error("Ready with no token and the store down = false")
	}
	noSecrets(t, "error", err.Error(), tok1)

	// Another replica on the working store: the token dropped by nobody
	// (the Drop failed) is still shared and still valid upstream.
	if _, tok := shApply(t, e.replica()); tok != tok1 {
		t.Fatal("healthy replica does not use the shared token")
	}
}

// TestTokenStores runs the TokenStore contract against every driver.
func TestTokenStores(t *testing.T) {
	const shortLease = 50 * time.Millisecond
	drivers := []struct {
		name string
		make func(t *testing.T) (TokenStore, func(time.Duration))
	}{
		{"memory", func(*testing.T) (TokenStore, func(time.Duration)) {
			clk := fakeclock.New(shT0)
			return &MemoryTokenStore{Now: clk.Now}, clk.Advance
		}},
		{"bolt", func(t *testing.T) (TokenStore, func(time.Duration)) {
			clk := fakeclock.New(shT0)
			return openBoltTokens(t, openTokenDB(t, filepath.Join(t.TempDir(), "state")), clk.Now), clk.Advance
		}},
		{"redis", func(t *testing.T) (TokenStore, func(time.Duration)) {
			rdb := redis.NewClient(&redis.Options{Addr: redistest.Start(t)})
			t.Cleanup(func() { rdb.Close() })
			// Redis keeps time itself: let it pass.
			return NewRedisTokenStore(rdb, "conf:"), func(d time.Duration) { time.Sleep(d + 20*time.Millisecond) }
		}},
	}
	for _, d := range drivers {
		t.Run(d.name, func(t *testing.T) {
			s, elapse := d.make(t)
			ctx := context.Background()
			tok1 := Token{ID: TokenID("tok-1"), Value: "tok-1", Expires: shT0.Add(time.Hour + time.Nanosecond)}
			tok2 := Token{ID: TokenID("tok-2"), Value: "tok-2", Expires: shT0.Add(2 * time.Hour)}

			claim := func(account, owner, seen string, lease time.Duration, want Claim) {
				t.Helper()
				got, err := s.Claim(ctx, account, owner, seen, lease)
				if err != nil {
					t.Fatal(err)
				}
				if want.Hold.For > 0 {
					if got.Hold.For <= 0 || got.Hold.For > want.Hold.For {
						t.Fatalf("Claim(%s, %s): hold for %v, want (0, %v]", account, owner, got.Hold.For, want.Hold.For)
					}
					got.Hold.For = want.Hold.For
				}
				if got != want {
					t.Fatalf("Claim(%s, %s, seen %q) = %+v, want %+v", account, owner, seen, got, want)
				}
			}
			put := func(account, owner string, tok Token, keep time.Duration, want bool) {
				t.Helper()
				if got, err := s.Put(ctx, account, owner, tok, keep); err != nil || got != want {
					t.Fatalf("Put(%s, %s) = %v, %v; want %v", account, owner, got, err, want)
				}
			}
			get := func(account string, want Token, wantOK bool) {
				t.Helper()
				got, ok, err := s.Get(ctx, account)
				if err != nil || ok != wantOK || got.ID != want.ID || got.Value != want.Value || !got.Expires.Equal(want.Expires) {
					t.Fatalf("Get(%s) = %+v, %v, %v; want %+v, %v", account, got, ok, err, want, wantOK)
				}
			}
			drop := func(account, id string, want bool) {
				t.Helper()
				if got, err := s.Drop(ctx, account, id); err != nil || got != want {
					t.Fatalf("Drop(%s, %q) = %v, %v; want %v", account, id, got, err, want)
				}
			}
			release := func(account, owner string, h Hold) {
				t.Helper()
				if err := s.Release(ctx, account, owner, h); err != nil {
					t.Fatal(err)
				}
			}
			won, busy, changed := Claim{Won: true}, Claim{}, Claim{Changed: true}

			get("a", Token{}, false)
			drop("a", "", false)
			drop("a", tok1.ID, false)
			claim("a", "o1", "", time.Minute, won)
			claim("a", "o2", "", time.Minute, busy)
			claim("a", "o1", "", time.Minute, won) // renewal
			claim("a", "o2", tok1.ID, time.Minute, changed)
			put("a", "o2", tok1, time.Hour, false)
			get("a", Token{}, false)
			put("a", "o1", tok1, time.Hour, true)
			get("a", tok1, true)
			get("b", Token{}, false)

			// Put gave up the claim; the token is now what must be seen.
			claim("a", "o2", "", time.Minute, changed)
			claim("a", "o2", tok1.ID, time.Minute, won)
			release("a", "o3", Hold{}) // not the holder: nothing
			claim("a", "o3", tok1.ID, time.Minute, busy)
			release("a", "o2", Hold{})
			claim("a", "o3", tok1.ID, time.Minute, won)

			// A hold keeps everyone off, and keeps the claim holder's
			// successor from storing.
			release("a", "o3", Hold{For: time.Hour, Limited: true, Message: "guard spent"})
			claim("a", "o3", tok1.ID, time.Minute, Claim{Hold: Hold{For: time.Hour, Limited: true, Message: "guard spent"}})
			claim("a", "o4", tok1.ID, time.Minute, Claim{Hold: Hold{For: time.Hour, Limited: true, Message: "guard spent"}})
			put("a", "o3", tok2, time.Hour, false)
			get("a", tok1, true)

			// Compare and delete.
			drop("a", tok2.ID, false)
			get("a", tok1, true)
			drop("a", tok1.ID, true)
			get("a", Token{}, false)
			drop("a", tok1.ID, false)

			// A recovery hold keeps its kind and count.
			recov := Hold{For: time.Hour, Recovering: true, Refused: 3, Message: "fresh token refused"}
			claim("r", "o1", "", time.Minute, won)
			release("r", "o1", recov)
			claim("r", "o2", "", time.Minute, Claim{Hold: recov})

			// With nobody claiming and no token, anyone may store; over a
			// token only a newer one (a replica's copy after the store lost
			// its data), never an older one (a superseded token).
			put("c", "anyone", tok1, time.Hour, true)
			put("c", "anyone", tok1, time.Hour, false)
			get("c", tok1, true)
			put("c", "anyone", tok2, time.Hour, true)
			put("c", "anyone", tok1, time.Hour, false)
			get("c", tok2, true)
			// Newer is by time, also across a change in the number of
			// digits of the Unix nanoseconds (Redis compares them as text).
			old := Token{ID: TokenID("tok-1999"), Value: "tok-1999", Expires: time.Date(1999, 1, 1, 0, 0, 0, 0, time.UTC)}
			put("g", "anyone", old, time.Hour, true)
			put("g", "anyone", tok1, time.Hour, true)
			put("g", "anyone", old, time.Hour, false)
			get("g", tok1, true)

			// A dropped token is never put back; a newer one may be.
			if dropped, err := s.Drop(ctx, "c", tok2.ID); err != nil || !dropped {
				t.Fatalf("Drop = %v, %v", dropped, err)
			}
			put("c", "anyone", tok2, time.Hour, false)
			put("c", "anyone", tok1, time.Hour, false)
			get("c", Token{}, false)
			tok3 := Token{ID: TokenID("tok-3"), Value: "tok-3", Expires: shT0.Add(3 * time.Hour)}
			put("c", "anyone", tok3, time.Hour, true)
			get("c", tok3, true)

			// Leases, holds and tokens lapse.
			claim("d", "dead", "", shortLease, won)
			release("e", "o1", Hold{}) // unclaimed: nothing
			claim("e", "o1", "", time.Minute, won)
			release("e", "o1", Hold{For: shortLease, Message: "upstream down"})
			claim("e", "o2", "", time.Minute, Claim{Hold: Hold{For: shortLease, Message: "upstream down"}})
			claim("f", "o1", "", time.Minute, won)
			put("f", "o1", tok2, shortLease, true)
			elapse(shortLease)
			claim("d", "o2", "", time.Minute, won)
			put("d", "dead", tok1, time.Hour, false)
			claim("e", "o2", "", time.Minute, won)
			get("f", Token{}, false)
		})
	}
}

// TestSharedStoreEmptiedKeepsToken empties Redis (as a restart without
// persistence does) under two replicas holding the shared token: the
// first to look puts its copy back, and no new token is generated, so no
// replica is logged out.
func TestSharedStoreEmptiedKeepsToken(t *testing.T) {
	e := newShEnv(t, false)
	rs := e.replicas(2)
	_, tok0 := shApply(t, rs[0])
	_, tok1 := shApply(t, rs[1])
	if tok0 != tok1 || e.gens() != 1 {
		t.Fatalf("before: tokens differ (%v) or %d generations, want one shared token", tok0 != tok1, e.gens())
	}
	if err := e.rdb.FlushAll(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	e.clk.Advance(2 * DefaultSharedCheck) // both look at the store again
	for i, ts := range rs {
		if _, tok := shApply(t, ts); tok != tok0 {
			t.Fatalf("replica %d uses another token after the store was emptied", i)
		}
	}
	if got := e.gens(); got != 1 {
		t.Fatalf("%d generations after the store was emptied, want still 1", got)
	}
	if tok, ok, err := e.store.Get(context.Background(), shUser); err != nil || !ok || tok.Value != tok0 {
		t.Fatalf("store after: ok %v, err %v, same token %v; want the token put back", ok, err, tok.Value == tok0)
	}
}
