package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/caproxy/caproxy/cloudagent"
	"github.com/caproxy/caproxy/cloudagent/sim"
)

// kill9 kills p with SIGKILL, as a crash would, and waits for it to go.
func kill9(t *testing.T, p *process) {
	t.Helper()
	p.signal(t, syscall.SIGKILL)
	p.wait(t)
}

// stop stops p with SIGTERM and checks it exits cleanly.
func stop(t *testing.T, p *process) {
	t.Helper()
	p.signal(t, syscall.SIGTERM)
	if code := p.wait(t); code != 0 {
		t.Fatalf("%s exited with %d after SIGTERM; output:\n%s", p.name, code, p.out.String())
	}
}

// TestRestartsKeepToken restarts a single node (no Redis, the state file
// beside its config by default) 5 times within the hour, stopping it
// cleanly or killing it (SIGKILL) in turn, with one miss after each start:
// the simulator generates one upstream token in all, and accepts it on
// every run. Each generation would log out every other user of the account
// and CloudAgent allows 10 an hour.
func TestRestartsKeepToken(t *testing.T) {
	s := startSim(t)
	c := newClient(t)
	dir := t.TempDir()
	for run := range 5 {
		p := startProxyIn(t, dir, proxyConfig{Upstream: s.url()}.render)
		agent := fmt.Sprintf("agent%03d", run+1)
		checkAgentAHT(t, c.aht(p, demoKey, "demo", agent), agent, "MISS")
		if run%2 == 0 {
			stop(t, p.process)
		} else {
			kill9(t, p.process)
		}
	}
	st := s.stats(t, c)
	if st.TokenGenerations != 1 || st.AHTAuthFailed != 0 || st.AHTAdmitted != 5 {
		t.Fatalf("simulator after 5 runs with one miss each: %d token generations, %d calls refused for the token, %d AHT calls; want 1, 0, 5",
			st.TokenGenerations, st.AHTAuthFailed, st.AHTAdmitted)
	}
	fi, err := os.Stat(filepath.Join(dir, "config.yaml.state"))
	if err != nil {
		t.Fatalf("no state file beside the config: %v", err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file mode %v, want 0600 (it holds the upstream token)", fi.Mode().Perm())
	}
}

// TestKillKeepsBudget spends a single node's whole budget (50 distinct
// misses), kills it (SIGKILL), restarts it and sends 60 more distinct
// misses within the same minute: the budget spent before the crash still
// counts, so the restarted node answers them 429 itself and the simulator
// refuses no call for its limit.
func TestKillKeepsBudget(t *testing.T) {
	s := startSim(t) // CloudAgent's 50 a minute
	c := newClient(t)
	dir := t.TempDir()
	cfg := proxyConfig{Upstream: s.url()} // limit.window 60s: CloudAgent's own
	p := startProxyIn(t, dir, cfg.render)
	start := time.Now()
	for i := 1; i <= 50; i++ {
		agent := fmt.Sprintf("agent%03d", i)
		checkAgentAHT(t, c.aht(p, demoKey, "demo", agent), agent, "MISS")
	}
	kill9(t, p.process)

	p = startProxyIn(t, dir, cfg.render)
	refused := 0
	for i := 51; i <= 110; i++ {
		agent := fmt.Sprintf("agent%03d", i)
		r := c.aht(p, demoKey, "demo", agent)
		if r.code == http.StatusTooManyRequests {
			checkError(t, r, http.StatusTooManyRequests, cloudagent.MsgLimitExceeded)
			refused++
		}
	}
	// Judged only if all of it fell inside one window: otherwise the
	// first calls may rightly have freed their slots.
	if took := time.Since(start); took >= 55*time.Second {
		t.Fatalf("the 110 calls and the restart took %v, more than the window allows judging; machine too slow", took)
	}
	st := s.stats(t, c)
	if st.AHTLimited != 0 || st.LimitViolations != 0 || st.MaxArrivalsInWindow > 50 || st.AHTAdmitted != 50 {
		t.Errorf("simulator: %d AHT calls refused for the limit (%d violations in all), most in a window %d, %d admitted; want 0, 0, at most 50, 50",
			st.AHTLimited, st.LimitViolations, st.MaxArrivalsInWindow, st.AHTAdmitted)
	}
	if refused != 60 {
		t.Errorf("the restarted node refused %d of 60 misses with 429, want all 60 (the budget was spent before the crash)", refused)
	}
	if t.Failed() {
		t.Logf("output of the restarted node:\n%s", p.out.String())
	}
}

// TestKillMidBurst kills a single node (SIGKILL) while a burst of misses
// is in flight, some sent, some about to be, restarts it and sends 60 more
// distinct misses within the minute: whatever the kill interrupted, the
// simulator sees no more than 50 calls in any minute and refuses none for
// its limit (a slot is on disk before its call goes out).
func TestKillMidBurst(t *testing.T) {
	s := startSim(t, "-latency", "300ms") // answers slowly: calls stay in flight
	c := newClient(t)
	dir := t.TempDir()
	cfg := proxyConfig{Upstream: s.url()}
	p := startProxyIn(t, dir, cfg.render)
	start := time.Now()
	var wg sync.WaitGroup
	for i := 1; i <= 80; i++ {
		wg.Go(func() {
			c.try(http.MethodPost, p.url(cloudagent.PathAHT), ahtBody("demo", fmt.Sprintf("agent%03d", i)), cloudagent.HeaderAPIKey, demoKey)
		})
	}
	eventually(t, waitEvent, "20 calls to reach the simulator", func() bool {
		st, err := simStats(s)
		return err == nil && st.AHTCalls >= 20
	}, p.process)
	kill9(t, p.process)
	wg.Wait()

	p = startProxyIn(t, dir, cfg.render)
	for i := 101; i <= 160; i++ {
		c.aht(p, demoKey, "demo", fmt.Sprintf("agent%03d", i))
	}
	if took := time.Since(start); took >= 55*time.Second {
		t.Fatalf("the burst, the restart and 60 calls took %v, more than the window allows judging; machine too slow", took)
	}
	// The simulator counts a call when it arrives (its latency comes
	// after), so every call sent is counted by now.
	st := s.stats(t, c)
	if st.AHTLimited != 0 || st.LimitViolations != 0 || st.MaxArrivalsInWindow > 50 {
		t.Errorf("simulator: %d AHT calls refused for the limit (%d violations in all), most in a window %d of %d calls; want 0, 0, at most 50",
			st.AHTLimited, st.LimitViolations, st.MaxArrivalsInWindow, st.AHTCalls)
	}
	if t.Failed() {
		t.Logf("output of the restarted node:\n%s", p.out.String())
	}
}

// simStats reads the simulator's counters without a test to fail, for
// polling from eventually.
func simStats(s *simulator) (sim.Stats, error) {
	var st sim.Stats
	resp, err := http.Get(s.url() + sim.PathStats)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// TestStateFileLocked starts a second single node on the state file of a
// running one: it refuses to start with one line saying why, rather than
// share (and double) the budget.
func TestStateFileLocked(t *testing.T) {
	s := startSim(t)
	dir := t.TempDir()
	startProxyIn(t, dir, proxyConfig{Upstream: s.url()}.render)
	other := t.TempDir()
	cfg := proxyConfig{Upstream: s.url()}.render(freeAddr(t), freeAddr(t)) + "state:\n  dir: " + dir + "\n"
	path := filepath.Join(other, "config.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	r := run(t, nil, "-config", path)
	if r.code == 0 || !strings.Contains(r.stderr, "locked by another process") {
		t.Fatalf("second caproxy on a state file in use: exit %d, stderr %q; want non-zero and a locked error", r.code, r.stderr)
	}
	if r := run(t, nil, "-config", path, "-check"); r.code != 0 {
		t.Fatalf("-check with the state file in use: exit %d, stderr %q; want 0 (the directory is fine)", r.code, r.stderr)
	}
}

// TestCheckStateDir checks that -check refuses a state.dir that cannot
// hold the state file, and accepts "" (state in memory only).
func TestCheckStateDir(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		name, value string
		ok          bool
	}{
		{"missing", filepath.Join(dir, "missing"), false},
		{"off", `""`, true},
	} {
		path := filepath.Join(dir, tt.name+".yaml")
		cfg := proxyConfig{}.render(freeAddr(t), freeAddr(t)) + "state:\n  dir: " + tt.value + "\n"
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		r := run(t, nil, "-config", path, "-check")
		if (r.code == 0) != tt.ok || (!tt.ok && !strings.Contains(r.stderr, "state.dir")) {
			t.Errorf("%s state.dir: -check exit %d, stderr %q; want ok %v", tt.name, r.code, r.stderr, tt.ok)
		}
	}
}

// TestConfigsSideBySide starts two single nodes whose configs sit in one
// directory: each keeps a state file named after its config
// (a.yaml.state, b.yaml.state), so neither finds the other's locked.
func TestConfigsSideBySide(t *testing.T) {
	s := startSim(t)
	dir := t.TempDir()
	for _, name := range []string{"a.yaml", "b.yaml"} {
		c := &caproxy{cfgPath: filepath.Join(dir, name), listen: freeAddr(t), admin: freeAddr(t)}
		c.writeConfig(t, proxyConfig{Upstream: s.url()}.render(c.listen, c.admin))
		c.process = startProcess(t, "caproxy-"+name, nil, "-config", c.cfgPath)
		if err := poll(waitStart, name+"'s caproxy /readyz to answer 200", func() bool { return getsOK(c.adminURL("/readyz")) }, c.process); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(dir, name+".state")); err != nil {
			t.Fatalf("no state file named after %s: %v", name, err)
		}
	}
}
