package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/caproxy/caproxy/cloudagent"
	"github.com/caproxy/caproxy/internal/redistest"
)

// TestScaleOutOnRedis runs two caproxy processes on one Redis in front of
// one simulator: they share the upstream token (one generation), the cache
// (one upstream call per key) and the budget.
func TestScaleOutOnRedis(t *testing.T) {
	scaleOut(t, proxyConfig{Redis: "redis://" + redistest.Start(t) + "/0", RedisKeys: []string{sharingTimeout}})
}

// sharingTimeout is redis.timeout for tests of sharing, not of outages: a
// machine loaded by a -race run can stall a call past a short bound, and
// the circuit breaker rightly takes that for an outage (503 for a miss
// under on_failure deny), which is not what these tests are about.
const sharingTimeout = "timeout: 2s"

// TestScaleOutOnRedisCluster is TestScaleOutOnRedis on a real 3-node Redis
// Cluster (redis.addrs): the shared keys spread over the cluster's slots,
// and every Lua script's keys sit in one slot.
func TestScaleOutOnRedisCluster(t *testing.T) {
	cl := redistest.StartCluster(t, 3)
	scaleOut(t, proxyConfig{RedisKeys: []string{"addrs: [" + strings.Join(cl.Addrs(), ", ") + "]", sharingTimeout}})
}

// scaleOut runs the scale-out checks with cfg's Redis settings.
func scaleOut(t *testing.T, cfg proxyConfig) {
	s := startSim(t, "-data", writeSimData(t, account{"demo", secretDemoKey, "token"}))
	cfg.Upstream = s.url()
	cfg.Accounts = []account{{"demo", "${" + envDemoKey + "}", "token"}}
	a := startProxy(t, cfg, envDemoKey+"="+secretDemoKey)
	b := startProxy(t, cfg, envDemoKey+"="+secretDemoKey)
	replicas := []*caproxy{a, b}
	c := newClient(t)

	// Both replicas at once, cold: still one token for the account.
	const agents = 10
	var wg sync.WaitGroup
	errs := make([]error, 100)
	for i := range errs {
		wg.Go(func() {
			agent := fmt.Sprintf("agent%03d", i%agents+1)
			r, err := c.try(http.MethodPost, replicas[i%2].url(cloudagent.PathAHT), ahtBody("demo", agent), cloudagent.HeaderAPIKey, secretDemoKey)
			if err == nil {
				err = agentAHTProblem(r, agent, "")
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("request %d: %v", i, err)
		}
	}
	if t.Failed() {
		t.Logf("output of the first replica:\n%s\noutput of the second:\n%s", a.out.String(), b.out.String())
	}
	st := s.stats(t, c)
	if st.TokenGenerations != 1 || st.AHTAdmitted > 2*agents || st.AHTLimited != 0 || st.LimitViolations != 0 {
		t.Fatalf("simulator: %d token generations, %d AHT admitted, %d limited; want 1, at most %d, 0",
			st.TokenGenerations, st.AHTAdmitted, st.AHTLimited, 2*agents)
	}

	// What one replica fetches, the other serves without an upstream call.
	before := st.AHTAdmitted
	for i := 11; i <= 20; i++ {
		agent := fmt.Sprintf("agent%03d", i)
		checkAgentAHT(t, c.aht(a, secretDemoKey, "demo", agent), agent, "MISS")
		checkAgentAHT(t, c.aht(b, secretDemoKey, "demo", agent), agent, "HIT")
	}
	if st := s.stats(t, c); st.AHTAdmitted != before+10 || st.TokenGenerations != 1 {
		t.Errorf("simulator: %d AHT admitted, %d token generations; want %d and 1", st.AHTAdmitted, st.TokenGenerations, before+10)
	}
	// Both replicas report the same shared budget.
	if ra, rb := remaining(t, c, a), remaining(t, c, b); ra != rb || ra != 50-(before+10) {
		t.Errorf("budget remaining: %d on one replica, %d on the other; want both %d", ra, rb, 50-(before+10))
	}
}
