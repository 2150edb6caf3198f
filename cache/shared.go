package cache

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Shared is a cache level shared by replicas (Redis): the proxy consults it
// on a local miss, before spending upstream budget, and writes to it every
// answer it stores locally. A single node has no Shared level at all.
//
// Keys are those of KeyFor. Entries carry their own times (see Entry), so a
// replica takes one in with Cache.Put rather than Cache.Store. Every method
// is safe for concurrent use.
type Shared interface {
	// Get returns the entry for key if one may still be served, fresh
	// or stale. A missing or dead entry is a miss with a nil error. An
	// entry that cannot be read (corrupt, foreign, written by a newer
	// format) is a miss with an error wrapping ErrCorruptEntry, worth
	// logging; any other error is the store's (unreachable, timeout).
	Get(ctx context.Context, key string) (*Entry, bool, error)
	// Set shares e under key until e.StaleUntil, replacing any entry
	// there. An entry already dead, or larger than the level's ceiling
	// on one answer, is not written and is no error.
	Set(ctx context.Context, key string, e *Entry) error
	// PurgeAccount removes every entry of account (every key starting
	// with PrefixFor(account)) and returns how many it removed.
	PurgeAccount(ctx context.Context, account string) (int, error)
	// Remove removes the entry for key and reports whether there was one.
	Remove(ctx context.Context, key string) (bool, error)
	// Purge removes every entry and returns how many it removed.
	Purge(ctx context.Context) (int, error)
}

// ErrCorruptEntry is wrapped by Shared.Get's error when a stored value is
// not an entry this version can read.
var ErrCorruptEntry = errors.New("cache: unreadable shared entry")

// DefaultSharedPrefix starts the Redis keys of a RedisShared made with an
// empty prefix. It lies outside the "caproxy:budget:" and
// "caproxy:tokengen:" keys of the limit package.
const DefaultSharedPrefix = "caproxy:cache:"

// scanCount is the COUNT hint of each SCAN while purging: how many keys
// Redis looks at per call, and so about the most deleted per round trip.
const scanCount = 1000

// RedisShared is the Shared level in Redis. Each entry is one string key,
// prefix + cache key, holding the entry's encoding (see encodeEntry) and
// expiring when the entry dies, so Redis drops dead entries itself.
//
// Make one with NewRedisShared; the zero RedisShared has no client and is
// not usable.
type RedisShared struct {
	client redis.UniversalClient
	prefix string
	now    func() time.Time
	// ceiling is the largest body Set writes (0 or nil: no ceiling).
	ceiling func() int64

	// corrupt counts values Get could not read, for metrics.
	corrupt atomic.Int64
}

var _ Shared = (*RedisShared)(nil)

// RedisSharedOption configures a RedisShared.
type RedisSharedOption func(*RedisShared)

// WithSharedClock sets the clock entries' times are judged on (default
// time.Now): a Set entry expires in Redis after StaleUntil minus now on
// this clock, and Get treats an entry past StaleUntil on it as missing.
// Pass the Cache's clock (Cache.Now), so both levels agree, and fake
// clocks in tests work against a real Redis.
func WithSharedClock(now func() time.Time) RedisSharedOption {
	return func(s *RedisShared) {
		if now != nil {
			s.now = now
		}
	}
}

// WithEntryCeiling makes Set skip (without error) an entry whose body is
// larger than ceiling() bytes, when that is above 0. Pass the Cache's
// MaxEntryBytes, so that Redis holds no answer too big for the local
// level, and a reloaded cache.max_bytes applies to both.
func WithEntryCeiling(ceiling func() int64) RedisSharedOption {
	return func(s *RedisShared) { s.ceiling = ceiling }
}

// NewRedisShared returns a RedisShared on client whose keys start with
// prefix (DefaultSharedPrefix if empty, so that Purge never reaches keys
// that are not the cache's). Any UniversalClient works: on a cluster or a
// ring, purges scan every master or shard.
func NewRedisShared(client redis.UniversalClient, prefix string, opts ...RedisSharedOption) *RedisShared {
	if prefix == "" {
		prefix = DefaultSharedPrefix
	}
	s := &RedisShared{client: client, prefix: prefix, now: time.Now}
	for _, o := range opts {
		o(s)
	}
	return s
}

// Prefix returns the prefix of every Redis key s uses.
func (s *RedisShared) Prefix() string { return s.prefix }

// Corrupt returns how many values Get has found unreadable so far.
func (s *RedisShared) Corrupt() int64 { return s.corrupt.Load() }

// Get returns the entry shared for key; see Shared.Get. The entry's Body
// shares memory with nothing else, so the caller may keep it (and hand the
// entry to Cache.Put); like every Entry, it must not be modified.
func (s *RedisShared) Get(ctx context.Context, key string) (*Entry, bool, error) {
	b, err := s.client.Get(ctx, s.prefix+key).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("cache: shared get %q: %w", key, err)
	}
	e, err := decodeEntry(b)
	if err != nil {
		s.corrupt.Add(1)
		return nil, false, fmt.Errorf("cache: shared get %q: %w", key, err)
	}
	// Redis never returns an expired key, but the writer's clock may be
	// behind ours.
	if !s.now().Before(e.StaleUntil) {
		return nil, false, nil
	}
	return e, true, nil
}

// Set shares e under key; see Shared.Set. The key expires in Redis when e
// dies: after e.StaleUntil minus now on s's clock, rounded up to a whole
// millisecond (a relative expiry, not an absolute PEXPIREAT, so a Redis
// server whose clock differs from ours drops the entry on our timeline).
// It refuses (with an error) a nil entry and one whose Status is not a
// valid HTTP status, which net/http would refuse to serve; it skips
// (without error) an entry above the ceiling of WithEntryCeiling.
func (s *RedisShared) Set(ctx context.Context, key string, e *Entry) error {
	if e == nil {
		return fmt.Errorf("cache: shared set %q: nil entry", key)
	}
	if !validStatus(int64(e.Status)) {
		return fmt.Errorf("cache: shared set %q: invalid status %d", key, e.Status)
	}
	if s.ceiling != nil {
		if n := s.ceiling(); n > 0 && int64(len(e.Body)) > n {
			return nil
		}
	}
	life := e.StaleUntil.Sub(s.now())
	if life <= 0 {
		return nil
	}
	life = (life + time.Millisecond - 1).Truncate(time.Millisecond)
	if err := s.client.Set(ctx, s.prefix+key, encodeEntry(nil, e), life).Err(); err != nil {
		return fmt.Errorf("cache: shared set %q: %w", key, err)
	}
	return nil
}

// Remove removes the entry for key; see Shared.Remove.
func (s *RedisShared) Remove(ctx context.Context, key string) (bool, error) {
	n, err := s.client.Unlink(ctx, s.prefix+key).Result()
	if err != nil {
		return false, fmt.Errorf("cache: shared remove %q: %w", key, err)
	}
	return n > 0, nil
}

// PurgeAccount removes every entry of account; see Shared.PurgeAccount.
// Like Purge, it walks the whole keyspace with SCAN, so it is meant for
// rare administrative use, and entries written while it runs may survive.
func (s *RedisShared) PurgeAccount(ctx context.Context, account string) (int, error) {
	n, err := s.deleteMatching(ctx, escapeGlob(s.prefix+PrefixFor(account))+"*")
	if err != nil {
		return n, fmt.Errorf("cache: shared purge of account %q: %w", account, err)
	}
	return n, nil
}

// Purge removes every entry under s's prefix; see Shared.Purge. It walks
// the whole keyspace with SCAN (never KEYS, which would block Redis), so
// it is meant for rare administrative use, and entries written while it
// runs may survive.
func (s *RedisShared) Purge(ctx context.Context) (int, error) {
	n, err := s.deleteMatching(ctx, escapeGlob(s.prefix)+"*")
	if err != nil {
		return n, fmt.Errorf("cache: shared purge: %w", err)
	}
	return n, nil
}

// nodeWalker is a client spread over several servers: a cluster
// (ForEachMaster) or a ring (ForEachShard), whose SCAN would reach one
// server only.
type nodeWalker func(ctx context.Context, fn func(ctx context.Context, client *redis.Client) error) error

// deleteMatching deletes the keys matching the glob pattern on every
// server and returns how many it deleted. On error it returns how many
// it had deleted so far.
func (s *RedisShared) deleteMatching(ctx context.Context, pattern string) (int, error) {
	var walk nodeWalker
	switch c := s.client.(type) {
	case *redis.ClusterClient:
		walk = c.ForEachMaster
	case *redis.Ring:
		walk = c.ForEachShard
	default:
		n, err := deleteMatchingOn(ctx, s.client, pattern)
		return int(n), err
	}
	var total atomic.Int64 // the walkers call fn on several goroutines
	err := walk(ctx, func(ctx context.Context, c *redis.Client) error {
		n, err := deleteMatchingOn(ctx, c, pattern)
		total.Add(n)
		return err
	})
	return int(total.Load()), err
}

// deleteMatchingOn SCANs one server for pattern and UNLINKs each page of
// keys found as it goes.
func deleteMatchingOn(ctx context.Context, c redis.Cmdable, pattern string) (int64, error) {
	var total int64
	var cursor uint64
	for {
		keys, next, err := c.Scan(ctx, cursor, pattern, scanCount).Result()
		if err != nil {
			return total, err
		}
		if len(keys) > 0 {
			// One UNLINK per key, pipelined: a multi-key UNLINK would
			// fail with CROSSSLOT on a cluster node. SCAN may return a
			// key twice; the second UNLINK counts 0.
			cmds, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
				for _, k := range keys {
					p.Unlink(ctx, k)
				}
				return nil
			})
			for _, cmd := range cmds {
				if ic, ok := cmd.(*redis.IntCmd); ok {
					total += ic.Val()
				}
			}
			if err != nil {
				return total, err
			}
		}
		if next == 0 {
			return total, nil
		}
		cursor = next
	}
}

// escapeGlob escapes the characters Redis's glob matching (SCAN MATCH)
// treats specially, so that s matches only itself. A backslash makes
// Redis take any next character literally.
func escapeGlob(s string) string {
	if !strings.ContainsAny(s, `*?[]\`) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '*', '?', '[', ']', '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// Encoding of a shared entry, format 1:
//
//	0xCA 0x01                        magic, format version
//	varint  Status                   (100..999)
//	varint  Fetched seconds    uvarint nanoseconds (Unix)
//	varint  FreshUntil seconds uvarint nanoseconds
//	varint  StaleUntil seconds uvarint nanoseconds
//	uvarint len(ContentType), ContentType bytes
//	Body: every remaining byte
//
// A typical AHT answer costs about 40 bytes over its body. A new format
// takes a new version byte: replicas still on the old one then see misses,
// not garbage, during a rolling upgrade.
const (
	entryMagic   = 0xCA
	entryVersion = 1
)

// commonContentType is what CloudAgent sends; decodeEntry returns this
// constant instead of allocating a new string for it.
const commonContentType = "application/json"

// validStatus reports whether status is one net/http's WriteHeader accepts.
func validStatus(status int64) bool { return 100 <= status && status <= 999 }

// encodeEntry appends the encoding of e to dst.
func encodeEntry(dst []byte, e *Entry) []byte {
	if dst == nil {
		dst = make([]byte, 0, 2+3*binary.MaxVarintLen64+binary.MaxVarintLen16+
			binary.MaxVarintLen64+len(e.ContentType)+len(e.Body))
	}
	dst = append(dst, entryMagic, entryVersion)
	dst = binary.AppendVarint(dst, int64(e.Status))
	for _, t := range [...]time.Time{e.Fetched, e.FreshUntil, e.StaleUntil} {
		dst = binary.AppendVarint(dst, t.Unix())
		dst = binary.AppendUvarint(dst, uint64(t.Nanosecond()))
	}
	dst = binary.AppendUvarint(dst, uint64(len(e.ContentType)))
	dst = append(dst, e.ContentType...)
	return append(dst, e.Body...)
}

// decodeEntry reads an entry encoded by encodeEntry. The entry's Body
// shares b's memory, so b must not be modified afterwards. Any value it
// cannot read, whatever its bytes, is an error wrapping ErrCorruptEntry.
func decodeEntry(b []byte) (*Entry, error) {
	if len(b) < 2 || b[0] != entryMagic {
		return nil, fmt.Errorf("%w: not a cache entry", ErrCorruptEntry)
	}
	if b[1] != entryVersion {
		return nil, fmt.Errorf("%w: format version %d, want %d", ErrCorruptEntry, b[1], entryVersion)
	}
	r := entryReader{b: b, i: 2}
	status := r.varint()
	var times [3]time.Time
	for i := range times {
		sec, nsec := r.varint(), r.uvarint()
		if nsec >= uint64(time.Second) {
			r.fail("nanoseconds out of range")
		}
		times[i] = time.Unix(sec, int64(nsec))
	}
	ctLen := r.uvarint()
	if r.err == nil && ctLen > uint64(len(b)-r.i) {
		r.fail("content type longer than the value")
	}
	if r.err != nil {
		return nil, r.err
	}
	if !validStatus(status) {
		return nil, fmt.Errorf("%w: invalid status %d", ErrCorruptEntry, status)
	}
	ct := b[r.i : r.i+int(ctLen)]
	e := &Entry{
		Body:       b[r.i+int(ctLen):],
		Status:     int(status),
		Fetched:    times[0],
		FreshUntil: times[1],
		StaleUntil: times[2],
	}
	if string(ct) == commonContentType { // compared without allocating
		e.ContentType = commonContentType
	} else {
		e.ContentType = string(ct)
	}
	return e, nil
}

// entryReader reads varints from b at i; after the first failure it
// reads zeros and keeps that failure in err.
type entryReader struct {
	b   []byte
	i   int
	err error
}

func (r *entryReader) fail(why string) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: %s at byte %d", ErrCorruptEntry, why, r.i)
	}
}

func (r *entryReader) varint() int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b[r.i:])
	if n <= 0 {
		r.fail("truncated or overlong number")
		return 0
	}
	r.i += n
	return v
}

func (r *entryReader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b[r.i:])
	if n <= 0 {
		r.fail("truncated or overlong number")
		return 0
	}
	r.i += n
	return v
}
