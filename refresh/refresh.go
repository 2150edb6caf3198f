// Package refresh decides which cached answer to fetch again next, so that
// every upstream call is spent where it helps most.
//
// A Scheduler tracks, in bounded memory, how often each key is asked for
// (a count per ttl) and when its answer was fetched. Its Next hands out, one
// at a time, the key most worth an upstream call now:
//
//  1. a key asked for that has no answer at all (its client got nothing);
//  2. then stale keys (older than ttl), by demand × age: oldest popular first;
//  3. then hot keys (asked at least twice per ttl) shortly before they
//     expire, soonest first (refresh-ahead), so their clients keep getting
//     hits. A hot key is refreshed as late as is safe: once waiting one
//     more tick could let it, or a key due after it at the group's pace,
//     expire before its refresh is back (see Scheduler.Margin), so a key
//     asked all the time costs about one call per ttl.
//
// Calls are paced per group (an account: one upstream budget) at the rate
// the budget allows once its reserve is set aside, so refreshes spread
// through the window instead of bursting at its start. The reserve itself
// is for client misses: whoever spends a refresh must also leave it free
// (limit.Budget.TakeAbove). The Scheduler does no I/O; Run drives it.
package refresh

import (
	"context"
	"hash/maphash"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Reasons a key is refreshed, for metrics (caproxy_refreshes_total{reason}).
const (
	// ReasonMissing: asked for, no answer held.
	ReasonMissing = "missing"
	// ReasonStale: the answer held is past its ttl.
	ReasonStale = "stale"
	// ReasonAhead: a hot key, refreshed shortly before it expires.
	ReasonAhead = "ahead"
)

// Config sets what a Scheduler schedules for.
type Config struct {
	// TTL is how long an answer is fresh. Required.
	TTL time.Duration
	// Window and PerWindow are the upstream budget of one group: PerWindow
	// calls in any trailing Window. Required.
	Window    time.Duration
	PerWindow int
	// Reserve is how many of PerWindow refreshes leave to client misses.
	Reserve int
	// Lead is how long before expiry a hot key may be refreshed at the
	// earliest; zero means TTL/4. Within it the Scheduler refreshes as
	// late as is safe (Scheduler.Margin).
	Lead time.Duration
	// MaxKeys bounds how many keys are tracked; zero means 10000. A key
	// beyond it is not tracked (its clients miss as without refreshes)
	// until idle keys are dropped.
	MaxKeys int
	// Idle is how long a key nobody asks for stays tracked; zero means
	// 2×TTL + Window.
	Idle time.Duration
}

func (c Config) lead() time.Duration {
	if c.Lead > 0 {
		return c.Lead
	}
	return c.TTL / 4
}

func (c Config) maxKeys() int {
	if c.MaxKeys > 0 {
		return c.MaxKeys
	}
	return 10000
}

func (c Config) idle() time.Duration {
	if c.Idle > 0 {
		return c.Idle
	}
	return 2*c.TTL + c.Window
}

// rate is how many refreshes per window a group may make.
func (c Config) rate() int { return max(c.PerWindow-c.Reserve, 0) }

// interval is how long the pace takes to allow one more refresh.
func (c Config) interval() time.Duration {
	if r := c.rate(); r > 0 {
		return c.Window / time.Duration(r)
	}
	return c.Window
}

// tick is how long Run waits when nothing is due, unless RunOptions.Tick
// says otherwise: half the budget's spacing, at least 10ms.
func (c Config) tick() time.Duration {
	var t time.Duration
	if c.PerWindow > 0 {
		t = c.Window / time.Duration(c.PerWindow) / 2
	}
	return max(t, 10*time.Millisecond)
}

// burst is how many refreshes a group may make back to back after a quiet
// spell: a tenth of its rate, at least one.
func (c Config) burst() float64 { return float64(max(c.rate()/10, 1)) }

// Job is one refresh to make: the key, its group, what the caller stored
// with it, and why.
type Job[T any] struct {
	Key    string
	Group  string
	Data   T
	Reason string
	// handed is when Next handed it out, so Done can time the refresh.
	handed time.Time
}

// Result is what came of a Job, told to Done.
type Result int

const (
	// Refreshed: an upstream call was made and a new answer stored.
	Refreshed Result = iota
	// NotNeeded: no call was made; the key was fresh already (another
	// flight or replica refreshed it).
	NotNeeded
	// NoBudget: no call was made; the budget had no slot above the reserve.
	NoBudget
	// Failed: a call was made (budget spent) but gave no new answer; the
	// key is held back for the retry Done is given.
	Failed
	// Skipped: no call was made and the key is held back for the retry
	// Done is given (another replica holds its refresh lease).
	Skipped
)

// item is one tracked key.
type item[T any] struct {
	group string
	data  T
	// fetched is when the answer held was fetched; zero: none held.
	fetched time.Time
	// periodStart opens the ttl-long period cur counts asks in; prev is
	// the count of the period before (zero if that one was skipped).
	periodStart time.Time
	cur, prev   int
	lastAsked   time.Time
	inflight    bool
	// notBefore holds the key back after a failure or a lost lease.
	notBefore time.Time
}

// demand estimates asks per ttl: the larger of this ttl-long period's count
// and the previous one's (a blend of the two overshoots: a key asked once
// per ttl would count 2 just after a period turns).
func (it *item[T]) demand(now time.Time, ttl time.Duration) float64 {
	it.roll(now, ttl)
	return float64(max(it.cur, it.prev))
}

// roll moves the counting period forward to the one holding now.
func (it *item[T]) roll(now time.Time, ttl time.Duration) {
	if now.Sub(it.periodStart) < ttl {
		return
	}
	if now.Sub(it.periodStart) < 2*ttl {
		it.prev = it.cur
		it.periodStart = it.periodStart.Add(ttl)
	} else {
		it.prev = 0
		it.periodStart = now
	}
	it.cur = 0
}

// pace is one group's token bucket of refreshes.
type pace struct {
	tokens float64
	at     time.Time // when tokens was last brought up to date
	// blockedUntil: the budget refused; no refresh for the group before.
	blockedUntil time.Time
	// backlog is how many missing or stale keys the last Next left
	// waiting for this group's pace or budget.
	backlog int
}

// shardCount is how many independently locked parts the tracked keys are
// split into, so that concurrent asks (every request, hits included)
// rarely wait on each other.
const shardCount = 64

// shard is one independently locked part of the tracked keys.
type shard[T any] struct {
	// mu guards items and every field of the items in it.
	mu    sync.Mutex
	items map[string]*item[T]
	_     [48]byte // keeps neighbouring shards' locks off one cache line
}

// Scheduler tracks demand and hands out refreshes. Safe for concurrent use.
// Create one with New.
//
// Asked locks only its key's shard; Next, Done and the rest take mu and
// then, one at a time, the shards they touch.
type Scheduler[T any] struct {
	// conf is the configuration; SetConfig swaps it.
	conf   atomic.Pointer[Config]
	shards [shardCount]shard[T]
	// tracked counts the keys in all shards, for MaxKeys; untracked the
	// asks for keys not tracked because it was reached.
	tracked, untracked atomic.Int64
	// scarce holds the groups the last Next left missing or stale keys
	// waiting for, so Scarce (asked by every stale request) need not wait
	// for mu while Next scans.
	scarce atomic.Pointer[map[string]bool]

	// mu guards everything below, and the items' inflight and notBefore
	// against other Next and Done calls.
	mu     sync.Mutex
	groups map[string]*pace
	// latency is the refresh time observed (Next to Done of a job that
	// made a call): up at once on a slower one, down slowly; zero until
	// the first.
	latency time.Duration
	// tick is Run's tick (zero: Config.tick).
	tick time.Duration
	// ahead is Next's scratch list of refresh-ahead candidates.
	ahead []candidate
}

// candidate is a hot key with a fresh answer: its group and expiry.
type candidate struct {
	key     string
	group   string
	expires time.Time
}

// New returns a Scheduler for cfg.
func New[T any](cfg Config) *Scheduler[T] {
	s := &Scheduler[T]{groups: map[string]*pace{}}
	s.conf.Store(&cfg)
	for i := range s.shards {
		s.shards[i].items = map[string]*item[T]{}
	}
	return s
}

// SetConfig changes the configuration (a reload); tracked keys are kept.
func (s *Scheduler[T]) SetConfig(cfg Config) { s.conf.Store(&cfg) }

// Config returns the configuration in force.
func (s *Scheduler[T]) Config() Config { return *s.conf.Load() }

// cfg returns the configuration in force.
func (s *Scheduler[T]) cfg() *Config { return s.conf.Load() }

// shardSeed hashes keys to shards; one per process is enough.
var shardSeed = maphash.MakeSeed()

func (s *Scheduler[T]) shardOf(key string) *shard[T] {
	return &s.shards[maphash.String(shardSeed, key)%shardCount]
}

// Asked records one ask for key at now. fetched is when the answer the
// cache holds for it was fetched (zero when it holds none); data is kept
// for the Job the first time the key is seen. It reports false when the
// key could not be tracked (MaxKeys reached).
func (s *Scheduler[T]) Asked(key, group string, data T, fetched, now time.Time) bool {
	cfg := s.cfg()
	sh := s.shardOf(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	it := sh.items[key]
	if it == nil {
		if s.tracked.Add(1) > int64(cfg.maxKeys()) {
			s.tracked.Add(-1)
			s.untracked.Add(1)
			return false
		}
		it = &item[T]{group: group, data: data, periodStart: now}
		sh.items[key] = it
	}
	it.roll(now, cfg.TTL)
	it.cur++
	it.lastAsked = now
	if fetched.After(it.fetched) {
		it.fetched = fetched
	}
	return true
}

// Len returns how many keys are tracked.
func (s *Scheduler[T]) Len() int { return int(s.tracked.Load()) }

// Untracked returns how many asks found MaxKeys reached.
func (s *Scheduler[T]) Untracked() int64 { return s.untracked.Load() }

// class orders candidates: lower first.
const (
	classMissing = iota
	classStale
	classAhead
	classNone
)

// classify says whether key is a candidate at now, in which class, and its
// score within the class (higher first).
func classify[T any](cfg *Config, it *item[T], now time.Time) (class int, score float64) {
	if it.inflight || now.Before(it.notBefore) {
		return classNone, 0
	}
	d := it.demand(now, cfg.TTL)
	if it.fetched.IsZero() {
		return classMissing, d
	}
	age := now.Sub(it.fetched)
	if age >= cfg.TTL {
		if it.lastAsked.Before(it.fetched.Add(cfg.TTL)) {
			// Nobody asked since it expired: no call is owed to it.
			return classNone, 0
		}
		// One ask counts: an answer asked for once a ttl still ages.
		return classStale, (d + 1) * age.Seconds()
	}
	if d >= 2 {
		// Hot: refreshed ahead, within the lead, when dueAhead says so.
		return classAhead, age.Seconds()
	}
	return classNone, 0
}

// refill brings g's tokens up to date at now.
func (s *Scheduler[T]) refill(g *pace, now time.Time) {
	cfg := s.cfg()
	burst := cfg.burst()
	if g.at.IsZero() {
		g.tokens, g.at = burst, now
		return
	}
	if el := now.Sub(g.at); el > 0 && cfg.Window > 0 {
		g.tokens = min(burst, g.tokens+float64(cfg.rate())*float64(el)/float64(cfg.Window))
		g.at = now
	}
}

func (s *Scheduler[T]) group(name string) *pace {
	g := s.groups[name]
	if g == nil {
		g = &pace{}
		s.groups[name] = g
	}
	return g
}

// Next returns the job most worth an upstream call at now, among groups
// whose pace allows a call, and marks its key in flight until Done. ok is
// false when there is none. Keys idle for Config.Idle are dropped here.
func (s *Scheduler[T]) Next(now time.Time) (job Job[T], ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cfg := s.cfg()
	if cfg.TTL <= 0 || cfg.rate() <= 0 {
		return job, false
	}
	allowed := map[string]bool{}
	may := func(name string) bool {
		a, seen := allowed[name]
		if !seen {
			g := s.group(name)
			s.refill(g, now)
			a = g.tokens >= 1 && !now.Before(g.blockedUntil)
			allowed[name] = a
		}
		return a
	}
	idle := cfg.idle()
	bestClass, bestScore := classNone, 0.0
	var bestKey string
	for _, g := range s.groups {
		g.backlog = 0
	}
	defer s.publishScarce()
	s.ahead = s.ahead[:0]
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		for key, it := range sh.items {
			if !it.inflight && now.Sub(it.lastAsked) > idle {
				delete(sh.items, key)
				s.tracked.Add(-1)
				continue
			}
			class, score := classify(cfg, it, now)
			if class <= classStale {
				s.group(it.group).backlog++
			}
			if class == classAhead {
				s.ahead = append(s.ahead, candidate{key: key, group: it.group, expires: it.fetched.Add(cfg.TTL)})
				continue
			}
			if class == classNone || class > bestClass || class == bestClass && score <= bestScore {
				continue
			}
			if !may(it.group) {
				continue
			}
			bestClass, bestScore, bestKey = class, score, key
		}
		sh.mu.Unlock()
	}
	if bestClass == classNone {
		bestKey, ok = s.dueAhead(cfg, now, may)
		if !ok {
			return job, false
		}
		bestClass = classAhead
	}
	// Only Next deletes, and mu is held: the key is still tracked.
	sh := s.shardOf(bestKey)
	sh.mu.Lock()
	it := sh.items[bestKey]
	it.inflight = true
	job = Job[T]{Key: bestKey, Group: it.group, Data: it.data, Reason: [...]string{ReasonMissing, ReasonStale, ReasonAhead}[bestClass], handed: now}
	sh.mu.Unlock()
	g := s.groups[job.Group]
	g.tokens--
	if bestClass <= classStale {
		g.backlog--
	}
	return job, true
}

// dueAhead picks, from the hot fresh keys Next gathered, the
// soonest-expiring key of a group that may call and must be refreshed now:
// were the group's hot keys refreshed soonest expiry first, one per pace
// interval, each no earlier than the lead before its expiry, starting a
// tick from now, one would start later than Margin before its expiry.
// Waiting while that is safe keeps a hot answer in use for nearly its
// whole ttl; counting the keys due later keeps a bunch of them (first
// fetched together) from outrunning the pace.
func (s *Scheduler[T]) dueAhead(cfg *Config, now time.Time, may func(string) bool) (key string, ok bool) {
	slices.SortFunc(s.ahead, func(a, b candidate) int {
		if c := strings.Compare(a.group, b.group); c != 0 {
			return c
		}
		return a.expires.Compare(b.expires)
	})
	lead, margin, interval, tick := cfg.lead(), s.margin(), cfg.interval(), s.runTick()
	var best *candidate
	for i := 0; i < len(s.ahead); {
		first := &s.ahead[i]
		urgent := false
		t := now.Add(tick)
		for ; i < len(s.ahead) && s.ahead[i].group == first.group; i++ {
			c := &s.ahead[i]
			if urgent || c.expires.Add(-lead).After(t) {
				// Decided, or a gap: from here waiting changes nothing.
				continue
			}
			urgent = !t.Add(margin).Before(c.expires)
			t = t.Add(interval)
		}
		released := !now.Before(first.expires.Add(-lead))
		if urgent && released && may(first.group) && (best == nil || first.expires.Before(best.expires)) {
			best = first
		}
	}
	if best == nil {
		return "", false
	}
	return best.key, true
}

// margin is how long before expiry a refresh must start to be back in
// time: twice the observed refresh time plus two ticks (Run looks once a
// tick, and may wait a tick for a free runner), never more than the lead.
// Until a refresh has been timed it is the lead.
func (s *Scheduler[T]) margin() time.Duration {
	lead := s.cfg().lead()
	if s.latency == 0 {
		return lead
	}
	return min(2*s.latency+2*s.runTick(), lead)
}

func (s *Scheduler[T]) runTick() time.Duration {
	if s.tick > 0 {
		return s.tick
	}
	return s.cfg().tick()
}

// Margin returns how long before its expiry a hot key's refresh starts at
// the latest (see margin).
func (s *Scheduler[T]) Margin() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.margin()
}

// observe folds one refresh time into latency: up at once, down by an
// eighth of the difference, so one fast refresh does not shrink the
// margin below what the slow ones need.
func (s *Scheduler[T]) observe(d time.Duration) {
	if d <= 0 {
		d = time.Nanosecond // timed, and instant (a fake clock)
	}
	if d > s.latency {
		s.latency = d
		return
	}
	s.latency -= (s.latency - d) / 8
}

// Done reports what came of job at now. fetched is when the answer the
// cache now holds for the key was fetched (zero if none). A job that made
// no upstream call gives its pace back; NoBudget also holds the group's
// refreshes back for retry (the caller's estimate of when a slot frees).
func (s *Scheduler[T]) Done(job Job[T], res Result, fetched, now time.Time, retry time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if (res == Refreshed || res == Failed) && !job.handed.IsZero() {
		s.observe(now.Sub(job.handed))
	}
	sh := s.shardOf(job.Key)
	sh.mu.Lock()
	if it := sh.items[job.Key]; it != nil {
		it.inflight = false
		if fetched.After(it.fetched) {
			it.fetched = fetched
		}
		if res == Failed || res == Skipped {
			it.notBefore = now.Add(retry)
		}
	}
	sh.mu.Unlock()
	g := s.group(job.Group)
	switch res {
	case NotNeeded, Skipped:
		g.tokens++
	case NoBudget:
		g.tokens++
		g.blockedUntil = now.Add(retry)
	}
}

// Clock is the time a Run loop reads and waits on (limit.Clock and
// fakeclock.Clock are ones).
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

// RunOptions tune Run.
type RunOptions struct {
	// Tick is how long Run waits when nothing is due; zero means
	// Window/PerWindow/2, at least 10ms. Refresh-ahead starts a refresh
	// two ticks earlier than it could otherwise (see Scheduler.Margin).
	Tick time.Duration
	// Parallel is how many refreshes may be in flight at once; zero
	// means 4.
	Parallel int
}

// Run hands jobs to do until ctx ends, at most opts.Parallel at once. do
// makes the upstream call (or finds it unneeded) and returns the Result,
// when the answer now held was fetched, and for NoBudget how long until a
// slot may free. Run returns when ctx ends and every do has returned.
func (s *Scheduler[T]) Run(ctx context.Context, clock Clock, opts RunOptions,
	do func(ctx context.Context, job Job[T]) (res Result, fetched time.Time, retry time.Duration)) {
	parallel := opts.Parallel
	if parallel <= 0 {
		parallel = 4
	}
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		s.mu.Lock()
		s.tick = opts.Tick
		tick := s.runTick()
		s.mu.Unlock()
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		job, ok := s.Next(clock.Now())
		if !ok {
			<-sem
			select {
			case <-clock.After(tick):
				continue
			case <-ctx.Done():
				return
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			res, fetched, retry := do(ctx, job)
			s.Done(job, res, fetched, clock.Now(), retry)
		}()
	}
}

// Scarce reports whether, at the last Next, group had missing or stale
// keys that its pace or budget left waiting: the budget cannot keep every
// key fresh, so a client of a stale key should be served the stale answer
// at once and leave the order of calls to the Scheduler.
func (s *Scheduler[T]) Scarce(group string) bool {
	m := s.scarce.Load()
	return m != nil && (*m)[group]
}

// publishScarce stores the groups with a backlog for Scarce, when they
// changed. Called with mu held.
func (s *Scheduler[T]) publishScarce() {
	old := s.scarce.Load()
	n := 0
	same := true
	for name, g := range s.groups {
		if g.backlog > 0 {
			n++
			same = same && old != nil && (*old)[name]
		}
	}
	if same && (old == nil && n == 0 || old != nil && len(*old) == n) {
		return
	}
	m := make(map[string]bool, n)
	for name, g := range s.groups {
		if g.backlog > 0 {
			m[name] = true
		}
	}
	s.scarce.Store(&m)
}

// Lead returns how long before expiry a hot key may be refreshed at the
// earliest: a refresh that finds its answer younger than TTL-Lead has
// nothing to do.
func (s *Scheduler[T]) Lead() time.Duration { return s.cfg().lead() }
