package redisconn

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/caproxy/caproxy/internal/redistest"
)

// transitions records OnChange calls.
type transitions struct {
	mu  sync.Mutex
	ups []bool
	ch  chan bool
}

func newTransitions() *transitions { return &transitions{ch: make(chan bool, 16)} }

func (tr *transitions) on(up bool, err error) {
	tr.mu.Lock()
	tr.ups = append(tr.ups, up)
	tr.mu.Unlock()
	tr.ch <- up
}

func (tr *transitions) await(t *testing.T, want bool) {
	t.Helper()
	select {
	case got := <-tr.ch:
		if got != want {
			t.Fatalf("transition to up=%v, want up=%v", got, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no transition to up=%v", want)
	}
}

func open(t *testing.T, o Options) *Conn {
	t.Helper()
	c, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestHungRedisFailsFast pauses Redis (SIGSTOP): the first call fails with
// its deadline, the breaker opens, later calls fail with ErrDown without
// reaching the network, and once Redis resumes the probe closes the
// circuit and calls work again.
func TestHungRedisFailsFast(t *testing.T) {
	s := redistest.StartServer(t)
	tr := newTransitions()
	c := open(t, Options{URL: "redis://" + s.Addr, Timeout: 100 * time.Millisecond, ProbeEvery: 20 * time.Millisecond, OnChange: tr.on})
	ctx := context.Background()
	if err := c.Client.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	s.Pause()
	defer s.Resume()
	err := c.Client.Get(ctx, "k").Err()
	if !errors.Is(err, context.DeadlineExceeded) && !isTimeout(err) {
		t.Fatalf("Get on a hung Redis = %v, want a timeout", err)
	}
	tr.await(t, false)
	if c.Up() {
		t.Fatal("Up after a timeout")
	}
	for range 3 {
		if err := c.Client.Get(ctx, "k").Err(); !errors.Is(err, ErrDown) {
			t.Fatalf("Get with the circuit open = %v, want ErrDown", err)
		}
	}
	// A script and a pipeline are refused too.
	if err := redis.NewScript("return 1").Run(ctx, c.Client, []string{"k"}).Err(); !errors.Is(err, ErrDown) {
		t.Fatalf("script with the circuit open = %v, want ErrDown", err)
	}
	if _, err := c.Client.Pipelined(ctx, func(p redis.Pipeliner) error { p.Get(ctx, "k"); return nil }); !errors.Is(err, ErrDown) {
		t.Fatalf("pipeline with the circuit open = %v, want ErrDown", err)
	}
	s.Resume()
	tr.await(t, true)
	if v, err := c.Client.Get(ctx, "k").Result(); err != nil || v != "v" {
		t.Fatalf("Get after recovery = %q, %v", v, err)
	}
	if c.Errors() < 1 {
		t.Fatalf("Errors = %d, want at least 1", c.Errors())
	}
}

func isTimeout(err error) bool {
	var te interface{ Timeout() bool }
	return errors.As(err, &te) && te.Timeout()
}

// TestKilledRedisRecoversOnSamePort kills Redis and starts it again on
// the same port: the circuit opens and closes with no new client.
func TestKilledRedisRecoversOnSamePort(t *testing.T) {
	s := redistest.StartServer(t)
	tr := newTransitions()
	c := open(t, Options{URL: "redis://" + s.Addr, Timeout: time.Second, ProbeEvery: 20 * time.Millisecond, OnChange: tr.on})
	ctx := context.Background()
	if err := c.Client.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	s.Kill()
	if err := c.Client.Ping(ctx).Err(); err == nil {
		t.Fatal("Ping on a killed Redis succeeded")
	}
	tr.await(t, false)
	s.Restart()
	tr.await(t, true)
	if err := c.Client.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatalf("Set after restart: %v", err)
	}
}

// TestNotOutages checks that a missing key and a script error leave the
// circuit closed.
func TestNotOutages(t *testing.T) {
	s := redistest.StartServer(t)
	c := open(t, Options{URL: "redis://" + s.Addr, Timeout: time.Second})
	ctx := context.Background()
	if err := c.Client.Get(ctx, "missing").Err(); !errors.Is(err, redis.Nil) {
		t.Fatalf("Get of a missing key = %v", err)
	}
	if err := redis.NewScript("return redis.error_reply('nope')").Run(ctx, c.Client, []string{"k"}).Err(); err == nil {
		t.Fatal("failing script succeeded")
	}
	if !c.Up() || c.Errors() != 0 {
		t.Fatalf("Up %v, Errors %d after non-outage errors; want up with 0", c.Up(), c.Errors())
	}
}

// TestClusterAndACL opens a client on a 3-node cluster and a
// password-protected single server with an ACL user.
func TestClusterAndACL(t *testing.T) {
	cl := redistest.StartCluster(t, 3)
	// With the stores' scripts, loaded and checked on every master, on
	// keys of several slots.
	c := open(t, Options{URL: "redis://", Addrs: cl.Addrs(), Timeout: 250 * time.Millisecond,
		Scripts: storeScripts(), Keys: []string{"a", "b", "c", "d", "e", "caproxy:token:{x}:token"}})
	ctx := context.Background()
	// A cold cluster client dials and loads the slot map first.
	if err := c.WarmUp(ctx, 10*time.Second); err != nil {
		t.Fatalf("WarmUp on a cluster: %v", err)
	}
	if _, ok := c.Client.(*redis.ClusterClient); !ok {
		t.Fatalf("client for addrs is %T, want a cluster client", c.Client)
	}
	for _, k := range []string{"a", "b", "c", "d", "e"} { // several slots
		if err := c.Client.Set(ctx, k, k, 0).Err(); err != nil {
			t.Fatalf("cluster Set %s: %v", k, err)
		}
	}
	if err := c.probe(ctx); err != nil {
		t.Fatalf("cluster probe: %v", err)
	}

	s := redistest.StartServer(t, "--user", "default", "off", "--user", "caproxy", "on", ">s3cret", "~*", "&*", "+@all")
	acl := open(t, Options{URL: "redis://caproxy:s3cret@" + s.Addr + "/0", Timeout: time.Second})
	if err := acl.Client.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatalf("Set as ACL user: %v", err)
	}
	wrong := open(t, Options{URL: "redis://caproxy:wrong@" + s.Addr + "/0"})
	if err := wrong.Client.Set(ctx, "k", "v", 0).Err(); err == nil {
		t.Fatal("Set with a wrong password succeeded")
	}
}

// TestSentinel finds the master through a real Sentinel (redis.addrs with
// redis.master_name).
func TestSentinel(t *testing.T) {
	master := redistest.StartServer(t)
	sentinel := redistest.StartSentinel(t, "mymaster", master)
	c := open(t, Options{URL: "redis://", Addrs: []string{sentinel.Addr}, MasterName: "mymaster", Timeout: time.Second})
	ctx := context.Background()
	if err := c.WarmUp(ctx, 10*time.Second); err != nil {
		t.Fatalf("WarmUp through Sentinel: %v", err)
	}
	if err := c.Client.Set(ctx, "k", "through-sentinel", 0).Err(); err != nil {
		t.Fatalf("Set through Sentinel: %v", err)
	}
	direct := redis.NewClient(&redis.Options{Addr: master.Addr})
	defer direct.Close()
	if v, err := direct.Get(ctx, "k").Result(); err != nil || v != "through-sentinel" {
		t.Fatalf("the master holds %q, %v; want the value set through Sentinel", v, err)
	}
}
