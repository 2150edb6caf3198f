package deploy_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caproxy/caproxy/internal/syncbuf"
	"github.com/caproxy/caproxy/internal/testport"
)

// binary is the caproxy built for these tests by TestMain.
var binary string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "caproxy-deploy-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	binary = filepath.Join(dir, "caproxy")
	build := exec.Command("go", "build", "-o", binary, ".")
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// freePort is a free loopback port in 27500-27999 (this package's range;
// CAPROXY_TEST_PORTS=lo-hi chooses another).
func freePort(t *testing.T) string { return testport.Free(t, 27500, 27999) }

// caproxy is a running caproxy process.
type caproxy struct {
	proxy, admin string // base URLs
	token        string // admin token, if any
	log          *syncbuf.Buffer
}

// start runs the binary on config (a file) with env until the test ends
// (at most a minute), and waits for /readyz.
func start(t *testing.T, config string, proxyAddr, adminAddr, token string, env ...string) *caproxy {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	cmd := exec.CommandContext(ctx, binary, "-config", config)
	cmd.Env = append(os.Environ(), env...)
	c := &caproxy{proxy: "http://" + proxyAddr, admin: "http://" + adminAddr, token: token, log: &syncbuf.Buffer{}}
	cmd.Stdout, cmd.Stderr = c.log, c.log
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get(c.admin + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return c
			}
		}
		select {
		case <-done:
			t.Fatalf("caproxy exited:\n%s", c.log.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("caproxy not ready in 15 s:\n%s", c.log.String())
		}
	}
}

// aht asks account user (with key) for agent's AHT and returns the
// X-Cache header.
func (c *caproxy) aht(t *testing.T, user, key, agent string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, c.proxy+"/ca_apis/aht", strings.NewReader(`{"userName":"`+user+`","agentId":"`+agent+`"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("apiKey", key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("aht %s: %d %s", agent, resp.StatusCode, body)
	}
	return resp.Header.Get("X-Cache")
}

func (c *caproxy) get(t *testing.T, path string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, c.admin+path, nil)
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", path, resp.StatusCode, body)
	}
	return string(body)
}

// check runs caproxy -check on config with env and returns its output and
// whether it passed.
func check(t *testing.T, config string, env ...string) (string, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, "-config", config, "-check")
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err == nil
}
