package redisconn

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/caproxy/caproxy/credential"
	"github.com/caproxy/caproxy/internal/redistest"
	"github.com/caproxy/caproxy/limit"
)

// unusableLog records OnUnusable calls.
type unusableLog struct {
	mu   sync.Mutex
	errs []error
}

func (u *unusableLog) on(err error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.errs = append(u.errs, err)
}

func (u *unusableLog) count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.errs)
}

// storeScripts are the scripts caproxy's stores run, as the daemon passes
// them.
func storeScripts() []string {
	return append(limit.RedisScripts(), credential.RedisScripts()...)
}

// aclUser sets up user "caproxy" (password pw) with rules on the server
// at addr, through its default (unrestricted) user.
func aclUser(t *testing.T, addr string, rules ...any) {
	t.Helper()
	admin := redis.NewClient(&redis.Options{Addr: addr})
	defer admin.Close()
	args := append([]any{"ACL", "SETUSER", "caproxy", "reset", "on", ">pw"}, rules...)
	if err := admin.Do(context.Background(), args...).Err(); err != nil {
		t.Fatalf("ACL SETUSER %v: %v", rules, err)
	}
}

// TestUnusableRedisUser opens the connection as users each lacking
// something caproxy's scripts need: WarmUp reports it (naming what is
// missing), the circuit stays open (Up false), Unusable says why, and
// OnUnusable hears it once; a full user passes.
func TestUnusableRedisUser(t *testing.T) {
	s := redistest.StartServer(t)
	for _, tc := range []struct {
		name  string
		rules []any
		want  string // in the error; "" for a usable user
	}{
		{"no eval, evalsha or script", []any{"~*", "+@all", "-eval", "-evalsha", "-script"}, "'script|load'"},
		{"no evalsha", []any{"~*", "+@all", "-evalsha"}, "'evalsha'"},
		{"no eval", []any{"~*", "+@all", "-eval"}, "'eval'"},
		{"keys outside its pattern", []any{"~other:*", "+@all"}, "keys"},
		{"a command the scripts call", []any{"~*", "+@all", "-zadd"}, "ZADD on key caproxy:check"},
		{"a command the stores run", []any{"~*", "+@all", "-unlink"}, "UNLINK"},
		{"no ping", []any{"~*", "+@all", "-ping"}, "'ping'"},
		{"the README's least ACL without TIME", []any{"~caproxy:*", "+@read", "+@write", "+@scripting", "+@keyspace", "+ping"}, "TIME"},
		{"the README's least ACL", []any{"~caproxy:*", "+@read", "+@write", "+@scripting", "+@keyspace", "+time", "+ping"}, ""},
		{"everything", []any{"~*", "+@all"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			aclUser(t, s.Addr, tc.rules...)
			tr := newTransitions()
			var ul unusableLog
			c := open(t, Options{URL: "redis://caproxy:pw@" + s.Addr, Timeout: time.Second, ProbeEvery: 20 * time.Millisecond,
				Scripts: storeScripts(), Commands: []string{"GET", "SET", "UNLINK", "SCAN", "DEL"},
				Keys: []string{"caproxy:check"}, OnChange: tr.on, OnUnusable: ul.on})
			err := c.WarmUp(context.Background(), 5*time.Second)
			if tc.want == "" {
				if err != nil || !c.Up() || c.Unusable() != nil {
					t.Fatalf("full user: WarmUp %v, Up %v, Unusable %v; want nil, true, nil", err, c.Up(), c.Unusable())
				}
				return
			}
			if !errors.Is(err, ErrUnusable) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("WarmUp = %v, want ErrUnusable naming %s", err, tc.want)
			}
			tr.await(t, false)
			if c.Up() {
				t.Fatal("Up with a user that cannot run the scripts")
			}
			if u := c.Unusable(); !errors.Is(u, ErrUnusable) || u.Error() != err.Error() {
				t.Fatalf("Unusable = %v, want %v", u, err)
			}
			// The probe keeps checking, without telling it again.
			probesRan := time.Now()
			for time.Since(probesRan) < 10*20*time.Millisecond {
				if got := c.Client.Ping(context.Background()).Err(); !errors.Is(got, ErrDown) {
					t.Fatalf("a call while unusable = %v, want ErrDown", got)
				}
				time.Sleep(20 * time.Millisecond)
			}
			if n := ul.count(); n != 1 {
				t.Fatalf("OnUnusable called %d times, want once", n)
			}
			// Granted what was missing, the next probe closes the circuit.
			aclUser(t, s.Addr, "~*", "+@all")
			tr.await(t, true)
			if !c.Up() || c.Unusable() != nil {
				t.Fatalf("after the grant: Up %v, Unusable %v", c.Up(), c.Unusable())
			}
		})
	}
}

// TestUnusableAfterReconnect: Redis comes back from an outage (restarted,
// its ACL now without EVALSHA): the probe checks again before closing the
// circuit, and says what is missing.
func TestUnusableAfterReconnect(t *testing.T) {
	s := redistest.StartServer(t)
	aclUser(t, s.Addr, "~*", "+@all")
	tr := newTransitions()
	var ul unusableLog
	c := open(t, Options{URL: "redis://caproxy:pw@" + s.Addr, Timeout: time.Second, ProbeEvery: 20 * time.Millisecond,
		Scripts: storeScripts(), Keys: []string{"caproxy:check"}, OnChange: tr.on, OnUnusable: ul.on})
	if err := c.WarmUp(context.Background(), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	s.Kill()
	if err := c.Client.Ping(context.Background()).Err(); err == nil {
		t.Fatal("Ping on a killed Redis succeeded")
	}
	tr.await(t, false)
	if ul.count() != 0 || c.Unusable() != nil {
		t.Fatalf("an outage reported as unusable: %v", c.Unusable())
	}
	s.Restart()
	aclUser(t, s.Addr, "~*", "+@all", "-evalsha")
	deadline := time.Now().Add(10 * time.Second)
	for ul.count() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("Redis back without EVALSHA: not reported unusable")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if u := c.Unusable(); !errors.Is(u, ErrUnusable) || !strings.Contains(u.Error(), "'evalsha'") || c.Up() {
		t.Fatalf("back without EVALSHA: Unusable %v, Up %v; want EVALSHA named, down", u, c.Up())
	}
	aclUser(t, s.Addr, "~*", "+@all")
	tr.await(t, true)
}

// TestCommandsOfScripts reads the commands the stores' scripts call.
func TestCommandsOfScripts(t *testing.T) {
	got := strings.Join(commands(storeScripts(), []string{"get"}), " ")
	for _, want := range []string{"ZADD", "ZRANGE", "ZREMRANGEBYSCORE", "TIME", "PEXPIRE", "HGET", "HSET", "SET", "DEL", "GET", "PTTL", "HMGET"} {
		if !strings.Contains(" "+got+" ", " "+want+" ") {
			t.Errorf("commands = %s, missing %s", got, want)
		}
	}
	if strings.Count(" "+got+" ", " GET ") != 1 {
		t.Errorf("commands = %s: GET not once", got)
	}
}
