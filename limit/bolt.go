package limit

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/caproxy/caproxy/internal/boltsweep"
	"github.com/ulule/limiter/v3"
	bolt "go.etcd.io/bbolt"
)

// BoltBucket is the top-level bucket of a bbolt database that a BoltStore
// keeps its logs in: one nested bucket per key, one entry per recorded
// moment. A store opened with a scope uses BoltBucket + "@" + scope.
var BoltBucket = []byte("budget")

// BoltRoot is the top-level bucket of the BoltStore of scope.
func BoltRoot(scope string) []byte {
	if scope == "" {
		return BoltBucket
	}
	return []byte(string(BoltBucket) + "@" + scope)
}

// Layout of one entry of a key's bucket: the key is the moment (unix
// nanoseconds, big-endian, so entries sort oldest first) and a sequence
// number (two calls may share a moment); the value is how many calls were
// recorded then and the window they count in.
const (
	boltEntryKeyLen   = 16
	boltEntryValueLen = 16
)

// BoltStore is a MemoryStore whose log is also kept in a bbolt database,
// so that a single node's budgets survive a restart or a crash: a budget
// cannot be spent twice in one window by restarting.
//
// The MemoryStore decides; the database follows it. Every call that
// records or forgets (Get and GetAbove when they admit, Increment, Release,
// Reset) writes its change in one bolt transaction, committed (fsync'd)
// before the call returns, so a call admitted by Get is on disk before the
// caller can make it: a crash (kill -9) at any point loses at most calls
// that were never made, and never forgets one that was. Refused calls,
// Peek and NextFree read memory only. Changes are serialized by the store,
// so memory and disk see them in one order.
//
// Open it with OpenBoltStore, once per database and process (bbolt locks
// the file against other processes).
type BoltStore struct {
	mem  *MemoryStore
	db   *bolt.DB
	root []byte // the top-level bucket: BoltBucket, scoped
	// mu serializes changes, each an in-memory step and its transaction.
	mu sync.Mutex
}

var (
	_ Store    = (*BoltStore)(nil)
	_ Releaser = (*BoltStore)(nil)
)

// OpenBoltStore returns a BoltStore that decides with mem (an empty
// MemoryStore; its clock is the store's) and keeps its log in db's
// BoltBucket. It first loads the calls still inside their window from db
// into mem, and drops the others from db. An entry it cannot read is an
// error: the file is not one this store wrote.
//
// scope, if not "", keeps this store's logs apart from those of other
// scopes in the same file: caproxy scopes them by upstream, so a budget
// spent at one CloudAgent is not charged at another.
func OpenBoltStore(db *bolt.DB, scope string, mem *MemoryStore) (*BoltStore, error) {
	root := BoltRoot(scope)
	s := &BoltStore{mem: mem, db: db, root: root}
	now := mem.now().UnixNano()
	err := db.Update(func(tx *bolt.Tx) error {
		return boltsweep.Sweep(tx, root, func(key, k, v []byte) (bool, error) {
			at, n, period, err := decodeBoltEntry(k, v)
			if err != nil {
				return false, fmt.Errorf("key %q: %w", key, err)
			}
			if at+int64(period) <= now {
				return false, nil
			}
			mem.restore(string(key), time.Unix(0, at), n, period)
			return true, nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("limit: bolt store: loading %s: %w", db.Path(), err)
	}
	return s, nil
}

// decodeBoltEntry reads one entry of a key's bucket.
func decodeBoltEntry(k, v []byte) (at, n int64, period time.Duration, err error) {
	if len(k) != boltEntryKeyLen || len(v) != boltEntryValueLen {
		return 0, 0, 0, errors.New("malformed entry")
	}
	at = int64(binary.BigEndian.Uint64(k))
	n = int64(binary.BigEndian.Uint64(v))
	period = time.Duration(binary.BigEndian.Uint64(v[8:]))
	if n <= 0 || period <= 0 {
		return 0, 0, 0, errors.New("malformed entry")
	}
	return at, n, period, nil
}

// record writes n calls recorded for key at at, which count for period, and
// drops the key's calls that have left their window by now.
func (s *BoltStore) record(key string, at time.Time, n int64, period time.Duration) error {
	now := s.mem.now().UnixNano()
	return s.db.Update(func(tx *bolt.Tx) error {
		root, err := tx.CreateBucketIfNotExists(s.root)
		if err != nil {
			return err
		}
		b, err := root.CreateBucketIfNotExists([]byte(key))
		if err != nil {
			return err
		}
		// Calls leave oldest first: drop from the front while they have.
		c := b.Cursor()
		for k, v := c.First(); k != nil; k, v = c.First() {
			kat, _, kperiod, err := decodeBoltEntry(k, v)
			if err == nil && kat+int64(kperiod) > now {
				break
			}
			if err := c.Delete(); err != nil {
				return err
			}
		}
		seq, err := b.NextSequence()
		if err != nil {
			return err
		}
		var k [boltEntryKeyLen]byte
		var v [boltEntryValueLen]byte
		binary.BigEndian.PutUint64(k[:], uint64(at.UnixNano()))
		binary.BigEndian.PutUint64(k[8:], seq)
		binary.BigEndian.PutUint64(v[:], uint64(n))
		binary.BigEndian.PutUint64(v[8:], uint64(period))
		return b.Put(k[:], v[:])
	})
}

// get is Get (o opGet) or GetAbove (o opGetAbove): admitted calls are on
// disk before it returns. When the write fails the call is taken back and
// the error returned, so the caller does not make it.
func (s *BoltStore) get(key string, rate limiter.Rate, o op, reserve int64) (limiter.Context, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, _, at := s.mem.do(key, rate, o, reserve)
	if c.Reached || at.IsZero() {
		return c, nil
	}
	if err := s.record(key, at, 1, rate.Period); err != nil {
		s.mem.Release(context.Background(), key, at)
		return limiter.Context{}, fmt.Errorf("limit: bolt store: recording a call: %w", err)
	}
	return c, nil
}

// Get admits one call for key if fewer than rate.Limit were admitted in the
// trailing rate.Period, recording it in memory and on disk; see Store.
func (s *BoltStore) Get(_ context.Context, key string, rate limiter.Rate) (limiter.Context, error) {
	return s.get(key, rate, opGet, 0)
}

// GetAbove admits one call for key if more than reserve slots are free,
// recording it in memory and on disk; see Store.
func (s *BoltStore) GetAbove(_ context.Context, key string, rate limiter.Rate, reserve int64) (limiter.Context, error) {
	return s.get(key, rate, opGetAbove, reserve)
}

// Increment records count calls for key now, whatever the limit, in memory
// and on disk; see Store. When the write fails the calls stay counted in
// memory (the safe side) and the error is returned.
func (s *BoltStore) Increment(_ context.Context, key string, count int64, rate limiter.Rate) (limiter.Context, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, _, at := s.mem.do(key, rate, opIncrement, count)
	if at.IsZero() {
		return c, nil
	}
	if err := s.record(key, at, count, rate.Period); err != nil {
		return limiter.Context{}, fmt.Errorf("limit: bolt store: recording calls: %w", err)
	}
	return c, nil
}

// Peek reports key's state without recording anything; see Store.
func (s *BoltStore) Peek(ctx context.Context, key string, rate limiter.Rate) (limiter.Context, error) {
	return s.mem.Peek(ctx, key, rate)
}

// NextFree returns the earliest time a Get for key would be admitted; see
// Store.
func (s *BoltStore) NextFree(ctx context.Context, key string, rate limiter.Rate) (time.Time, error) {
	return s.mem.NextFree(ctx, key, rate)
}

// Release forgets the newest call recorded for key at or before at, in
// memory and on disk; see Releaser. When the write fails the call stays on
// disk (counted after a restart: the safe side).
func (s *BoltStore) Release(ctx context.Context, key string, at time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mem.Release(ctx, key, at)
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := s.bucketOf(tx, key)
		if b == nil {
			return nil
		}
		// The newest entry at or before at: seek past at's moment, step back.
		var seek [boltEntryKeyLen]byte
		binary.BigEndian.PutUint64(seek[:], uint64(at.UnixNano())+1)
		c := b.Cursor()
		k, v := c.Seek(seek[:])
		if k == nil {
			k, v = c.Last()
		} else {
			k, v = c.Prev()
		}
		if k == nil {
			return nil
		}
		_, n, period, err := decodeBoltEntry(k, v)
		if err != nil || n <= 1 {
			return c.Delete()
		}
		var nv [boltEntryValueLen]byte
		binary.BigEndian.PutUint64(nv[:], uint64(n-1))
		binary.BigEndian.PutUint64(nv[8:], uint64(period))
		return b.Put(bytes.Clone(k), nv[:])
	})
	if err != nil {
		return fmt.Errorf("limit: bolt store: releasing a call: %w", err)
	}
	return nil
}

// Reset forgets every call recorded for key, in memory and on disk.
func (s *BoltStore) Reset(ctx context.Context, key string, rate limiter.Rate) (limiter.Context, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, _ := s.mem.Reset(ctx, key, rate)
	err := s.db.Update(func(tx *bolt.Tx) error {
		root := tx.Bucket(s.root)
		if root == nil || root.Bucket([]byte(key)) == nil {
			return nil
		}
		return root.DeleteBucket([]byte(key))
	})
	if err != nil {
		return limiter.Context{}, fmt.Errorf("limit: bolt store: reset: %w", err)
	}
	return c, nil
}

// bucketOf is key's bucket in tx, or nil if it has none.
func (s *BoltStore) bucketOf(tx *bolt.Tx, key string) *bolt.Bucket {
	root := tx.Bucket(s.root)
	if root == nil {
		return nil
	}
	return root.Bucket([]byte(key))
}
