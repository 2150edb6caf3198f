package e2e

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/caproxy/caproxy/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// TestSentinelFailover runs two replicas on a Redis master with one Redis
// replica, found through a real Sentinel (redis.addrs + master_name), and
// kills the master under load: Sentinel promotes the replica, and caproxy
// follows it without a restart. The shared budget and the upstream token
// were replicated, so the failover costs no token generation and lets no
// call past CloudAgent's limit.
func TestSentinelFailover(t *testing.T) {
	master := redistest.StartServer(t)
	_, masterPort, _ := net.SplitHostPort(master.Addr)
	standby := redistest.StartServer(t, "--replicaof", "127.0.0.1", masterPort)
	sentinel := redistest.StartSentinel(t, "mymaster", master,
		"sentinel down-after-milliseconds mymaster 500",
		"sentinel failover-timeout mymaster 5000")
	ctx := context.Background()
	direct := redis.NewClient(&redis.Options{Addr: master.Addr})
	defer direct.Close()
	sc := redis.NewSentinelClient(&redis.Options{Addr: sentinel.Addr})
	defer sc.Close()
	// Sentinel must know the standby before the master dies, or it has
	// nothing to promote.
	waitFor(t, 15*time.Second, "sentinel to discover the standby", func() bool {
		r, err := sc.Replicas(ctx, "mymaster").Result()
		return err == nil && len(r) == 1 && r[0]["flags"] == "slave"
	})

	o := &outage{t: t}
	o.start(proxyConfig{TTL: "1s", RedisKeys: []string{
		"addrs: [" + sentinel.Addr + "]", "master_name: mymaster", sharingTimeout}})
	cached := o.warm(10)
	// Everything written so far (budget log, token, cache) is on the
	// standby before the master goes.
	if n, err := direct.Wait(ctx, 1, 5*time.Second).Result(); err != nil || n != 1 {
		t.Fatalf("WAIT for the standby: %d, %v", n, err)
	}

	master.Kill()
	stop := make(chan struct{})
	during := o.load(cached, stop)
	waitFor(t, 30*time.Second, "sentinel to promote the standby", func() bool {
		addr, err := sc.GetMasterAddrByName(ctx, "mymaster").Result()
		return err == nil && net.JoinHostPort(addr[0], addr[1]) == standby.Addr
	})
	close(stop)
	for _, a := range during() {
		if err := agentAHTProblem(a.response, a.agent, ""); a.err != nil || err != nil {
			t.Errorf("during the failover: %s: %v %v", a.agent, a.err, err)
		}
	}
	// Both replicas fetch from the upstream again through the new master.
	o.waitMiss(0, 15*time.Second)
	o.waitMiss(1, 15*time.Second)
	o.checkAlive()
	if st := o.sim.stats(t, o.c); st.LimitViolations != 0 || st.TokenGenerations != 1 {
		t.Errorf("simulator: %d calls refused for the limit, %d token generations; want 0 and 1", st.LimitViolations, st.TokenGenerations)
	}
}

// waitFor polls cond every 50 ms until it holds, failing the test after
// within.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %v", what, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
