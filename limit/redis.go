package limit

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/ulule/limiter/v3"
)

// slidingScript runs one sliding-log operation atomically on a sorted set.
//
// Scores are the Redis server's TIME in microseconds, so replicas whose own
// clocks disagree still share one timeline. A member is
// "<usec>:<n>[:<i>]": n is how many calls it stands for (so Increment of
// any count is one member) and the optional suffix i keeps two calls in the
// same microsecond distinct.
//
// KEYS[1]: the log. ARGV: op (0 peek, 1 get, 2 increment), limit,
// period in microseconds, count (increment only), and, for tests only, a
// fixed time as TIME's seconds and microseconds.
// Returns {admitted (0/1), total in window, microseconds until the next
// slot frees in Store's Reset sense}.
const slidingScript = `
local key = KEYS[1]
local op = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local period = tonumber(ARGV[3])
local count = tonumber(ARGV[4])

local t
if ARGV[6] then
	t = {ARGV[5], ARGV[6]}
else
	t = redis.call('TIME')
end
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])

redis.call('ZREMRANGEBYSCORE', key, '-inf', string.format('%d', now - period))
local raw = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
local ats, ns = {}, {}
local total = 0
for i = 1, #raw, 2 do
	local n = tonumber(string.match(raw[i], '^%d+:(%d+)'))
	ats[#ats + 1] = tonumber(raw[i + 1])
	ns[#ns + 1] = n
	total = total + n
end

local admitted = 0
local add = 0
if op == 1 then
	if total < limit then
		add = 1
		admitted = 1
	end
elseif op == 2 and count > 0 then
	add = count
end

if add > 0 then
	local base = string.format('%s%06d:%d', t[1], tonumber(t[2]), add)
	local member = base
	local i = 0
	while redis.call('ZADD', key, 'NX', string.format('%d', now), member) == 0 do
		i = i + 1
		member = base .. ':' .. i
	end
	ats[#ats + 1] = now
	ns[#ns + 1] = add
	total = total + add
	redis.call('PEXPIRE', key, string.format('%d', math.ceil(period / 1000)))
end

local wait = period
if total == 0 and limit > 0 then
	wait = 0
else
	local drop = total - limit + 1
	if drop < 1 then drop = 1 end
	local gone = 0
	for i = 1, #ats do
		gone = gone + ns[i]
		if gone >= drop then
			wait = ats[i] + period - now
			if wait < 0 then wait = 0 end
			break
		end
	end
end
return {admitted, total, wait}
`

var redisSliding = redis.NewScript(slidingScript)

// RedisStore is a sliding-log Store in Redis, for several proxy replicas
// sharing one budget. Each key is a sorted set named prefix+key that
// expires one window after its last call; every operation is one atomic
// Lua script timed by the Redis server's clock.
//
// Times it reports (Context.Reset, NextFree) are converted to the local
// clock: the server's "in d" becomes local now + d, taken after the reply,
// so a caller waiting until then never wakes early.
type RedisStore struct {
	client redis.UniversalClient
	prefix string
}

var _ Store = (*RedisStore)(nil)

// NewRedisStore returns a RedisStore on client whose keys start with
// prefix (for example "caproxy:limit:").
func NewRedisStore(client redis.UniversalClient, prefix string) *RedisStore {
	return &RedisStore{client: client, prefix: prefix}
}

// result is one script run's outcome, with the local time it arrived.
type result struct {
	admitted bool
	total    int64
	wait     time.Duration // until the next slot frees, Store's Reset sense
	at       time.Time
}

func (s *RedisStore) run(ctx context.Context, key string, rate limiter.Rate, o op, count int64) (result, error) {
	periodUS := rate.Period.Microseconds()
	if periodUS <= 0 {
		// A sub-microsecond window holds nothing; keep it valid for Redis.
		periodUS = 1
	}
	v, err := redisSliding.Run(ctx, s.client, []string{s.prefix + key},
		int(o), rate.Limit, periodUS, count).Int64Slice()
	if err != nil {
		return result{}, fmt.Errorf("limit: redis sliding log %q: %w", key, err)
	}
	if len(v) != 3 {
		return result{}, errors.New("limit: redis sliding log: unexpected script reply")
	}
	return result{
		admitted: v[0] == 1,
		total:    v[1],
		wait:     time.Duration(v[2]) * time.Microsecond,
		at:       time.Now(),
	}, nil
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

// Reset forgets every call recorded for key.
func (s *RedisStore) Reset(ctx context.Context, key string, rate limiter.Rate) (limiter.Context, error) {
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
