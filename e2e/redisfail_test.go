package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caproxy/caproxy/cloudagent"
	"github.com/caproxy/caproxy/internal/redistest"
)

// maxAnswer is how long caproxy may take over any answer while Redis is
// down or back (issue 10: a client with a short timeout must not see
// caproxy as down).
//
// It is checked on the time caproxy itself took: the duration its access
// log records for the request (found by the X-Request-Id the test sends),
// from the handler's start to its answer. That is where a wait on Redis
// happens (the bug this guards against answered after 15-20 s); nothing
// before the handler touches Redis. The round trip the test measures adds
// the test process's own scheduling, which on a loaded machine passed
// 0.5 s by itself and made the tests flaky; it is only bounded by the
// client's timeout (waitEvent), which an answer held for seconds fails.
const maxAnswer = 500 * time.Millisecond

// outage is two caproxy replicas sharing one real redis-server in front of
// one simulator, for tests that make Redis fail under them.
type outage struct {
	t        *testing.T
	redis    *redistest.Server
	sim      *simulator
	replicas []*caproxy
	c        *client
	next     atomic.Int64 // agents never asked before: agent101, agent102, …
	asked    atomic.Int64 // requests sent, numbering their X-Request-Id

	// mu guards open.
	mu sync.Mutex
	// open holds the numbers of the requests sent and not yet answered.
	open map[int64]struct{}
}

// startOutage starts Redis, the simulator with simFlags, and two replicas
// with cfg (Upstream, Accounts and Redis filled in).
func startOutage(t *testing.T, cfg proxyConfig, simFlags ...string) *outage {
	t.Helper()
	o := &outage{t: t, redis: redistest.StartServer(t)}
	cfg.Redis = "redis://" + o.redis.Addr + "/0"
	o.start(cfg, simFlags...)
	return o
}

// start starts the simulator and the replicas on cfg's Redis.
func (o *outage) start(cfg proxyConfig, simFlags ...string) {
	t := o.t
	t.Helper()
	o.c = newClient(t)
	o.next.Store(100)
	o.sim = startSim(t, append([]string{"-data", writeSimData(t, account{"demo", secretDemoKey, "token"})}, simFlags...)...)
	cfg.Upstream = o.sim.url()
	cfg.Accounts = []account{{"demo", "${" + envDemoKey + "}", "token"}}
	for range 2 {
		o.replicas = append(o.replicas, startProxy(t, cfg, envDemoKey+"="+secretDemoKey))
	}
}

// newAgent returns an agent no request has named yet (a sure miss).
func (o *outage) newAgent() string { return fmt.Sprintf("agent%03d", o.next.Add(1)) }

// timed is one answer and how long it took the client.
type timed struct {
	response
	agent   string
	id      string // the request's X-Request-Id
	replica int
	took    time.Duration
	err     error
}

// ask asks replica i for agent's AHT and times the answer.
func (o *outage) ask(i int, agent string) timed {
	n := o.asked.Add(1)
	id := fmt.Sprintf("e2e-outage-%d", n)
	o.mu.Lock()
	if o.open == nil {
		o.open = map[int64]struct{}{}
	}
	o.open[n] = struct{}{}
	o.mu.Unlock()
	start := time.Now()
	r, err := o.c.try(http.MethodPost, o.replicas[i%2].url(cloudagent.PathAHT), ahtBody("demo", agent),
		cloudagent.HeaderAPIKey, secretDemoKey, "X-Request-Id", id)
	o.mu.Lock()
	delete(o.open, n)
	o.mu.Unlock()
	return timed{response: r, agent: agent, id: id, replica: i % 2, took: time.Since(start), err: err}
}

// waitAnswered waits (bounded) until requests 1 to sent have their
// answers: any upstream call one of them made has then landed (a fetch
// ends before the answer of the request that led it).
func (o *outage) waitAnswered(sent int64) {
	o.t.Helper()
	eventually(o.t, waitEvent, "answers to the requests already sent", func() bool {
		o.mu.Lock()
		defer o.mu.Unlock()
		for n := range o.open {
			if n <= sent {
				return false
			}
		}
		return true
	}, nil)
}

// served returns how long caproxy took over each answered request, by
// X-Request-Id, from the replicas' access logs, waiting (bounded) for
// the lines of answers to be written.
func (o *outage) served(answers []timed) map[string]time.Duration {
	o.t.Helper()
	took := map[string]time.Duration{}
	missing := func() (n int) {
		for _, p := range o.replicas {
			for _, line := range strings.Split(p.out.String(), "\n") {
				id, d, ok := accessDuration(line)
				if ok {
					took[id] = d
				}
			}
		}
		for _, a := range answers {
			if _, ok := took[a.id]; a.err == nil && !ok {
				n++
			}
		}
		return n
	}
	eventually(o.t, waitEvent, "the access lines of every answer", func() bool { return missing() == 0 }, nil)
	return took
}

// accessDuration reads the request id and duration of a text access-log
// line.
func accessDuration(line string) (id string, took time.Duration, ok bool) {
	if !strings.Contains(line, " msg=request ") {
		return "", 0, false
	}
	var err error = errors.New("no duration")
	for _, f := range strings.Fields(line) {
		if v, found := strings.CutPrefix(f, "id="); found {
			id = v
		} else if v, found := strings.CutPrefix(f, "duration="); found {
			took, err = time.ParseDuration(v)
		}
	}
	return id, took, id != "" && err == nil
}

// load asks both replicas for the agents in cached, over and over, on
// goroutines, until stop is closed; it returns every answer.
func (o *outage) load(cached []string, stop <-chan struct{}) func() []timed {
	var mu sync.Mutex
	var all []timed
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := g; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				a := o.ask(i, cached[i%len(cached)])
				mu.Lock()
				all = append(all, a)
				mu.Unlock()
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
	return func() []timed { wg.Wait(); return all }
}

// checkFast fails the test for every answer that was a transport error
// (the client's timeout included) or that caproxy took longer than
// maxAnswer over (see maxAnswer).
func (o *outage) checkFast(what string, answers []timed) {
	o.t.Helper()
	served := o.served(answers)
	slow := 0
	for _, a := range answers {
		if a.err != nil {
			o.t.Errorf("%s: %s: %v", what, a.agent, a.err)
		} else if took := served[a.id]; took > maxAnswer {
			slow++
			if slow <= 5 {
				o.t.Errorf("%s: replica %d answered %s %d after %v (the client waited %v), want within %v",
					what, a.replica, a.agent, a.code, took, a.took, maxAnswer)
			}
		}
	}
	if slow > 5 {
		o.t.Errorf("%s: %d answers slower than %v in all", what, slow, maxAnswer)
	}
}

// checkServedFromMemory fails the test unless every answer is 200 HIT or
// STALE with the agent's AHT.
func (o *outage) checkServedFromMemory(what string, answers []timed) {
	o.t.Helper()
	bad := 0
	for _, a := range answers {
		if a.err != nil {
			continue // reported by checkFast
		}
		x := a.header.Get("X-Cache")
		if err := agentAHTProblem(a.response, a.agent, ""); err != nil || (x != "HIT" && x != "STALE") {
			bad++
			if bad <= 5 {
				o.t.Errorf("%s: cached %s answered %d X-Cache %q %s, want 200 HIT or STALE", what, a.agent, a.code, x, a.body)
			}
		}
	}
}

// checkAlive fails the test if a replica has exited.
func (o *outage) checkAlive() {
	o.t.Helper()
	for i, p := range o.replicas {
		if p.exited() {
			o.t.Fatalf("replica %d exited; output:\n%s", i, p.out.String())
		}
	}
}

// degraded reports whether replica p's /readyz says it is degraded
// (still 200: memory serves).
func (o *outage) degraded(p *caproxy) bool {
	r, err := o.c.try(http.MethodGet, p.adminURL("/readyz"), "")
	return err == nil && r.code == http.StatusOK && strings.Contains(r.body, "degraded")
}

// budgetMode reads the demo account's budget mode from /admin/budget.
func (o *outage) budgetMode(p *caproxy) string {
	r, err := o.c.try(http.MethodGet, p.adminURL("/admin/budget"), "")
	if err != nil {
		return err.Error()
	}
	i := strings.Index(r.body, `"mode":"`)
	if i < 0 {
		return r.body
	}
	rest := r.body[i+len(`"mode":"`):]
	return rest[:strings.IndexByte(rest, '"')]
}

// plainMetric returns the value of an unlabelled sample on p's /metrics,
// as written there, or "" if there is none.
func (o *outage) plainMetric(p *caproxy, name string) string {
	o.t.Helper()
	r := o.c.do(http.MethodGet, p.adminURL("/metrics"), "")
	for _, line := range strings.Split(r.body, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return v
		}
	}
	return ""
}

// remaining reads the demo account's remaining budget from p's
// /admin/budget.
func (o *outage) remaining(p *caproxy) int64 {
	o.t.Helper()
	r := o.c.do(http.MethodGet, p.adminURL("/admin/budget"), "")
	var budgets map[string]struct {
		Remaining int64 `json:"remaining"`
	}
	if err := json.Unmarshal([]byte(r.body), &budgets); err != nil || r.code != http.StatusOK {
		o.t.Fatalf("/admin/budget: %d %s", r.code, r.body)
	}
	return budgets["demo"].Remaining
}

// waitMiss asks replica i for new agents until one is fetched (200 MISS),
// checking every answer is fast, for at most within.
func (o *outage) waitMiss(i int, within time.Duration) {
	o.t.Helper()
	deadline := time.Now().Add(within)
	var last timed
	for time.Now().Before(deadline) {
		last = o.ask(i, o.newAgent())
		// The 0.5 s bound is the outage's promise; while Redis comes back
		// (a cluster reloads its slot map) the bound is within itself.
		if last.err != nil {
			o.t.Errorf("waiting for misses to be fetched again: %s: %v", last.agent, last.err)
		}
		if last.err == nil && last.code == http.StatusOK && last.header.Get("X-Cache") == "MISS" {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	o.t.Fatalf("replica %d fetched no miss within %v of Redis coming back; last answer %d %q %s", i, within, last.code, last.header.Get("X-Cache"), last.body)
}

// warm fetches agents through replica 0 and checks replica 1 gets them
// from the shared level.
func (o *outage) warm(n int) []string {
	o.t.Helper()
	var agents []string
	for i := 1; i <= n; i++ {
		agent := fmt.Sprintf("agent%03d", i)
		checkAgentAHT(o.t, o.c.aht(o.replicas[0], secretDemoKey, "demo", agent), agent, "MISS")
		checkAgentAHT(o.t, o.c.aht(o.replicas[1], secretDemoKey, "demo", agent), agent, "HIT")
		agents = append(agents, agent)
	}
	return agents
}

// TestRedisKilledUnderLoad kills Redis with SIGKILL under load on two
// replicas (on_failure: deny) and restarts it empty on the same port:
// while it is down every answer is fast, cached keys are served from
// memory (HIT or STALE), misses get 503 with Retry-After and no upstream
// call; when it is back, misses are fetched again within 5 s, without a
// caproxy restart and without a new upstream token; the simulator never
// refuses a call for its limit.
func TestRedisKilledUnderLoad(t *testing.T) {
	o := startOutage(t, proxyConfig{TTL: "1s", RedisKeys: []string{"timeout: 100ms"}})
	cached := o.warm(10)

	stop := make(chan struct{})
	before := o.load(cached, stop)
	time.Sleep(300 * time.Millisecond)
	close(stop)
	o.checkFast("before the outage", before())

	sentBeforeKill := o.asked.Load()
	o.redis.Kill()
	stop = make(chan struct{})
	during := o.load(cached, stop)
	// Calls sent before the kill have landed once the requests sent
	// before it are answered; later ones cannot take budget from a dead
	// Redis under on_failure deny, so they make no upstream call.
	o.waitAnswered(sentBeforeKill)
	admittedAtKill := o.sim.stats(t, o.c).AHTAdmitted
	var misses []timed
	for range 20 {
		misses = append(misses, o.ask(int(o.next.Load()), o.newAgent()))
		time.Sleep(75 * time.Millisecond)
	}
	for i, p := range o.replicas {
		if !o.degraded(p) {
			t.Errorf("replica %d: /readyz does not say degraded while Redis is down", i)
		}
		if m := o.budgetMode(p); m != "denied" {
			t.Errorf("replica %d: /admin/budget mode %q while Redis is down, want denied", i, m)
		}
		if up := o.plainMetric(p, "caproxy_redis_up"); up != "0" {
			t.Errorf("replica %d: caproxy_redis_up = %q while Redis is down, want 0", i, up)
		}
	}
	close(stop)
	answers := during()
	o.checkFast("Redis down", answers)
	o.checkServedFromMemory("Redis down", answers)
	o.checkFast("misses while Redis is down", misses)
	for _, m := range misses {
		if m.err == nil && (m.code != http.StatusServiceUnavailable || m.header.Get("Retry-After") == "") {
			t.Errorf("miss for %s while Redis is down: %d %s (Retry-After %q), want 503 with Retry-After", m.agent, m.code, m.body, m.header.Get("Retry-After"))
		}
	}
	o.checkAlive()
	if got := o.sim.stats(t, o.c).AHTAdmitted; got != admittedAtKill {
		t.Errorf("%d upstream AHT calls while Redis was down under on_failure deny, want none", got-admittedAtKill)
	}

	o.redis.Restart()
	stop = make(chan struct{})
	after := o.load(cached, stop)
	o.waitMiss(0, 5*time.Second)
	o.waitMiss(1, 5*time.Second)
	close(stop)
	o.checkFast("Redis back", after())
	o.checkAlive()
	for i, p := range o.replicas {
		p.waitLog(t, "redis is down", 1)
		p.waitLog(t, "redis is back", 1)
		if o.degraded(p) {
			t.Errorf("replica %d: /readyz still degraded after Redis came back", i)
		}
		if n := o.plainMetric(p, "caproxy_redis_errors_total"); n == "0" || n == "" {
			t.Errorf("replica %d: caproxy_redis_errors_total = %q, want at least 1", i, n)
		}
		if up := o.plainMetric(p, "caproxy_redis_up"); up != "1" {
			t.Errorf("replica %d: caproxy_redis_up = %q after Redis came back, want 1", i, up)
		}
	}
	st := o.sim.stats(t, o.c)
	if st.AHTLimited != 0 || st.LimitViolations != 0 || st.TokenGenerations > 2 {
		t.Errorf("simulator: %d calls refused for the limit, %d token generations; want 0 and at most 2", st.AHTLimited, st.TokenGenerations)
	}
}

// TestRedisHung stops Redis with SIGSTOP (alive, silent): every answer is
// still fast, expired keys are served STALE, misses 503; after SIGCONT
// misses are fetched again.
func TestRedisHung(t *testing.T) {
	o := startOutage(t, proxyConfig{TTL: "1s", RedisKeys: []string{"timeout: 100ms"}})
	cached := o.warm(5)
	o.redis.Pause()
	defer o.redis.Resume()
	time.Sleep(1100 * time.Millisecond) // the cached answers are now stale

	var answers, misses []timed
	for i := range 30 {
		answers = append(answers, o.ask(i, cached[i%len(cached)]))
		if i%3 == 0 {
			misses = append(misses, o.ask(i, o.newAgent()))
		}
	}
	o.checkFast("Redis hung", answers)
	o.checkFast("misses while Redis is hung", misses)
	for _, a := range answers {
		if err := agentAHTProblem(a.response, a.agent, "STALE"); a.err == nil && err != nil {
			t.Errorf("Redis hung: %v", err)
		}
	}
	for _, m := range misses {
		if m.err == nil && m.code != http.StatusServiceUnavailable {
			t.Errorf("miss for %s while Redis is hung: %d %s, want 503", m.agent, m.code, m.body)
		}
	}
	for i, p := range o.replicas {
		if !o.degraded(p) {
			t.Errorf("replica %d: /readyz does not say degraded while Redis is hung", i)
		}
	}
	o.redis.Resume()
	o.waitMiss(0, 5*time.Second)
	o.waitMiss(1, 5*time.Second)
	o.checkAlive()
	if st := o.sim.stats(t, o.c); st.AHTLimited != 0 || st.LimitViolations != 0 || st.TokenGenerations != 1 {
		t.Errorf("simulator: %d refused for the limit, %d token generations; want 0 and 1", st.AHTLimited, st.TokenGenerations)
	}
}

// TestRedisRestartedEmpty spends 12 of 20 calls across two replicas, then
// restarts Redis empty and sends 30 new keys at once across both: the
// replicas' local floors keep the simulator from ever refusing a call
// (before the fix all 30 went upstream).
func TestRedisRestartedEmpty(t *testing.T) {
	o := startOutage(t, proxyConfig{PerMinute: 20, Window: "20s", RedisKeys: []string{"timeout: 250ms"}}, "-limit", "20", "-window", "20s")
	for i := range 12 {
		a := o.ask(i, o.newAgent())
		if err := agentAHTProblem(a.response, a.agent, "MISS"); err != nil {
			t.Fatal(err)
		}
	}
	// Each replica looks at the shared budget, as a metrics scrape does.
	for _, p := range o.replicas {
		if got := o.remaining(p); got != 8 {
			t.Fatalf("remaining before the restart = %d, want 8", got)
		}
	}
	o.redis.Restart()
	for _, p := range o.replicas { // wait until both use Redis again
		eventually(t, waitEvent, "replica to leave degraded mode", func() bool { return !o.degraded(p) }, p.process)
	}
	var wg sync.WaitGroup
	answers := make([]timed, 30)
	for i := range answers {
		agent := o.newAgent()
		wg.Go(func() { answers[i] = o.ask(i, agent) })
	}
	wg.Wait()
	fetched := 0
	for _, a := range answers {
		if a.err == nil && a.code == http.StatusOK {
			fetched++
		}
	}
	st := o.sim.stats(t, o.c)
	if st.AHTLimited != 0 || st.LimitViolations != 0 || st.MaxArrivalsInWindow > 20 || fetched > 8 {
		t.Errorf("after Redis restarted empty: %d fetched, simulator refused %d for the limit, most in a window %d; want at most 8, 0, at most 20",
			fetched, st.AHTLimited, st.MaxArrivalsInWindow)
	}
	if fetched == 0 {
		t.Errorf("after Redis restarted empty no key was fetched; want the 8 calls left")
	}
}

// TestRedisDownShare runs the share policy (two replicas, 10 calls per 4 s
// window): while Redis is down each replica still fetches misses within
// its share, the simulator never refuses a call for its limit, and when
// Redis is back misses are fetched again.
func TestRedisDownShare(t *testing.T) {
	o := startOutage(t, proxyConfig{PerMinute: 10, Window: "4s",
		RedisKeys: []string{"timeout: 250ms", "on_failure: share", "replicas: 2"}}, "-limit", "10", "-window", "4s")
	// A token and one call each, through Redis.
	for i := range 2 {
		a := o.ask(i, o.newAgent())
		if err := agentAHTProblem(a.response, a.agent, "MISS"); err != nil {
			t.Fatal(err)
		}
	}
	o.redis.Kill()
	fetched := make([]int, 2)
	var all []timed
	for end := time.Now().Add(6 * time.Second); time.Now().Before(end); {
		for i := range 2 {
			a := o.ask(i, o.newAgent())
			all = append(all, a)
			if a.err == nil && a.code == http.StatusOK {
				fetched[i]++
			} else if a.err == nil && a.code != http.StatusTooManyRequests {
				t.Errorf("miss on replica %d while Redis is down: %d %s, want 200 or 429", i, a.code, a.body)
			}
		}
		time.Sleep(40 * time.Millisecond)
	}
	o.checkFast("Redis down, share", all)
	if fetched[0] == 0 || fetched[1] == 0 {
		t.Errorf("while Redis was down the replicas fetched %v misses; want some on each", fetched)
	}
	for i, p := range o.replicas {
		if m := o.budgetMode(p); m != "local_share" {
			t.Errorf("replica %d: /admin/budget mode %q while Redis is down, want local_share", i, m)
		}
	}
	o.redis.Restart()
	o.waitMiss(0, 5*time.Second)
	o.waitMiss(1, 5*time.Second)
	o.checkAlive()
	st := o.sim.stats(t, o.c)
	if st.AHTLimited != 0 || st.LimitViolations != 0 || st.MaxArrivalsInWindow > 10 || st.TokenGenerations > 2 {
		t.Errorf("simulator: %d refused for the limit, most in a window %d, %d token generations; want 0, at most 10, at most 2",
			st.AHTLimited, st.MaxArrivalsInWindow, st.TokenGenerations)
	}
}

// TestRedisClusterNodeKilled runs two replicas on a 3-node Redis Cluster
// and kills one node under load: answers stay fast, cached keys are
// answered 200 (from memory, or fetched when the budget's node is alive),
// no replica exits; when the node is back on its port (empty,
// rejoining the cluster), misses are fetched again with no caproxy
// restart, and the simulator never refuses a call for its limit.
func TestRedisClusterNodeKilled(t *testing.T) {
	cl := redistest.StartCluster(t, 3)
	o := &outage{t: t}
	o.start(proxyConfig{TTL: "1s", RedisKeys: []string{"addrs: [" + strings.Join(cl.Addrs(), ", ") + "]", "timeout: 250ms"}})
	cached := o.warm(10)

	cl.Nodes[0].Kill()
	stop := make(chan struct{})
	during := o.load(cached, stop)
	time.Sleep(1500 * time.Millisecond) // every cached answer expires meanwhile
	close(stop)
	answers := during()
	o.checkFast("a cluster node down", answers)
	// Keys on the live nodes still work, so a cached key may be fetched
	// again (MISS) as well as served from memory: any 200 with the answer.
	for _, a := range answers {
		if err := agentAHTProblem(a.response, a.agent, ""); a.err == nil && err != nil {
			t.Errorf("a cluster node down: %v", err)
		}
	}
	o.checkAlive()

	cl.Nodes[0].Restart()
	o.waitMiss(0, 15*time.Second)
	o.waitMiss(1, 15*time.Second)
	o.checkAlive()
	if st := o.sim.stats(t, o.c); st.AHTLimited != 0 || st.LimitViolations != 0 || st.TokenGenerations > 2 {
		t.Errorf("simulator: %d refused for the limit, %d token generations; want 0 and at most 2", st.AHTLimited, st.TokenGenerations)
	}
}
