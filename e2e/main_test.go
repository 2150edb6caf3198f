// Package e2e holds caproxy's end-to-end tests. They build the real binary
// once and start real caproxy and simulator processes on free loopback ports,
// driving them only as an operator or an app would: config files, flags,
// environment, signals, HTTP and exit codes.
//
// Every process's stdout and stderr are captured. When a test ends, and once
// more when the whole suite ends, every captured output is checked for the
// secrets the suite used (API keys, tokens) and for anything shaped like a
// simulator-issued upstream token, and for data-race reports.
package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/caproxy/caproxy/cloudagent"
	"github.com/caproxy/caproxy/cloudagent/sim"
	"github.com/caproxy/caproxy/internal/syncbuf"
)

// Bounds on waiting for processes; generous because the machine is shared
// and the binary may be built with -race. Tests never assert on elapsed time.
const (
	waitStart = 30 * time.Second // a process becomes ready
	waitExit  = 30 * time.Second // a process exits after a signal (drain included)
	waitEvent = 15 * time.Second // a log line, a refused connection
	pollEvery = 10 * time.Millisecond
)

// e2eVersion is stamped into the binary so -version can be checked.
const e2eVersion = "v0.0.0-e2e"

// binPath is the caproxy binary built by TestMain.
var binPath string

// Keys of the simulator's built-in accounts, which the shipped config and
// some tests use.
const (
	demoKey      = "demo-key"
	demoBasicKey = "demo-basic-key"
	demo2Key     = "demo2-key"
)

// Distinctive keys, given to caproxy through ${VAR} expansion and to the
// simulator through a -data file, so a leak cannot hide among common words.
var (
	secretDemoKey    = "e2e-secret-key-demo-" + randomHex(6)
	secretBasicKey   = "e2e-secret-key-basic-" + randomHex(6)
	secretLiteralKey = "e2e-secret-key-literal-" + randomHex(6)
)

// Environment variables that carry the distinctive keys into configs.
const (
	envDemoKey  = "E2E_DEMO_KEY"
	envBasicKey = "E2E_BASIC_KEY"
)

// upstreamTokenRun matches what the simulator issues as an upstream token:
// hex.EncodeToString of 16 random bytes, 32 lowercase hex digits (see
// serveGenerateToken in cloudagent/sim). A longer run would contain one.
var upstreamTokenRun = regexp.MustCompile(`[0-9a-f]{32,}`)

// leakCheck remembers every captured output and every secret of the suite.
var leakCheck struct {
	mu      sync.Mutex // protects the fields below
	secrets []string   // values no output may contain
	outputs []capturedOutput
}

// capturedOutput is one process's output, for the end-of-suite sweep.
type capturedOutput struct {
	name string
	out  func() string
}

func init() {
	leakCheck.secrets = []string{demoKey, demoBasicKey, demo2Key, secretDemoKey, secretBasicKey, secretLiteralKey}
}

// addSecret records a value learned during a test (a token) that no process
// output may contain.
func addSecret(s string) {
	if s == "" {
		return
	}
	leakCheck.mu.Lock()
	defer leakCheck.mu.Unlock()
	leakCheck.secrets = append(leakCheck.secrets, s)
}

func registerOutput(name string, out func() string) {
	leakCheck.mu.Lock()
	defer leakCheck.mu.Unlock()
	leakCheck.outputs = append(leakCheck.outputs, capturedOutput{name, out})
}

// leaks lists what is wrong with a process's output: a secret, an
// upstream-token-shaped run, a data race.
func leaks(out string) []string {
	leakCheck.mu.Lock()
	secrets := append([]string(nil), leakCheck.secrets...)
	leakCheck.mu.Unlock()
	var problems []string
	for _, s := range secrets {
		if strings.Contains(out, s) {
			problems = append(problems, fmt.Sprintf("contains the secret %q", s))
		}
	}
	for _, m := range upstreamTokenRun.FindAllString(out, 5) {
		problems = append(problems, fmt.Sprintf("contains %q, shaped like a simulator-issued upstream token", m))
	}
	if strings.Contains(out, "WARNING: DATA RACE") {
		problems = append(problems, "reports a data race")
	}
	return problems
}

// checkOutput fails t if out leaks anything (see leaks).
func checkOutput(t *testing.T, name, out string) {
	t.Helper()
	for _, p := range leaks(out) {
		t.Errorf("output of %s %s; output:\n%s", name, p, out)
	}
}

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "caproxy-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	binPath = filepath.Join(dir, "caproxy")
	args := []string{"build", "-o", binPath, "-ldflags", "-X main.version=" + e2eVersion}
	if raceEnabled {
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, "..")...)
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: go %s: %v\n%s", strings.Join(args, " "), err, out)
		return 1
	}
	code := m.Run()

	// Secrets learned late in the suite (tokens) are checked against the
	// output of every process, including those of earlier tests.
	leakCheck.mu.Lock()
	outputs := append([]capturedOutput(nil), leakCheck.outputs...)
	leakCheck.mu.Unlock()
	for _, o := range outputs {
		out := o.out()
		for _, p := range leaks(out) {
			fmt.Fprintf(os.Stderr, "e2e: output of %s %s; output:\n%s\n", o.name, p, out)
			code = 1
		}
	}
	return code
}

// randomHex returns 2n random lowercase hex digits.
func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// childEnv is this process's environment without anything that would change
// a config's meaning, plus extra ("NAME=value").
func childEnv(extra ...string) []string {
	var env []string
	gorace := ""
	for _, kv := range os.Environ() {
		switch {
		case strings.HasPrefix(kv, "CLOUDAGENT_API_KEY="), strings.HasPrefix(kv, "E2E_"):
		case strings.HasPrefix(kv, "GORACE="):
			gorace = strings.TrimPrefix(kv, "GORACE=") + " "
		default:
			env = append(env, kv)
		}
	}
	// A -race binary otherwise sleeps a second before a clean exit.
	env = append(env, "GORACE="+gorace+"atexit_sleep_ms=0")
	return append(env, extra...)
}

// process is a running caproxy binary whose output is captured. It is
// killed, if still running, when its test ends.
type process struct {
	name string
	cmd  *exec.Cmd
	out  syncbuf.Buffer
	done chan struct{} // closed when the process has exited
}

// startProcess starts the binary with args and env added to the environment.
func startProcess(t *testing.T, name string, env []string, args ...string) *process {
	t.Helper()
	p := &process{name: name, done: make(chan struct{})}
	p.cmd = exec.Command(binPath, args...)
	p.cmd.Env = childEnv(env...)
	p.cmd.Stdout = &p.out
	p.cmd.Stderr = &p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	registerOutput(t.Name()+": "+name, p.out.String)
	go func() {
		p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		// SIGTERM rather than SIGKILL, so buffered log lines are written
		// and checked too, and every process shows that it stops cleanly.
		if !p.exited() {
			p.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-p.done:
				if code := p.cmd.ProcessState.ExitCode(); code != 0 {
					t.Errorf("%s exited with %d after SIGTERM, want 0; output:\n%s", name, code, p.out.String())
				}
			case <-time.After(waitExit):
				p.cmd.Process.Kill()
				<-p.done
				t.Errorf("%s did not exit within %v of SIGTERM; output:\n%s", name, waitExit, p.out.String())
			}
		}
		checkOutput(t, name, p.out.String())
	})
	return p
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// signal sends sig to the process.
func (p *process) signal(t *testing.T, sig os.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v to %s: %v", sig, p.name, err)
	}
}

// wait waits for the process to exit and returns its exit code.
func (p *process) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(waitExit):
		t.Fatalf("%s did not exit within %v; output:\n%s", p.name, waitExit, p.out.String())
		return -1
	}
}

// waitLog waits until the output contains substr at least n times.
func (p *process) waitLog(t *testing.T, substr string, n int) {
	t.Helper()
	eventually(t, waitEvent, fmt.Sprintf("%s to log %q (%d times)", p.name, substr, n), func() bool {
		return strings.Count(p.out.String(), substr) >= n
	}, p)
}

// logLine returns the first output line containing substr, or "".
func (p *process) logLine(substr string) string {
	for _, line := range strings.Split(p.out.String(), "\n") {
		if strings.Contains(line, substr) {
			return line
		}
	}
	return ""
}

// eventually polls cond until it holds, failing t after timeout or as soon as
// p (if not nil) exits, with p's output.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool, p *process) {
	t.Helper()
	if err := poll(timeout, what, cond, p); err != nil {
		t.Fatal(err)
	}
}

// errExited is wrapped by poll's error when the process it watched exited.
var errExited = errors.New("process exited")

// poll polls cond until it holds, giving up after timeout or as soon as p
// (if not nil) exits; its error carries p's output.
func poll(timeout time.Duration, what string, cond func() bool, p *process) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if p != nil && p.exited() {
			return fmt.Errorf("waiting for %s: %s %w (code %d); output:\n%s", what, p.name, errExited, p.cmd.ProcessState.ExitCode(), p.out.String())
		}
		if time.Now().After(deadline) {
			out := ""
			if p != nil {
				out = "; output of " + p.name + ":\n" + p.out.String()
			}
			return fmt.Errorf("gave up after %v waiting for %s%s", timeout, what, out)
		}
		time.Sleep(pollEvery)
	}
	return nil
}

// startAttempts bounds retries of a start that lost its port: freeAddr's
// port may be taken by another process before ours binds it.
const startAttempts = 3

// lostPort reports whether err says a process could not bind its port.
func lostPort(err error, p *process) bool {
	return errors.Is(err, errExited) && strings.Contains(p.out.String(), "address already in use")
}

// getsOK reports whether GET url answers 200.
func getsOK(url string) bool {
	hc := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := hc.Get(url)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// runResult is how a process that runs to completion ended.
type runResult struct {
	code           int
	stdout, stderr string
}

// run runs the binary to completion (bounded) and checks its output for leaks.
func run(t *testing.T, env []string, args ...string) runResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitExit)
	defer cancel()
	cmd := exec.CommandContext(ctx, binPath, args...)
	cmd.Env = childEnv(env...)
	var stdout, stderr syncbuf.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	name := "caproxy " + strings.Join(args, " ")
	registerOutput(t.Name()+": "+name, func() string { return stdout.String() + stderr.String() })
	checkOutput(t, name, stdout.String()+stderr.String())
	if ctx.Err() != nil {
		t.Fatalf("%s did not exit within %v; output:\n%s%s", name, waitExit, stdout.String(), stderr.String())
	}
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		t.Fatalf("%s: %v", name, err)
	}
	return runResult{cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()}
}

// freeAddr returns a loopback address with a port that was free just now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// account is one entry of a config's accounts list. Key is written into the
// YAML as is, so it may be a ${VAR} reference.
type account struct {
	User, Key, Auth string
}

// proxyConfig renders a caproxy config; zero fields get test defaults.
type proxyConfig struct {
	Upstream  string    // default builtin:sim
	Accounts  []account // default demo / demo-key / token
	TTL       string    // cache.ttl; default 30s
	LogLevel  string    // default info
	LogFormat string    // default text
	Redis     string    // redis.url; default none
	// RedisKeys are more lines of the redis section ("key: value"), such
	// as timeout, on_failure, replicas or addrs.
	RedisKeys []string
	StaleTTL  string // cache.stale_ttl; default 10m
	PerMinute int    // limit.upstream_per_minute; default 50
	Window    string // limit.window; default 60s
}

func (c proxyConfig) render(listen, admin string) string {
	or := func(v, def string) string {
		if v == "" {
			return def
		}
		return v
	}
	accounts := c.Accounts
	if accounts == nil {
		accounts = []account{{"demo", demoKey, "token"}}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "listen: %s\nadmin_listen: %s\n", listen, admin)
	fmt.Fprintf(&b, "upstream:\n  url: %s\n  timeout: 10s\n", or(c.Upstream, "builtin:sim"))
	b.WriteString("accounts:\n")
	for _, a := range accounts {
		fmt.Fprintf(&b, "  - user_name: %s\n    api_key: %s\n    auth: %s\n", a.User, a.Key, or(a.Auth, "token"))
	}
	fmt.Fprintf(&b, "cache:\n  ttl: %s\n  stale_ttl: %s\n", or(c.TTL, "30s"), or(c.StaleTTL, "10m"))
	perMinute := c.PerMinute
	if perMinute == 0 {
		perMinute = 50
	}
	fmt.Fprintf(&b, "limit:\n  upstream_per_minute: %d\n  window: %s\n", perMinute, or(c.Window, "60s"))
	fmt.Fprintf(&b, "log:\n  level: %s\n  format: %s\n", or(c.LogLevel, "info"), or(c.LogFormat, "text"))
	if c.Redis != "" || len(c.RedisKeys) > 0 {
		b.WriteString("redis:\n")
		if c.Redis != "" {
			fmt.Fprintf(&b, "  url: %s\n", c.Redis)
		}
		for _, k := range c.RedisKeys {
			fmt.Fprintf(&b, "  %s\n", k)
		}
	}
	return b.String()
}

// caproxy is a running proxy process.
type caproxy struct {
	*process
	cfgPath string
	listen  string // host:port of the proxy
	admin   string // host:port of the admin listener
}

// url returns the proxy's URL for path.
func (c *caproxy) url(path string) string { return "http://" + c.listen + path }

// adminURL returns the admin listener's URL for path.
func (c *caproxy) adminURL(path string) string { return "http://" + c.admin + path }

// writeConfig replaces the config file atomically, so a reload never reads
// half of it.
func (c *caproxy) writeConfig(t *testing.T, text string) {
	t.Helper()
	tmp := c.cfgPath + ".tmp"
	if err := os.WriteFile(tmp, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, c.cfgPath); err != nil {
		t.Fatal(err)
	}
}

// startProxy starts caproxy with cfg on fresh loopback ports and waits until
// it is ready.
func startProxy(t *testing.T, cfg proxyConfig, env ...string) *caproxy {
	t.Helper()
	return startProxyText(t, cfg.render, env...)
}

// startProxyText starts caproxy on fresh loopback ports with the config text
// that render returns for them, and waits until /readyz answers 200.
func startProxyText(t *testing.T, render func(listen, admin string) string, env ...string) *caproxy {
	t.Helper()
	return startProxyIn(t, t.TempDir(), render, env...)
}

// startProxyIn is startProxyText with config.yaml written in dir, which it
// keeps across starts, and so the state file that a single node keeps
// beside its config by default.
func startProxyIn(t *testing.T, dir string, render func(listen, admin string) string, env ...string) *caproxy {
	t.Helper()
	for attempt := 1; ; attempt++ {
		c := &caproxy{cfgPath: filepath.Join(dir, "config.yaml"), listen: freeAddr(t), admin: freeAddr(t)}
		c.writeConfig(t, render(c.listen, c.admin))
		c.process = startProcess(t, "caproxy", env, "-config", c.cfgPath)
		err := poll(waitStart, "caproxy /readyz to answer 200", func() bool { return getsOK(c.adminURL("/readyz")) }, c.process)
		if err == nil {
			return c
		}
		if attempt == startAttempts || !lostPort(err, c.process) {
			t.Fatal(err)
		}
	}
}

// simulator is a running "caproxy sim" process.
type simulator struct {
	*process
	addr string
}

// url is the simulator's base URL, for upstream.url.
func (s *simulator) url() string { return "http://" + s.addr }

// startSim starts "caproxy sim" on a fresh loopback port with extra flags and
// waits until it serves /sim/stats.
func startSim(t *testing.T, flags ...string) *simulator {
	t.Helper()
	for attempt := 1; ; attempt++ {
		s := &simulator{addr: freeAddr(t)}
		s.process = startProcess(t, "caproxy sim", nil, append([]string{"sim", "-listen", s.addr}, flags...)...)
		err := poll(waitStart, "the simulator's /sim/stats to answer 200", func() bool { return getsOK(s.url() + sim.PathStats) }, s.process)
		if err == nil {
			return s
		}
		if attempt == startAttempts || !lostPort(err, s.process) {
			t.Fatal(err)
		}
	}
}

// stats reads the simulator's counters.
func (s *simulator) stats(t *testing.T, c *client) sim.Stats {
	t.Helper()
	r := c.do(http.MethodGet, s.url()+sim.PathStats, "")
	if r.code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", sim.PathStats, r.code, r.body)
	}
	var st sim.Stats
	if err := json.Unmarshal([]byte(r.body), &st); err != nil {
		t.Fatalf("GET %s: %v in %s", sim.PathStats, err, r.body)
	}
	return st
}

// writeSimData writes a simulator -data file with accounts (User, Key and
// Auth taken literally) and returns its path.
func writeSimData(t *testing.T, accounts ...account) string {
	t.Helper()
	type acct struct {
		UserName string `json:"userName"`
		APIKey   string `json:"apiKey"`
		Auth     string `json:"auth"`
	}
	var data struct {
		Accounts []acct `json:"accounts"`
	}
	for _, a := range accounts {
		data.Accounts = append(data.Accounts, acct{a.User, a.Key, a.Auth})
	}
	b, err := json.Marshal(data)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "sim-data.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// client is an HTTP client of one test, with its own connections.
type client struct {
	t  *testing.T
	hc *http.Client
}

func newClient(t *testing.T) *client {
	tr := &http.Transport{MaxIdleConnsPerHost: 100}
	t.Cleanup(tr.CloseIdleConnections)
	return &client{t: t, hc: &http.Client{Transport: tr, Timeout: waitEvent}}
}

// response is a fully read HTTP response.
type response struct {
	code   int
	header http.Header
	body   string
}

// try makes a request; hdr holds header name, value pairs. Safe to call from
// any goroutine.
func (c *client) try(method, url, body string, hdr ...string) (response, error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return response{}, err
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return response{}, err
	}
	return response{resp.StatusCode, resp.Header, string(b)}, nil
}

// do is try that fails the test on a transport error.
func (c *client) do(method, url, body string, hdr ...string) response {
	c.t.Helper()
	r, err := c.try(method, url, body, hdr...)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, url, err)
	}
	return r
}

// ahtBody is an AHT request body for one agent.
func ahtBody(user, agent string) string {
	b, _ := json.Marshal(cloudagent.AHTRequest{UserName: user, AgentID: agent})
	return string(b)
}

// aht asks the proxy for an agent's AHT with an apiKey header.
func (c *client) aht(p *caproxy, key, user, agent string) response {
	c.t.Helper()
	return c.do(http.MethodPost, p.url(cloudagent.PathAHT), ahtBody(user, agent), cloudagent.HeaderAPIKey, key)
}

// checkAgentAHT checks a successful agent AHT answer with the given X-Cache.
func checkAgentAHT(t *testing.T, r response, agent, xcache string) {
	t.Helper()
	if err := agentAHTProblem(r, agent, xcache); err != nil {
		t.Fatal(err)
	}
}

var hmsRe = regexp.MustCompile(`^\d\d:\d\d:\d\d$`)

// agentAHTProblem describes how r fails to be a successful agent AHT answer
// with the given X-Cache ("" for any), or returns nil.
func agentAHTProblem(r response, agent, xcache string) error {
	if r.code != http.StatusOK {
		return fmt.Errorf("AHT of %s: HTTP %d, want 200; body %s", agent, r.code, r.body)
	}
	if got := r.header.Get("X-Cache"); xcache != "" && got != xcache {
		return fmt.Errorf("AHT of %s: X-Cache %q, want %q", agent, got, xcache)
	}
	var env cloudagent.Response
	var msg cloudagent.AgentAHT
	if err := json.Unmarshal([]byte(r.body), &env); err != nil || env.Status != cloudagent.StatusSuccess {
		return fmt.Errorf("AHT of %s: body %s, want status success", agent, r.body)
	}
	if err := json.Unmarshal(env.Message, &msg); err != nil || msg.AgentID != agent || !hmsRe.MatchString(msg.AHT) {
		return fmt.Errorf("AHT of %s: message %s, want AgentID %s and AHT HH:MM:SS", agent, env.Message, agent)
	}
	return nil
}

// checkError checks a CloudAgent-shaped error answer.
func checkError(t *testing.T, r response, code int, msg string) {
	t.Helper()
	got, ok := cloudagent.ErrorMessage([]byte(r.body))
	if r.code != code || !ok || got != msg {
		t.Fatalf("got HTTP %d %s, want %d with message %q", r.code, r.body, code, msg)
	}
}

// connRefused reports whether a new TCP connection to addr is refused.
func connRefused(addr string) bool {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err == nil {
		conn.Close()
		return false
	}
	return errors.Is(err, syscall.ECONNREFUSED)
}
