package credential

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"sync"
	"time"
)

// Token is an upstream bearer token as replicas share it through a
// TokenStore.
type Token struct {
	// ID names the token without revealing it (see TokenID); it is the
	// handle Apply returns and what TokenStore.Drop and Claim compare.
	ID string
	// Value is the bearer token itself: a secret.
	Value string
	// Expires is when CloudAgent stops accepting the token.
	Expires time.Time
}

// TokenID returns the ID of the token value: the first 16 hex digits of its
// SHA-256. It is the same on every replica, so a handle from one replica
// names the token on all of them, and it cannot be turned back into the
// token, so handles may be logged.
func TokenID(value string) string {
	sum := sha256.Sum256([]byte(value))
	return hex.EncodeToString(sum[:8])
}

// Claim is the outcome of TokenStore.Claim.
type Claim struct {
	// Won says the caller is now the one replica generating the token.
	Won bool
	// Changed says the account's token is no longer the one the caller
	// wanted replaced: another replica stored or dropped one meanwhile, so
	// the caller should read it again rather than generate.
	Changed bool
	// Hold, when Hold.For > 0, says a generation failed and no replica may
	// generate for Hold.For. Won and Changed are false then. When all three
	// are unset, another replica is generating right now.
	Hold Hold
}

// Hold keeps every replica from generating for a while after a failed
// generation, so a failing upstream or a spent guard is not tried by each
// replica in turn.
type Hold struct {
	// For is how long the hold lasts; zero or less means none.
	For time.Duration
	// Limited says the generation guard was spent (ErrGenerationLimit); else
	// the upstream or the network failed.
	Limited bool
	// Recovering says CloudAgent refused a freshly generated token, so
	// generation pauses (ErrRecovering).
	Recovering bool
	// Refused is, when Recovering, how many fresh tokens were refused in a
	// row, so every replica's next pause grows from the same count.
	Refused int
	// Message is the failure as the failing replica saw it, for the errors of
	// the others. It never holds a secret (no error of this package does).
	Message string
}

// TokenStore shares upstream tokens between replicas, in the manner of
// ulule/limiter's Store: a narrow interface with interchangeable drivers
// (RedisTokenStore across processes, MemoryTokenStore within one).
//
// Per account it holds at most one Token and one claim. The claim elects
// the one replica that generates the next token: Claim takes it with a
// lease (so a replica that dies while generating blocks the others only
// until the lease ends), Put stores the new token and gives the claim up,
// Release gives it up after a failure, optionally leaving a Hold in its
// place. Owners are opaque strings unique per replica.
//
// Every method is atomic with respect to the others.
type TokenStore interface {
	// Get returns account's token; ok is false when there is none.
	Get(ctx context.Context, account string) (tok Token, ok bool, err error)
	// Claim makes owner the generator of the token that replaces the one
	// with ID seen ("" for none), for lease, if account's token is still
	// seen and nobody else holds the claim. Claiming again as the holder
	// renews the lease.
	Claim(ctx context.Context, account, owner, seen string, lease time.Duration) (Claim, error)
	// Put stores tok as account's token, kept for keep (the token's
	// remaining life), and gives up owner's claim, all at once. It stores
	// while owner holds the claim; when nobody holds it (a replica putting
	// its copy back), only a token newer (later Expires) than any the
	// account has had stored, or the newest itself, not dropped, when it is
	// gone (lapsed, evicted): a superseded token, which CloudAgent no
	// longer accepts, never replaces its successor. stored false means
	// owner lost the claim (its lease ended) and another replica may have
	// stored a token, or tok is not the newest.
	Put(ctx context.Context, account, owner string, tok Token, keep time.Duration) (stored bool, err error)
	// Release gives up owner's claim without a token, leaving hold in its
	// place when hold.For > 0. It does nothing if owner does not hold the
	// claim.
	Release(ctx context.Context, account, owner string, hold Hold) error
	// Drop deletes account's token if its ID is still id (compare and
	// delete), so a rejection that arrives after a replacement does not
	// throw the replacement away.
	Drop(ctx context.Context, account, id string) (dropped bool, err error)
}

// MemoryTokenStore is a TokenStore in this process's memory, for replicas
// that are TokenSources in one process (tests, or several proxies in one
// binary). Its leases, holds and token lifetimes run on Now. The zero value
// is ready to use.
type MemoryTokenStore struct {
	// Now is the clock of leases, holds and kept tokens; nil means time.Now.
	Now func() time.Time

	// mu guards accounts.
	mu       sync.Mutex
	accounts map[string]*memoryTokenEntry
}

// memoryTokenEntry is one account's token and claim.
type memoryTokenEntry struct {
	tok        Token
	tokUntil   time.Time // the token is gone from this time on; zero: no token
	claim      string    // the claim's owner; "" when unclaimed or held
	hold       Hold      // the hold after a failure, when claim is ""
	claimUntil time.Time // the claim or hold ends at this time
	// epoch is the newest token stored (its value unused) and dead whether
	// it was dropped; both outlive the token. See Put.
	epoch Token
	dead  bool
}

var _ TokenStore = (*MemoryTokenStore)(nil)

func (s *MemoryTokenStore) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// entryLocked returns account's entry with whatever has lapsed removed,
// creating it if needed; s.mu must be held.
func (s *MemoryTokenStore) entryLocked(account string, now time.Time) *memoryTokenEntry {
	if s.accounts == nil {
		s.accounts = make(map[string]*memoryTokenEntry)
	}
	e := s.accounts[account]
	if e == nil {
		e = &memoryTokenEntry{}
		s.accounts[account] = e
	}
	if !e.tokUntil.IsZero() && !now.Before(e.tokUntil) {
		e.tok, e.tokUntil = Token{}, time.Time{}
	}
	if !e.claimUntil.IsZero() && !now.Before(e.claimUntil) {
		e.claim, e.hold, e.claimUntil = "", Hold{}, time.Time{}
	}
	return e
}

// Get returns account's token; see TokenStore.
func (s *MemoryTokenStore) Get(_ context.Context, account string) (Token, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entryLocked(account, s.now())
	return e.tok, !e.tokUntil.IsZero(), nil
}

// Claim elects owner the generator; see TokenStore.
func (s *MemoryTokenStore) Claim(_ context.Context, account, owner, seen string, lease time.Duration) (Claim, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	e := s.entryLocked(account, now)
	switch {
	case e.tok.ID != seen:
		return Claim{Changed: true}, nil
	case e.claimUntil.IsZero() || (e.claim == owner && owner != ""):
		e.claim, e.hold, e.claimUntil = owner, Hold{}, now.Add(max(lease, time.Millisecond))
		return Claim{Won: true}, nil
	case e.claim == "":
		h := e.hold
		h.For = e.claimUntil.Sub(now)
		return Claim{Hold: h}, nil
	}
	return Claim{}, nil
}

// Put stores tok and gives up owner's claim; see TokenStore.
func (s *MemoryTokenStore) Put(_ context.Context, account, owner string, tok Token, keep time.Duration) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	e := s.entryLocked(account, now)
	holder := e.claim == owner && owner != ""
	if !holder {
		newer := e.epoch.ID == "" || tok.Expires.After(e.epoch.Expires) ||
			(tok.Expires.Equal(e.epoch.Expires) && tok.ID == e.epoch.ID && !e.dead && e.tokUntil.IsZero())
		if !e.claimUntil.IsZero() || !newer {
			return false, nil
		}
	}
	e.tok, e.tokUntil = tok, now.Add(max(keep, time.Millisecond))
	e.epoch, e.dead = Token{ID: tok.ID, Expires: tok.Expires}, false
	e.claim, e.hold, e.claimUntil = "", Hold{}, time.Time{}
	return true, nil
}

// Release gives up owner's claim, leaving hold; see TokenStore.
func (s *MemoryTokenStore) Release(_ context.Context, account, owner string, hold Hold) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	e := s.entryLocked(account, now)
	if e.claim != owner || owner == "" {
		return nil
	}
	e.claim, e.hold, e.claimUntil = "", Hold{}, time.Time{}
	if hold.For > 0 {
		e.hold, e.claimUntil = hold, now.Add(hold.For)
		e.hold.For = 0
	}
	return nil
}

// Drop deletes account's token if it is still id; see TokenStore.
func (s *MemoryTokenStore) Drop(_ context.Context, account, id string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entryLocked(account, s.now())
	if e.epoch.ID == id {
		e.dead = true
	}
	if e.tokUntil.IsZero() || e.tok.ID != id {
		return false, nil
	}
	e.tok, e.tokUntil = Token{}, time.Time{}
	return true, nil
}
