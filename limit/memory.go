package limit

import (
	"context"
	"hash/maphash"
	"slices"
	"sync"
	"time"

	"github.com/ulule/limiter/v3"
)

// memShards is how many independently locked parts a MemoryStore has, so
// that calls for different keys rarely wait on each other.
const memShards = 64

// DefaultSweepInterval is how often a MemoryStore shard, when used, drops
// keys whose calls have all left their window.
const DefaultSweepInterval = time.Minute

// shardSeed hashes keys to shards; one per process is enough.
var shardSeed = maphash.MakeSeed()

// MemoryStore is a sliding-log Store held in process memory, for a single
// node. The zero value is ready to use with the real clock.
//
// Memory stays bounded: a log never holds calls that left its window, a key
// whose log empties is dropped when next touched, and each shard, when used,
// sweeps out idle keys every SweepInterval. No goroutine is started.
type MemoryStore struct {
	// Now is the clock; nil means time.Now. Tests inject a fake clock.
	// Set it before first use.
	Now func() time.Time
	// SweepInterval is how often a shard drops idle keys; zero means
	// DefaultSweepInterval. Set it before first use.
	SweepInterval time.Duration

	epochOnce sync.Once
	epoch     time.Time // origin of stamp's time line, read once from the clock

	shards [memShards]memShard
}

// memShard is one independently locked part of a MemoryStore.
type memShard struct {
	// mu guards logs and nextSweep.
	mu        sync.Mutex
	logs      map[string]*memLog
	nextSweep int64 // stamp at which this shard next sweeps idle keys
	_         [40]byte
}

// memLog is one key's sliding log.
type memLog struct {
	calls   []call // oldest first, all inside the window of the last call
	total   int64  // sum of calls[i].n
	expires int64  // stamp from which every call has left its window
}

// NewMemoryStore returns an empty MemoryStore on the real clock.
func NewMemoryStore() *MemoryStore { return &MemoryStore{} }

var _ Store = (*MemoryStore)(nil)

func (s *MemoryStore) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// stamp places t on the store's time line: nanoseconds since its epoch.
// time.Time.Sub uses the monotonic clock when both times carry a reading
// (the real clock does), so a wall-clock step (NTP) neither frees slots
// still inside CloudAgent's real window nor holds free ones; fake clocks
// carry no reading and are measured on their wall time as before.
func (s *MemoryStore) stamp(t time.Time) int64 {
	s.epochOnce.Do(func() { s.epoch = s.now() })
	return int64(t.Sub(s.epoch))
}

// op is what a MemoryStore call does to a log under its shard lock.
type op int

const (
	opPeek op = iota
	opGet
	opIncrement
	// opGetAbove is opGet that also leaves count slots free.
	opGetAbove
)

// do runs one operation on key's log and returns its outcome, and, when it
// recorded calls, the moment they were recorded at (on the store's clock;
// zero when nothing was recorded), for a store that persists the log.
func (s *MemoryStore) do(key string, rate limiter.Rate, o op, count int64) (ctx limiter.Context, nextFree, recorded time.Time) {
	now := s.now()
	nowNS := s.stamp(now)
	period := int64(rate.Period)
	sh := &s.shards[maphash.String(shardSeed, key)%memShards]

	sh.mu.Lock()
	defer sh.mu.Unlock()
	s.maybeSweep(sh, nowNS)

	l := sh.logs[key]
	if l != nil {
		l.prune(nowNS - period)
	}
	refused := false
	add := int64(0)
	switch o {
	case opGet, opGetAbove:
		var total, reserve int64
		if l != nil {
			total = l.total
		}
		if o == opGetAbove {
			reserve = max(count, 0)
		}
		if total+reserve >= rate.Limit || rate.Limit <= 0 {
			refused = true
		} else {
			add = 1
		}
	case opIncrement:
		add = max(count, 0)
	}
	if add > 0 {
		if l == nil {
			if sh.logs == nil {
				sh.logs = make(map[string]*memLog)
			}
			l = &memLog{}
			sh.logs[key] = l
		}
		at := l.record(nowNS, add)
		l.expires = max(l.expires, nowNS+period)
		recorded = now.Add(time.Duration(at - nowNS))
	}

	var calls []call
	var total int64
	if l != nil {
		if l.total == 0 {
			delete(sh.logs, key)
		}
		calls, total = l.calls, l.total
	}
	wait := time.Duration(untilFree(calls, total, rate.Limit, period, nowNS))
	if o != opGet && o != opGetAbove {
		refused = total >= rate.Limit
	}
	ctx = makeContext(rate.Limit, total, now, wait, refused)
	nextFree = now
	if total >= rate.Limit {
		nextFree = now.Add(wait)
	}
	return ctx, nextFree, recorded
}

// restore records n calls for key at at, a moment read back from a
// persistent log, which stay in the log for period after at. Restore a
// key's calls oldest first.
func (s *MemoryStore) restore(key string, at time.Time, n int64, period time.Duration) {
	atNS := s.stamp(at)
	sh := &s.shards[maphash.String(shardSeed, key)%memShards]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.logs == nil {
		sh.logs = make(map[string]*memLog)
	}
	l := sh.logs[key]
	if l == nil {
		l = &memLog{}
		sh.logs[key] = l
	}
	l.record(atNS, n)
	l.expires = max(l.expires, atNS+int64(period))
}

// prune drops the calls recorded at or before cutoff: they left the window.
func (l *memLog) prune(cutoff int64) {
	i := 0
	for i < len(l.calls) && l.calls[i].at <= cutoff {
		l.total -= l.calls[i].n
		i++
	}
	if i > 0 {
		// Shift down rather than reslice so the backing array is reused
		// instead of creeping forward and reallocating.
		n := copy(l.calls, l.calls[i:])
		clear(l.calls[n:])
		l.calls = l.calls[:n]
	}
}

// record adds n calls at now, keeping calls ordered even if the clock steps
// back, and returns the stamp they were recorded at: now, or the newest
// call's if that is later.
func (l *memLog) record(now, n int64) int64 {
	if k := len(l.calls); k > 0 {
		last := &l.calls[k-1]
		if last.at >= now {
			last.n += n
			l.total += n
			return last.at
		}
	}
	l.calls = append(l.calls, call{at: now, n: n})
	l.total += n
	return now
}

// maybeSweep drops sh's idle keys once per SweepInterval. It runs under
// sh.mu, on the caller's goroutine, so the store needs no background work.
func (s *MemoryStore) maybeSweep(sh *memShard, now int64) {
	if now < sh.nextSweep {
		return
	}
	every := s.SweepInterval
	if every <= 0 {
		every = DefaultSweepInterval
	}
	sh.nextSweep = now + int64(every)
	for k, l := range sh.logs {
		if l.expires <= now {
			delete(sh.logs, k)
		}
	}
}

// Get admits one call for key if fewer than rate.Limit were admitted in the
// trailing rate.Period, recording it; see Store.
func (s *MemoryStore) Get(_ context.Context, key string, rate limiter.Rate) (limiter.Context, error) {
	c, _, _ := s.do(key, rate, opGet, 0)
	return c, nil
}

// GetAbove admits one call for key if more than reserve slots are free,
// recording it; see Store.
func (s *MemoryStore) GetAbove(_ context.Context, key string, rate limiter.Rate, reserve int64) (limiter.Context, error) {
	c, _, _ := s.do(key, rate, opGetAbove, reserve)
	return c, nil
}

// Peek reports key's state without recording anything; see Store.
func (s *MemoryStore) Peek(_ context.Context, key string, rate limiter.Rate) (limiter.Context, error) {
	c, _, _ := s.do(key, rate, opPeek, 0)
	return c, nil
}

// Increment records count calls for key now, whatever the limit; see Store.
func (s *MemoryStore) Increment(_ context.Context, key string, count int64, rate limiter.Rate) (limiter.Context, error) {
	c, _, _ := s.do(key, rate, opIncrement, count)
	return c, nil
}

// Release forgets the newest call recorded for key at or before at; see
// Releaser.
func (s *MemoryStore) Release(_ context.Context, key string, at time.Time) error {
	atNS := s.stamp(at)
	sh := &s.shards[maphash.String(shardSeed, key)%memShards]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	l := sh.logs[key]
	if l == nil {
		return nil
	}
	for i := len(l.calls) - 1; i >= 0; i-- {
		if l.calls[i].at > atNS {
			continue
		}
		l.calls[i].n--
		l.total--
		if l.calls[i].n == 0 {
			l.calls = slices.Delete(l.calls, i, i+1)
		}
		if l.total == 0 {
			delete(sh.logs, key)
		}
		return nil
	}
	return nil
}

var _ Releaser = (*MemoryStore)(nil)

// Reset forgets every call recorded for key.
func (s *MemoryStore) Reset(_ context.Context, key string, rate limiter.Rate) (limiter.Context, error) {
	sh := &s.shards[maphash.String(shardSeed, key)%memShards]
	sh.mu.Lock()
	delete(sh.logs, key)
	sh.mu.Unlock()
	wait := untilFree(nil, 0, rate.Limit, int64(rate.Period), 0)
	return makeContext(rate.Limit, 0, s.now(), time.Duration(wait), rate.Limit <= 0), nil
}

// NextFree returns the earliest time a Get for key would be admitted; see
// Store.
func (s *MemoryStore) NextFree(_ context.Context, key string, rate limiter.Rate) (time.Time, error) {
	_, t, _ := s.do(key, rate, opPeek, 0)
	return t, nil
}

// Len returns how many keys the store holds, for tests and metrics.
func (s *MemoryStore) Len() int {
	n := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		n += len(sh.logs)
		sh.mu.Unlock()
	}
	return n
}
