package e2e

import (
	"context"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/caproxy/caproxy/cloudagent"
	"github.com/caproxy/caproxy/internal/redistest"
)

// unusableLog is what caproxy logs, once, when its Redis user lacks a
// permission it needs.
const unusableLog = "redis answers but caproxy may not use it"

// TestRedisUserWithoutEval starts caproxy on Redis as an ACL user that may
// not run scripts (issue 19 item 5): it says so once in its log, naming
// the permission, caproxy_redis_up is 0, /readyz is not ready and misses
// are refused; once the user is granted what it lacks, caproxy serves
// misses again and is ready, without a restart.
func TestRedisUserWithoutEval(t *testing.T) {
	s := redistest.StartServer(t)
	admin := redis.NewClient(&redis.Options{Addr: s.Addr})
	defer admin.Close()
	setUser := func(rules ...any) {
		t.Helper()
		args := append([]any{"ACL", "SETUSER", "caproxy", "reset", "on", ">pw"}, rules...)
		if err := admin.Do(context.Background(), args...).Err(); err != nil {
			t.Fatalf("ACL SETUSER: %v", err)
		}
	}
	setUser("~*", "+@all", "-eval", "-evalsha", "-script")

	c := newClient(t)
	o := &outage{t: t, c: c} // for plainMetric
	sim := startSim(t, "-data", writeSimData(t, account{"demo", secretDemoKey, "token"}))
	cfg := proxyConfig{Upstream: sim.url(), Accounts: []account{{"demo", "${" + envDemoKey + "}", "token"}},
		Redis: "redis://caproxy:pw@" + s.Addr + "/0"}
	// Not startProxy: it waits for a ready /readyz, which must not come.
	p := &caproxy{cfgPath: filepath.Join(t.TempDir(), "config.yaml"), listen: freeAddr(t), admin: freeAddr(t)}
	p.writeConfig(t, cfg.render(p.listen, p.admin))
	p.process = startProcess(t, "caproxy", []string{envDemoKey + "=" + secretDemoKey}, "-config", p.cfgPath)
	var ready response
	eventually(t, waitStart, "caproxy /readyz to answer", func() bool {
		r, err := c.try(http.MethodGet, p.adminURL("/readyz"), "")
		ready = r
		return err == nil
	}, p.process)
	if ready.code != http.StatusServiceUnavailable || !strings.Contains(ready.body, "redis unusable") {
		t.Errorf("/readyz with a Redis user that may not run scripts: %d %q, want 503 naming redis", ready.code, ready.body)
	}
	p.waitLog(t, unusableLog, 1)
	if line := p.logLine(unusableLog); !strings.Contains(line, "script|load") {
		t.Errorf("the log line does not name the missing permission: %s", line)
	}
	if up := o.plainMetric(p, "caproxy_redis_up"); up != "0" {
		t.Errorf("caproxy_redis_up = %q with an unusable Redis user, want 0", up)
	}
	miss := c.do(http.MethodPost, p.url(cloudagent.PathAHT), ahtBody("demo", "agent001"), cloudagent.HeaderAPIKey, secretDemoKey)
	if miss.code != http.StatusServiceUnavailable {
		t.Errorf("miss with an unusable Redis user: %d %s, want 503", miss.code, miss.body)
	}

	setUser("~*", "+@all")
	eventually(t, waitEvent, "/readyz ready once the user may run scripts", func() bool {
		r, err := c.try(http.MethodGet, p.adminURL("/readyz"), "")
		return err == nil && r.code == http.StatusOK && r.body == "ready\n"
	}, p.process)
	if up := o.plainMetric(p, "caproxy_redis_up"); up != "1" {
		t.Errorf("caproxy_redis_up = %q after the grant, want 1", up)
	}
	// The token source looks at the store again a moment after it failed
	// (as after an outage), so misses come back within that.
	var last error
	eventually(t, waitEvent, "a miss served after the grant", func() bool {
		miss = c.do(http.MethodPost, p.url(cloudagent.PathAHT), ahtBody("demo", "agent002"), cloudagent.HeaderAPIKey, secretDemoKey)
		last = agentAHTProblem(miss, "agent002", "MISS")
		return last == nil
	}, p.process)
	if n := strings.Count(p.out.String(), unusableLog); n != 1 {
		t.Errorf("logged %q %d times, want once", unusableLog, n)
	}
}
