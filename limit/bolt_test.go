package limit

import (
	"context"
	"encoding/binary"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/ulule/limiter/v3"
	bolt "go.etcd.io/bbolt"

	"github.com/caproxy/caproxy/internal/fakeclock"
)

// openBoltDB opens a fresh bbolt file for t, closed when t ends.
func openBoltDB(t testing.TB) *bolt.DB {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "state"), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// openBolt opens a BoltStore on db, with a fresh MemoryStore on now.
func openBolt(t testing.TB, db *bolt.DB, now func() time.Time) *BoltStore {
	t.Helper()
	s, err := OpenBoltStore(db, "", &MemoryStore{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func boltKit(t testing.TB) storeKit {
	clock := fakeclock.New(t0)
	return storeKit{
		name:  "bolt",
		store: openBolt(t, openBoltDB(t), clock.Now),
		now:   clock.Now,
		sleep: clock.Advance,
	}
}

// reopenedStore is a BoltStore loaded again from its file before every
// call, as if the process restarted between any two calls: it behaves as a
// Store only if the file alone holds everything the store decides with.
type reopenedStore struct {
	t   testing.TB
	db  *bolt.DB
	now func() time.Time
	mu  sync.Mutex // one reopen and call at a time
}

func (r *reopenedStore) open() *BoltStore { return openBolt(r.t, r.db, r.now) }

func (r *reopenedStore) Get(ctx context.Context, key string, rate limiter.Rate) (limiter.Context, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.open().Get(ctx, key, rate)
}

func (r *reopenedStore) GetAbove(ctx context.Context, key string, rate limiter.Rate, reserve int64) (limiter.Context, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.open().GetAbove(ctx, key, rate, reserve)
}

func (r *reopenedStore) Peek(ctx context.Context, key string, rate limiter.Rate) (limiter.Context, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.open().Peek(ctx, key, rate)
}

func (r *reopenedStore) Increment(ctx context.Context, key string, count int64, rate limiter.Rate) (limiter.Context, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.open().Increment(ctx, key, count, rate)
}

func (r *reopenedStore) Reset(ctx context.Context, key string, rate limiter.Rate) (limiter.Context, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.open().Reset(ctx, key, rate)
}

func (r *reopenedStore) NextFree(ctx context.Context, key string, rate limiter.Rate) (time.Time, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.open().NextFree(ctx, key, rate)
}

func (r *reopenedStore) Release(ctx context.Context, key string, at time.Time) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.open().Release(ctx, key, at)
}

func reopenedKit(t testing.TB) storeKit {
	clock := fakeclock.New(t0)
	return storeKit{
		name:  "bolt-reopened",
		store: &reopenedStore{t: t, db: openBoltDB(t), now: clock.Now},
		now:   clock.Now,
		sleep: clock.Advance,
	}
}

// TestBoltStoreRestart spends a budget, then opens the file again as a
// restarted process would: the spent slots stay spent until each call's
// window ends, and free at those very moments.
func TestBoltStoreRestart(t *testing.T) {
	ctx := context.Background()
	clock := fakeclock.New(t0)
	dir := t.TempDir()
	path := filepath.Join(dir, "state")
	rate := limiter.Rate{Period: time.Minute, Limit: 50}

	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := openBolt(t, db, clock.Now)
	for i := range 50 {
		if c := must(t)(s.Get(ctx, "budget:demo", rate)); c.Reached {
			t.Fatalf("Get #%d refused", i+1)
		}
		clock.Advance(100 * time.Millisecond)
	}
	must(t)(s.Increment(ctx, "tokengen:demo", 3, limiter.Rate{Period: time.Hour, Limit: 10}))
	db.Close()

	clock.Advance(10 * time.Second) // the restart
	db, err = bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	s = openBolt(t, db, clock.Now)
	if c := must(t)(s.Get(ctx, "budget:demo", rate)); !c.Reached {
		t.Fatalf("Get after the restart admitted: %+v; the 50 calls before it were forgotten", c)
	}
	next, err := s.NextFree(ctx, "budget:demo", rate)
	if err != nil {
		t.Fatal(err)
	}
	if want := t0.Add(rate.Period); !next.Equal(want) {
		t.Fatalf("NextFree after the restart = %v, want %v (the first call's window end)", next, want)
	}
	clock.Set(next)
	if c := must(t)(s.Get(ctx, "budget:demo", rate)); c.Reached {
		t.Fatalf("Get once the first call left refused: %+v", c)
	}
	if c := must(t)(s.Get(ctx, "budget:demo", rate)); !c.Reached {
		t.Fatalf("a second Get got the slot of the second call, still in the window: %+v", c)
	}
	gen := limiter.Rate{Period: time.Hour, Limit: 10}
	if c := must(t)(s.Peek(ctx, "tokengen:demo", gen)); c.Remaining != 7 {
		t.Fatalf("token generations after the restart: %+v, want 7 remaining", c)
	}
}

// TestBoltStoreDropsExpired checks that opening the file drops the calls
// that have left their window, so the file does not grow with idle keys.
func TestBoltStoreDropsExpired(t *testing.T) {
	ctx := context.Background()
	clock := fakeclock.New(t0)
	db := openBoltDB(t)
	s := openBolt(t, db, clock.Now)
	rate := limiter.Rate{Period: time.Minute, Limit: 5}
	must(t)(s.Get(ctx, "old", rate))
	clock.Advance(30 * time.Second)
	must(t)(s.Get(ctx, "young", rate))
	clock.Advance(45 * time.Second) // old has left its window, young has not

	s = openBolt(t, db, clock.Now)
	db.View(func(tx *bolt.Tx) error {
		if s.bucketOf(tx, "old") != nil {
			t.Error("a key whose calls all left their window is still in the file")
		}
		if b := s.bucketOf(tx, "young"); b == nil || b.Stats().KeyN != 1 {
			t.Error("a call still inside its window was dropped from the file")
		}
		return nil
	})
}

// TestBoltStoreMalformed checks that a file whose budget bucket holds
// something this store did not write is an error, not a silent start with
// an empty budget.
func TestBoltStoreMalformed(t *testing.T) {
	db := openBoltDB(t)
	err := db.Update(func(tx *bolt.Tx) error {
		root, err := tx.CreateBucketIfNotExists(BoltBucket)
		if err != nil {
			return err
		}
		b, err := root.CreateBucketIfNotExists([]byte("budget:demo"))
		if err != nil {
			return err
		}
		return b.Put([]byte("short"), []byte("x"))
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := OpenBoltStore(db, "", NewMemoryStore()); err == nil {
		t.Fatal("OpenBoltStore on a malformed entry: no error")
	}
}

// TestBoltStoreWriteFails checks that an admission the file could not
// record is an error and takes nothing: a call that is not on disk must not
// be made.
func TestBoltStoreWriteFails(t *testing.T) {
	ctx := context.Background()
	clock := fakeclock.New(t0)
	db := openBoltDB(t)
	s := openBolt(t, db, clock.Now)
	rate := limiter.Rate{Period: time.Minute, Limit: 2}
	must(t)(s.Get(ctx, "a", rate))
	db.Close() // every write now fails
	if c, err := s.Get(ctx, "a", rate); err == nil {
		t.Fatalf("Get with the file closed = %+v, want an error", c)
	}
	if c := must(t)(s.Peek(ctx, "a", rate)); c.Remaining != 1 {
		t.Fatalf("after a failed Get: %+v, want the slot still free", c)
	}
}

// TestBoltStoreReleaseMatchesMemory checks that Release forgets on disk the
// same call it forgets in memory: the newest at or before the given time.
func TestBoltStoreReleaseMatchesMemory(t *testing.T) {
	ctx := context.Background()
	clock := fakeclock.New(t0)
	db := openBoltDB(t)
	s := openBolt(t, db, clock.Now)
	rate := limiter.Rate{Period: time.Minute, Limit: 3}
	must(t)(s.Get(ctx, "a", rate)) // t0
	clock.Advance(time.Second)
	taken := clock.Now()
	must(t)(s.Get(ctx, "a", rate)) // t0+1s
	clock.Advance(time.Second)
	must(t)(s.Get(ctx, "a", rate)) // t0+2s
	if err := s.Release(ctx, "a", taken); err != nil {
		t.Fatal(err)
	}
	var left []int64
	db.View(func(tx *bolt.Tx) error {
		return s.bucketOf(tx, "a").ForEach(func(k, _ []byte) error {
			left = append(left, int64(binary.BigEndian.Uint64(k)))
			return nil
		})
	})
	want := []int64{t0.UnixNano(), t0.Add(2 * time.Second).UnixNano()}
	if len(left) != 2 || left[0] != want[0] || left[1] != want[1] {
		t.Fatalf("calls on disk after Release(t0+1s) = %v, want %v", left, want)
	}
}

// BenchmarkBoltStoreGet measures an admitted Get on a BoltStore: one bolt
// transaction committed with fsync, the cost of every upstream call a
// single node with a state file makes (cache hits never reach it). A 1 ms
// window keeps every Get admitted and the logs short.
func BenchmarkBoltStoreGet(b *testing.B) {
	db := openBoltDB(b)
	s := openBolt(b, db, nil)
	rate := limiter.Rate{Period: time.Millisecond, Limit: 1 << 40}
	ctx := context.Background()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if c, err := s.Get(ctx, benchKeys[i%len(benchKeys)], rate); err != nil || c.Reached {
			b.Fatal(c, err)
		}
	}
}

// TestBoltStoreScopes checks that stores of two scopes (two upstreams) in
// one file keep their logs apart: a budget spent at one CloudAgent is not
// charged at another, and each finds its own again after a restart.
func TestBoltStoreScopes(t *testing.T) {
	ctx := context.Background()
	clock := fakeclock.New(t0)
	db := openBoltDB(t)
	rate := limiter.Rate{Period: time.Minute, Limit: 2}
	open := func(scope string) *BoltStore {
		s, err := OpenBoltStore(db, scope, &MemoryStore{Now: clock.Now})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	a := open("https://a.example")
	must(t)(a.Get(ctx, "demo", rate))
	must(t)(a.Get(ctx, "demo", rate))
	b := open("https://b.example")
	if c, err := b.Peek(ctx, "demo", rate); err != nil || c.Remaining != 2 {
		t.Fatalf("scope b sees %d free of 2 (err %v) after scope a spent its budget; want 2", c.Remaining, err)
	}
	if c, err := open("https://a.example").Peek(ctx, "demo", rate); err != nil || !c.Reached {
		t.Fatalf("scope a reopened: reached %v (err %v); want its spent budget back", c.Reached, err)
	}
}
