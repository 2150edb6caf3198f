package limit

import (
	"context"
	"crypto/rand"
	_ "embed"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/ulule/limiter/v3"
)

// slidingScript runs one sliding-log operation atomically on a sorted set.
//
// Scores are the Redis server's TIME in microseconds, so replicas whose own
// clocks disagree still share one timeline. A member is
// "<replica>:<seq>:<n>": the replica that made the call, its sequence
// number there (so a replica can write a call again without counting it
// twice) and n, how many calls it stands for (so Increment of any count is
// one member).
//
// Before deciding, the script writes back the calling replica's own calls
// that the log lacks (Redis restarted empty, or calls admitted locally
// during an outage), at their real ages. It then counts the window as the
// caller's own calls in the log plus the larger of the other replicas'
// calls in the log and those the caller saw there last time (a log that
// lost the others' calls cannot admit more than the limit allows). Counting
// the caller's own calls from the log keeps this exact however many of its
// calls run at once. While recovering from an outage under Share, the
// caller is also held to its share (see RedisStore.shareFloor).
//
// KEYS[1]: the log. ARGV: op (0 peek, 1 get, 2 increment, 3 get above a
// reserve), limit, period in microseconds, count (increment: how many;
// get above: the reserve to leave free), replica, seq, the others' calls the
// caller last saw, how many own calls it holds in the window, then, for
// tests only, a fixed time as TIME's seconds and microseconds (or two empty
// strings), then recovering (0/1) and the number of replicas, then the own
// calls as triples seq, n, age in microseconds.
// Returns {admitted (0/1), calls counted in the window, microseconds until
// the next slot frees in Store's Reset sense, then the other replicas'
// calls in the window as pairs age in microseconds, n}.
//
// The script is sliding.lua, embedded.
//
//go:embed sliding.lua
var slidingScript string

var redisSliding = redis.NewScript(slidingScript)

// RedisScripts returns the Lua scripts (their source) a RedisStore runs,
// for a check at connect that the Redis user may run them.
func RedisScripts() []string { return []string{slidingScript} }

// ErrUnavailable is wrapped by the errors of a RedisStore that cannot reach
// Redis under the Deny policy: the caller must not make the call.
var ErrUnavailable = errors.New("limit: shared budget unavailable")

// Policy is what a RedisStore does while Redis cannot be reached.
type Policy int

const (
	// Deny refuses every call while Redis is unreachable (Get, Peek and
	// NextFree fail with an error wrapping ErrUnavailable), so the
	// replicas together never exceed the limit.
	Deny Policy = iota
	// Share lets each of Replicas replicas spend at most its share,
	// limit/Replicas (rounded down), on its own while Redis is
	// unreachable, less what the other replicas had spent in the window
	// when it last heard from Redis; see RedisStore.
	Share
)

// String names the policy as config.yaml does.
func (p Policy) String() string {
	if p == Share {
		return "share"
	}
	return "deny"
}

// RedisStore is a sliding-log Store in Redis, for several proxy replicas
// sharing one budget. Each key is a sorted set named prefix+key that
// expires one window after its last call; every operation is one atomic
// Lua script timed by the Redis server's clock.
//
// Times it reports (Context.Reset, NextFree) are converted to the local
// clock: the server's "in d" becomes local now + d, taken after the reply,
// so a caller waiting until then never wakes early.
//
// It also keeps, per key, a local floor: the calls this replica made in
// the window and the calls of the other replicas it saw in Redis's log at
// its last operation (kept on the local clock until they leave the
// window). The floor makes three things safe:
//
//   - Redis restarted empty: every operation writes this replica's own
//     missing calls back into the log (idempotently: each call has a name),
//     and counts the others' calls as the larger of what the log holds and
//     what it saw last, so the lost calls of the others still count until
//     they write their own back or leave the window.
//   - Redis unreachable under Share: a replica admits a call only while
//     its own calls in the window stay under limit/N, and its own calls
//     plus the larger of the others' it last saw and one share, plus
//     (N-2) more shares, stay under the limit. The others follow the same
//     rule, so all together stay within the limit in any window.
//   - Redis back after an outage under Share: for one window the same
//     rule still applies on top of Redis's answer, while the other
//     replicas write back what they spent during the outage.
type RedisStore struct {
	client   redis.UniversalClient
	prefix   string
	policy   Policy
	replicas int64
	// replica names this store's calls in the logs.
	replica string

	// mu guards the fields below.
	mu     sync.Mutex
	keys   map[string]*floorLog
	seq    uint64
	downAt time.Time // when Redis last failed; zero if never
}

// floorLog is one key's local floor: this replica's calls and the other
// replicas' calls last seen, each oldest first, on the local clock.
type floorLog struct {
	own    []ownCall
	others []call // at is local unix ns
}

// ownCall is one call this replica recorded: its name and weight, and when
// it was sent (local unix ns, taken before the script ran, so it leaves the
// local window no later than Redis's).
type ownCall struct {
	seq uint64
	n   int64
	at  int64
}

var _ Store = (*RedisStore)(nil)

// RedisOption configures a RedisStore.
type RedisOption func(*RedisStore)

// WithOutagePolicy sets what the store does while Redis is unreachable
// (default Deny). replicas is how many replicas share the budget, for
// Share; values below 1 count as 1.
func WithOutagePolicy(p Policy, replicas int) RedisOption {
	return func(s *RedisStore) {
		s.policy = p
		s.replicas = int64(max(replicas, 1))
	}
}

// NewRedisStore returns a RedisStore on client whose keys start with
// prefix (for example "caproxy:limit:").
func NewRedisStore(client redis.UniversalClient, prefix string, opts ...RedisOption) *RedisStore {
	s := &RedisStore{client: client, prefix: prefix, replicas: 1, replica: rand.Text()[:12], keys: map[string]*floorLog{}}
	for _, o := range opts {
		o(s)
	}
	return s
}

// Policy returns the store's outage policy and replica count.
func (s *RedisStore) Policy() (Policy, int) { return s.policy, int(s.replicas) }

// result is one operation's outcome, with the local time it arrived.
type result struct {
	admitted bool
	total    int64
	wait     time.Duration // until the next slot frees, Store's Reset sense
	at       time.Time
}

// prune drops from l what left the window before cutoff and reports the
// own and others' totals left.
func (l *floorLog) prune(cutoff int64) (own, others int64) {
	i := 0
	for i < len(l.own) && l.own[i].at <= cutoff {
		i++
	}
	l.own = l.own[i:]
	j := 0
	for j < len(l.others) && l.others[j].at <= cutoff {
		j++
	}
	l.others = l.others[j:]
	for _, c := range l.own {
		own += c.n
	}
	for _, c := range l.others {
		others += c.n
	}
	return own, others
}

// shareFloor is the floor the Share rule puts on a log with own and others
// calls: the limit when this replica's share is spent, else what it and
// the others may hold together.
//
// Why it holds: a replica admits during an outage only while its own calls
// in the window are under its share s, so from then on it never holds more
// than max(what it held before, s). The others together hold at most
// max(others, s) + (N-2)*s (the most when all the others' earlier calls
// sit on one replica), so admitting while own + 1 + that <= limit keeps the
// sum of all replicas within the limit.
func (s *RedisStore) shareFloor(limit, own, others int64) int64 {
	share := limit / s.replicas
	if own >= share {
		return max(limit, own+others)
	}
	return own + max(others, share) + (s.replicas-2)*share
}

func (s *RedisStore) run(ctx context.Context, key string, rate limiter.Rate, o op, count int64) (result, error) {
	periodUS := rate.Period.Microseconds()
	if periodUS <= 0 {
		// A sub-microsecond window holds nothing; keep it valid for Redis.
		periodUS = 1
	}
	start := time.Now()
	nowNS := start.UnixNano()
	cutoff := nowNS - int64(rate.Period)

	s.mu.Lock()
	l := s.keys[key]
	if l == nil {
		l = &floorLog{}
		s.keys[key] = l
	}
	own, others := l.prune(cutoff)
	recovering := 0
	if s.policy == Share && !s.downAt.IsZero() && start.Sub(s.downAt) < rate.Period {
		recovering = 1
	}
	s.seq++
	seq := s.seq
	args := make([]any, 0, 12+3*len(l.own))
	args = append(args, int(o), rate.Limit, periodUS, count, s.replica, seq, others, own, "", "", recovering, s.replicas)
	for _, c := range l.own {
		args = append(args, c.seq, c.n, (nowNS-c.at)/1e3)
	}
	s.mu.Unlock()

	v, err := redisSliding.Run(ctx, s.client, []string{s.prefix + key}, args...).Int64Slice()
	if err == nil && (len(v) < 3 || len(v)%2 == 0) {
		err = errors.New("unexpected script reply")
	}
	if err != nil {
		return s.unreachable(key, rate, o, count, seq, start, fmt.Errorf("limit: redis sliding log %q: %w", key, err))
	}
	at := time.Now()
	r := result{admitted: v[0] == 1, total: v[1], wait: time.Duration(v[2]) * time.Microsecond, at: at}

	s.mu.Lock()
	defer s.mu.Unlock()
	l = s.keys[key]
	if l == nil {
		l = &floorLog{}
		s.keys[key] = l
	}
	if n := recorded(o, r.admitted, count); n > 0 {
		l.own = append(l.own, ownCall{seq: seq, n: n, at: nowNS})
	}
	// The others' calls, timed from the reply's arrival so they stay in
	// the local window no shorter than in Redis's. They replace what was
	// known unless Redis now shows fewer than are still in the local
	// window: then Redis lost calls (restarted empty), and the known ones
	// count until they leave the window or their replicas write them back.
	var seen []call
	var seenTotal int64
	for i := 3; i+1 < len(v); i += 2 {
		seen = append(seen, call{at: at.UnixNano() - v[i]*1e3, n: v[i+1]})
		seenTotal += v[i+1]
	}
	if _, known := l.prune(cutoff); seenTotal >= known {
		slices.SortFunc(seen, func(a, b call) int { return int(a.at - b.at) })
		l.others = seen
	}
	m := l.merged()
	var local int64
	for _, c := range m {
		local += c.n
	}
	if local >= rate.Limit {
		// The floor may hold the budget longer than Redis's log does.
		r.wait = max(r.wait, time.Duration(untilFree(m, local, rate.Limit, int64(rate.Period), at.UnixNano())))
	}
	if len(l.own) == 0 && len(l.others) == 0 {
		delete(s.keys, key)
	}
	return r, nil
}

// recorded is how many calls an operation records when it succeeds.
func recorded(o op, admitted bool, count int64) int64 {
	switch {
	case (o == opGet || o == opGetAbove) && admitted:
		return 1
	case o == opIncrement && count > 0:
		return count
	}
	return 0
}

// merged returns l's own and others' calls as one log, oldest first.
func (l *floorLog) merged() []call {
	m := make([]call, 0, len(l.own)+len(l.others))
	for _, c := range l.own {
		m = append(m, call{at: c.at, n: c.n})
	}
	m = append(m, l.others...)
	slices.SortFunc(m, func(a, b call) int { return int(a.at - b.at) })
	return m
}

// unreachable is an operation's outcome when Redis could not be asked:
// under Deny an error (an Increment is still recorded locally, to be
// written to Redis later); under Share the local decision.
func (s *RedisStore) unreachable(key string, rate limiter.Rate, o op, count int64, seq uint64, start time.Time, err error) (result, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.downAt = time.Now()
	l := s.keys[key]
	if l == nil {
		l = &floorLog{}
		s.keys[key] = l
	}
	nowNS := start.UnixNano()
	own, others := l.prune(nowNS - int64(rate.Period))
	if s.policy == Deny {
		if o == opIncrement && count > 0 {
			l.own = append(l.own, ownCall{seq: seq, n: count, at: nowNS})
		}
		return result{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	floor := s.shareFloor(rate.Limit, own, others)
	r := result{total: floor, at: start}
	switch {
	case o == opGet && floor < rate.Limit,
		o == opGetAbove && floor+max(count, 0) < rate.Limit:
		r.admitted = true
	}
	if n := recorded(o, r.admitted, count); n > 0 {
		l.own = append(l.own, ownCall{seq: seq, n: n, at: nowNS})
		r.total += n
	}
	r.wait = s.shareWait(l, rate, nowNS)
	return r, nil
}

// shareWait is how long until the Share rule admits a call on l: the first
// moment, as calls leave the window, at which it would; a whole window if
// none.
func (s *RedisStore) shareWait(l *floorLog, rate limiter.Rate, now int64) time.Duration {
	period := int64(rate.Period)
	m := l.merged()
	for i := -1; i < len(m); i++ {
		t := now
		if i >= 0 {
			t = m[i].at + period
		}
		var own, others int64
		for _, c := range l.own {
			if c.at > t-period {
				own += c.n
			}
		}
		for _, c := range l.others {
			if c.at > t-period {
				others += c.n
			}
		}
		if s.shareFloor(rate.Limit, own, others) < rate.Limit {
			return time.Duration(max(t-now, 0))
		}
	}
	return rate.Period
}

func (r result) context(limit int64, refused bool) limiter.Context {
	return makeContext(limit, r.total, r.at, r.wait, refused)
}

// Get admits one call for key if fewer than rate.Limit were admitted in the
// trailing rate.Period, recording it; see Store.
func (s *RedisStore) Get(ctx context.Context, key string, rate limiter.Rate) (limiter.Context, error) {
	r, err := s.run(ctx, key, rate, opGet, 0)
	if err != nil {
		return limiter.Context{}, err
	}
	return r.context(rate.Limit, !r.admitted), nil
}

// GetAbove admits one call for key if more than reserve slots are free,
// recording it, in the same script run; see Store.
func (s *RedisStore) GetAbove(ctx context.Context, key string, rate limiter.Rate, reserve int64) (limiter.Context, error) {
	r, err := s.run(ctx, key, rate, opGetAbove, max(reserve, 0))
	if err != nil {
		return limiter.Context{}, err
	}
	return r.context(rate.Limit, !r.admitted), nil
}

// Peek reports key's state without recording anything; see Store.
func (s *RedisStore) Peek(ctx context.Context, key string, rate limiter.Rate) (limiter.Context, error) {
	r, err := s.run(ctx, key, rate, opPeek, 0)
	if err != nil {
		return limiter.Context{}, err
	}
	return r.context(rate.Limit, r.total >= rate.Limit), nil
}

// Increment records count calls for key now, whatever the limit; see Store.
func (s *RedisStore) Increment(ctx context.Context, key string, count int64, rate limiter.Rate) (limiter.Context, error) {
	r, err := s.run(ctx, key, rate, opIncrement, count)
	if err != nil {
		return limiter.Context{}, err
	}
	return r.context(rate.Limit, r.total >= rate.Limit), nil
}

// Release forgets this replica's newest single call for key made at or
// before at (local clock), here and in Redis's log; see Releaser. If Redis
// cannot be reached the call stays in Redis's log (counted, which is safe)
// but is no longer written back.
func (s *RedisStore) Release(ctx context.Context, key string, at time.Time) error {
	atNS := at.UnixNano()
	s.mu.Lock()
	l := s.keys[key]
	var member string
	if l != nil {
		for i := len(l.own) - 1; i >= 0; i-- {
			if c := l.own[i]; c.at <= atNS && c.n == 1 {
				member = s.replica + ":" + strconv.FormatUint(c.seq, 10) + ":1"
				l.own = slices.Delete(l.own, i, i+1)
				break
			}
		}
	}
	s.mu.Unlock()
	if member == "" {
		return nil
	}
	if err := s.client.ZRem(ctx, s.prefix+key, member).Err(); err != nil {
		return fmt.Errorf("limit: redis release %q: %w", key, err)
	}
	return nil
}

var _ Releaser = (*RedisStore)(nil)

// Reset forgets every call recorded for key, here and in Redis.
func (s *RedisStore) Reset(ctx context.Context, key string, rate limiter.Rate) (limiter.Context, error) {
	s.mu.Lock()
	delete(s.keys, key)
	s.mu.Unlock()
	if err := s.client.Del(ctx, s.prefix+key).Err(); err != nil {
		return limiter.Context{}, fmt.Errorf("limit: redis reset %q: %w", key, err)
	}
	wait := untilFree(nil, 0, rate.Limit, int64(rate.Period), 0)
	return makeContext(rate.Limit, 0, time.Now(), time.Duration(wait), rate.Limit <= 0), nil
}

// NextFree returns the earliest local time a Get for key would be
// admitted; see Store.
func (s *RedisStore) NextFree(ctx context.Context, key string, rate limiter.Rate) (time.Time, error) {
	r, err := s.run(ctx, key, rate, opPeek, 0)
	if err != nil {
		return time.Time{}, err
	}
	if r.total < rate.Limit {
		return r.at, nil
	}
	return r.at.Add(r.wait), nil
}

// String names the store and its policy, for logs.
func (s *RedisStore) String() string {
	return "limit.RedisStore(" + strconv.Quote(s.prefix) + ", on_failure=" + s.policy.String() + ")"
}
