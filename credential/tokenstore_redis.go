package credential

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Values of a claim key: "=" + owner while an owner holds it, "!L", "!R" or
// "!F" + message during a hold (L: the guard was spent; R: a fresh token was
// refused; F: another failure). The
// marks keep any owner string apart from a hold.
const (
	claimOwnerMark   = "="
	claimHoldMark    = "!"
	holdLimitedMark  = "L"
	holdFailedMark   = "F"
	holdRecoverMark  = "R"
	maxHoldMessage   = 512 // bytes of a hold's message kept in Redis
	minRedisDuration = time.Millisecond
)

// claimScript is Claim. KEYS: token, claim. ARGV: marked owner, seen ID,
// lease in ms. Returns {state, hold value, hold ms left}; state 0 busy,
// 1 won, 2 changed, 3 held.
//
//go:embed claim.lua
var claimLua string

var claimScript = redis.NewScript(claimLua)

// putScript is Put. KEYS: token, claim, epoch. ARGV: marked owner, value,
// expiry (Unix ns), ID, keep in ms. Returns 1 if stored.
//
// The claim holder always stores. Anyone else (a replica putting its copy
// back) stores only a token newer than the newest the account had: the
// epoch's, else the stored token's; or the epoch's own token, not dropped,
// when its token key is gone (evicted). So a replica's superseded copy
// never replaces its successor.
//
//go:embed put.lua
var putLua string

var putScript = redis.NewScript(putLua)

// releaseScript is Release. KEYS: claim. ARGV: marked owner, hold value,
// hold in ms (0: none). Returns 1 if owner held the claim.
//
//go:embed release.lua
var releaseLua string

var releaseScript = redis.NewScript(releaseLua)

// dropScript is Drop. KEYS: token, epoch. ARGV: ID. Returns 1 if dropped.
// The epoch remembers the drop, so the token is never put back.
//
//go:embed drop.lua
var dropLua string

var dropScript = redis.NewScript(dropLua)

// RedisScripts returns the Lua scripts (their source) a RedisTokenStore
// runs, for a check at connect that the Redis user may run them.
func RedisScripts() []string { return []string{claimLua, putLua, releaseLua, dropLua} }

// RedisTokenStore is a TokenStore in Redis, so that several proxy replicas
// share one upstream token per account. Tokens are stored in clear: Redis
// is trusted infrastructure here, as it is for the shared cache, and should
// be reachable only by the replicas (password, TLS, private network).
//
// An account has three keys, hash-tagged by account so a cluster keeps them
// in one slot: prefix+"{account}:token", a hash of the token's value (v),
// expiry in Unix nanoseconds (e) and ID (id), set to expire with the token;
// prefix+"{account}:claim", the generator's claim or a hold after a
// failure, set to expire with its lease or hold; and prefix+"{account}:epoch",
// the expiry (e) and ID (id) of the newest token stored and whether it was
// dropped (dead), kept without expiry (a few bytes per account) so that
// when the token key is evicted a replica's older copy is not put back in
// its place. The expiry serves as the generation time: every replica
// counts a token's life from its generation with the same TTL. Every operation that reads
// and writes is one Lua script, so it is atomic. Leases, holds and key
// lifetimes run on the Redis server's clock.
type RedisTokenStore struct {
	client redis.UniversalClient
	prefix string
}

var _ TokenStore = (*RedisTokenStore)(nil)

// NewRedisTokenStore returns a RedisTokenStore on client whose keys start
// with prefix (for example "caproxy:token:").
func NewRedisTokenStore(client redis.UniversalClient, prefix string) *RedisTokenStore {
	return &RedisTokenStore{client: client, prefix: prefix}
}

func (s *RedisTokenStore) keys(account string) []string {
	base := s.prefix + "{" + account + "}:"
	return []string{base + "token", base + "claim", base + "epoch"}
}

// millis returns d in whole milliseconds, rounded up and at least one, as
// PX wants.
func millis(d time.Duration) int64 {
	return int64(max((d+minRedisDuration-1)/minRedisDuration, 1))
}

// Get returns account's token; see TokenStore.
func (s *RedisTokenStore) Get(ctx context.Context, account string) (Token, bool, error) {
	v, err := s.client.HMGet(ctx, s.keys(account)[0], "v", "e", "id").Result()
	if err != nil {
		return Token{}, false, fmt.Errorf("credential: redis token store: get %q: %w", account, err)
	}
	value, _ := v[0].(string)
	exp, _ := v[1].(string)
	id, _ := v[2].(string)
	if value == "" {
		return Token{}, false, nil
	}
	ns, err := strconv.ParseInt(exp, 10, 64)
	if err != nil || id == "" {
		return Token{}, false, fmt.Errorf("credential: redis token store: get %q: malformed entry", account)
	}
	return Token{ID: id, Value: value, Expires: time.Unix(0, ns)}, true, nil
}

// Claim elects owner the generator; see TokenStore.
func (s *RedisTokenStore) Claim(ctx context.Context, account, owner, seen string, lease time.Duration) (Claim, error) {
	v, err := claimScript.Run(ctx, s.client, s.keys(account)[:2], claimOwnerMark+owner, seen, millis(lease)).Slice()
	if err != nil {
		return Claim{}, fmt.Errorf("credential: redis token store: claim %q: %w", account, err)
	}
	if len(v) != 3 {
		return Claim{}, errors.New("credential: redis token store: unexpected claim reply")
	}
	state, _ := v[0].(int64)
	switch state {
	case 1:
		return Claim{Won: true}, nil
	case 2:
		return Claim{Changed: true}, nil
	case 3:
		value, _ := v[1].(string)
		ms, _ := v[2].(int64)
		if ms <= 0 {
			// The hold lapsed between SET and PTTL, or has no expiry
			// (never set so): treat it as a hold of a moment.
			ms = 1
		}
		return Claim{Hold: parseHold(value, time.Duration(ms)*time.Millisecond)}, nil
	}
	return Claim{}, nil
}

// holdValue encodes hold as a claim key's value.
func holdValue(h Hold) string {
	mark := holdFailedMark
	switch {
	case h.Limited:
		mark = holdLimitedMark
	case h.Recovering:
		mark = holdRecoverMark
	}
	msg := h.Message
	if h.Recovering && !h.Limited {
		msg = strconv.Itoa(h.Refused) + " " + msg
	}
	if len(msg) > maxHoldMessage {
		msg = msg[:maxHoldMessage]
	}
	return claimHoldMark + mark + msg
}

// parseHold decodes a claim key's hold value with for left.
func parseHold(value string, left time.Duration) Hold {
	h := Hold{For: left}
	if len(value) >= 2 {
		h.Limited = value[1:2] == holdLimitedMark
		h.Recovering = value[1:2] == holdRecoverMark
		h.Message = value[2:]
		if h.Recovering {
			n, msg, _ := strings.Cut(h.Message, " ")
			h.Refused, _ = strconv.Atoi(n)
			h.Message = msg
		}
	}
	return h
}

// Put stores tok and gives up owner's claim; see TokenStore.
func (s *RedisTokenStore) Put(ctx context.Context, account, owner string, tok Token, keep time.Duration) (bool, error) {
	n, err := putScript.Run(ctx, s.client, s.keys(account), claimOwnerMark+owner,
		tok.Value, tok.Expires.UnixNano(), tok.ID, millis(keep)).Int64()
	if err != nil {
		return false, fmt.Errorf("credential: redis token store: put %q: %w", account, err)
	}
	return n == 1, nil
}

// Release gives up owner's claim, leaving hold; see TokenStore.
func (s *RedisTokenStore) Release(ctx context.Context, account, owner string, hold Hold) error {
	var ms int64
	if hold.For > 0 {
		ms = millis(hold.For)
	}
	err := releaseScript.Run(ctx, s.client, s.keys(account)[1:2], claimOwnerMark+owner, holdValue(hold), ms).Err()
	if err != nil {
		return fmt.Errorf("credential: redis token store: release %q: %w", account, err)
	}
	return nil
}

// Drop deletes account's token if it is still id; see TokenStore.
func (s *RedisTokenStore) Drop(ctx context.Context, account, id string) (bool, error) {
	k := s.keys(account)
	n, err := dropScript.Run(ctx, s.client, []string{k[0], k[2]}, id).Int64()
	if err != nil {
		return false, fmt.Errorf("credential: redis token store: drop %q: %w", account, err)
	}
	return n == 1, nil
}
