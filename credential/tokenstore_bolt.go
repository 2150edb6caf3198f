package credential

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/caproxy/caproxy/internal/boltsweep"
	bolt "go.etcd.io/bbolt"
)

// BoltTokenBucket is the top-level bucket of a bbolt database that a
// BoltTokenStore keeps tokens in: a nested bucket per upstream, in it one
// entry per account.
var BoltTokenBucket = []byte("tokens")

// boltToken is a token as a BoltTokenStore writes it.
type boltToken struct {
	ID      string `json:"id"`
	Value   string `json:"value"`
	Expires int64  `json:"expires"` // unix nanoseconds
}

// BoltTokenStore is a MemoryTokenStore whose tokens are also kept in a
// bbolt database, so that a single node that restarts within a token's
// hour uses the token it had instead of generating another (each
// generation logs out every other user of the account, and CloudAgent
// allows 10 an hour).
//
// Claims and holds stay in memory: they belong to the running process
// (bbolt locks the file against any other), so a process that died holding
// one must not block its successor. Put and Drop write the token's change
// in one bolt transaction, committed (fsync'd) before they return; Get
// reads memory. The token is a secret kept in clear, as in Redis: the file
// is created readable by its owner only.
//
// Open it with OpenBoltTokenStore, once per database and process.
type BoltTokenStore struct {
	mem   MemoryTokenStore
	db    *bolt.DB
	scope []byte // the upstream's bucket in BoltTokenBucket
	// mu serializes changes, each an in-memory step and its transaction.
	mu sync.Mutex
}

var _ TokenStore = (*BoltTokenStore)(nil)

// OpenBoltTokenStore returns a BoltTokenStore keeping the tokens of the
// upstream named scope (its configured URL) in db's BoltTokenBucket, on the
// clock now (nil: time.Now). Tokens are kept per upstream so that a token
// is only ever sent back to the upstream that issued it, even when the
// configuration changes between runs. It loads the scope's tokens still
// valid and drops every expired one. An entry it cannot read is an error:
// the file is not one this store wrote.
func OpenBoltTokenStore(db *bolt.DB, scope string, now func() time.Time) (*BoltTokenStore, error) {
	s := &BoltTokenStore{mem: MemoryTokenStore{Now: now}, db: db, scope: []byte(scope)}
	t := s.mem.now()
	err := db.Update(func(tx *bolt.Tx) error {
		return boltsweep.Sweep(tx, BoltTokenBucket, func(name, account, v []byte) (bool, error) {
			var bt boltToken
			if v == nil || json.Unmarshal(v, &bt) != nil || bt.ID == "" || bt.Value == "" {
				return false, fmt.Errorf("malformed entry for account %q", account)
			}
			tok := Token{ID: bt.ID, Value: bt.Value, Expires: time.Unix(0, bt.Expires)}
			if !t.Before(tok.Expires) {
				return false, nil
			}
			if !bytes.Equal(name, s.scope) {
				return true, nil // another upstream's: kept for it
			}
			_, err := s.mem.Put(context.Background(), string(account), "", tok, tok.Expires.Sub(t))
			return true, err
		})
	})
	if err != nil {
		return nil, fmt.Errorf("credential: bolt token store: loading %s: %w", db.Path(), err)
	}
	return s, nil
}

// bucket returns the scope's bucket in tx, creating it when create is set;
// nil when it does not exist.
func (s *BoltTokenStore) bucket(tx *bolt.Tx, create bool) (*bolt.Bucket, error) {
	if !create {
		if root := tx.Bucket(BoltTokenBucket); root != nil {
			return root.Bucket(s.scope), nil
		}
		return nil, nil
	}
	root, err := tx.CreateBucketIfNotExists(BoltTokenBucket)
	if err != nil {
		return nil, err
	}
	return root.CreateBucketIfNotExists(s.scope)
}

// Get returns account's token; see TokenStore.
func (s *BoltTokenStore) Get(ctx context.Context, account string) (Token, bool, error) {
	return s.mem.Get(ctx, account)
}

// Claim elects owner the generator; see TokenStore. Claims are kept in
// memory only.
func (s *BoltTokenStore) Claim(ctx context.Context, account, owner, seen string, lease time.Duration) (Claim, error) {
	return s.mem.Claim(ctx, account, owner, seen, lease)
}

// Release gives up owner's claim, leaving hold; see TokenStore. Holds are
// kept in memory only.
func (s *BoltTokenStore) Release(ctx context.Context, account, owner string, hold Hold) error {
	return s.mem.Release(ctx, account, owner, hold)
}

// Put stores tok and gives up owner's claim; see TokenStore. A stored token
// is on disk before Put returns; if writing it fails, the token is still
// used by this process and the error says it will not survive a restart.
func (s *BoltTokenStore) Put(ctx context.Context, account, owner string, tok Token, keep time.Duration) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	stored, err := s.mem.Put(ctx, account, owner, tok, keep)
	if err != nil || !stored {
		return stored, err
	}
	v, err := json.Marshal(boltToken{ID: tok.ID, Value: tok.Value, Expires: tok.Expires.UnixNano()})
	if err == nil {
		err = s.db.Update(func(tx *bolt.Tx) error {
			b, err := s.bucket(tx, true)
			if err != nil {
				return err
			}
			return b.Put([]byte(account), v)
		})
	}
	if err != nil {
		return true, fmt.Errorf("credential: bolt token store: put %q: %w", account, err)
	}
	return true, nil
}

// Drop deletes account's token if it is still id, in memory and on disk;
// see TokenStore.
func (s *BoltTokenStore) Drop(ctx context.Context, account, id string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	dropped, err := s.mem.Drop(ctx, account, id)
	if err != nil || !dropped {
		return dropped, err
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		b, _ := s.bucket(tx, false)
		if b == nil {
			return nil
		}
		return b.Delete([]byte(account))
	})
	if err != nil {
		return true, fmt.Errorf("credential: bolt token store: drop %q: %w", account, err)
	}
	return true, nil
}
