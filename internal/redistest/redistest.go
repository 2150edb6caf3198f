// Package redistest starts real, throwaway redis-server processes for tests
// (a single server, or a Redis Cluster of several), so code that talks to
// Redis is tested against Redis rather than a mock, including Redis failing:
// killed, restarted empty on the same port, or hung.
package redistest

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/caproxy/caproxy/internal/syncbuf"
)

// startTimeout bounds how long Start waits for redis-server to answer.
const startTimeout = 10 * time.Second

// Server is one redis-server process on a fixed loopback port that a test
// may kill, restart (empty: persistence is off) and pause.
type Server struct {
	// Addr is the server's "127.0.0.1:port"; it stays the same across
	// Restart.
	Addr string

	t     testing.TB
	bin   string
	dir   string
	extra []string // more redis-server arguments (cluster mode)
	// sentinel, if set, is the config file of a Sentinel: the server runs
	// in sentinel mode, without the persistence arguments.
	sentinel string

	// mu guards cmd, exited and out.
	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
	out    *syncbuf.Buffer
}

// Start runs redis-server on a free loopback port with persistence off,
// waits until it answers PING, stops it when the test ends, and returns
// its address ("127.0.0.1:port"). It fails the test, rather than skipping
// it, when redis-server is not installed.
func Start(t testing.TB) (addr string) {
	t.Helper()
	return StartServer(t).Addr
}

// StartServer is Start returning the Server, for tests that make Redis
// fail.
func StartServer(t testing.TB, extraArgs ...string) *Server {
	t.Helper()
	return startOnFreePort(t, "redis-server", func(bin, addr string) *Server {
		return &Server{Addr: addr, t: t, bin: bin, dir: t.TempDir(), extra: extraArgs}
	})
}

// startOnFreePort starts the Server newServer makes for a free loopback
// address, stopped when the test ends. Another process may grab the free
// port before redis-server binds it, so it tries a few ports; what names
// the process in the failure.
func startOnFreePort(t testing.TB, what string, newServer func(bin, addr string) *Server) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redis-server not found (%v); install it: apt-get install -y redis-server", err)
	}
	var lastErr string
	for range 3 {
		port, err := freePort()
		if err != nil {
			lastErr = err.Error()
			continue
		}
		s := newServer(bin, net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if msg := s.start(); msg != "" {
			lastErr = msg
			continue
		}
		t.Cleanup(s.Kill)
		return s
	}
	t.Fatalf("redistest: %s did not start: %s", what, lastErr)
	return nil
}

// start runs the process on s.Addr and waits for PONG; it returns why not.
func (s *Server) start() string {
	_, port, _ := net.SplitHostPort(s.Addr)
	out := &syncbuf.Buffer{}
	args := append([]string{
		"--port", port, "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no",
		"--dir", s.dir, "--logfile", ""}, s.extra...)
	if s.sentinel != "" {
		args = []string{s.sentinel, "--sentinel", "--port", port, "--bind", "127.0.0.1"}
	}
	cmd := exec.Command(s.bin, args...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return err.Error()
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	s.mu.Lock()
	s.cmd, s.exited, s.out = cmd, exited, out
	s.mu.Unlock()

	deadline := time.Now().Add(startTimeout)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return "exited early: " + strings.TrimSpace(out.String())
		default:
		}
		if ping(s.Addr) {
			return ""
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.Kill()
	return "no PONG within " + startTimeout.String() + ": " + strings.TrimSpace(out.String())
}

// Kill stops the server with SIGKILL (resuming it first if paused) and
// waits until it has exited. Killing a dead server does nothing.
func (s *Server) Kill() {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Kill()
	<-exited
}

// Restart starts a fresh, empty server on the same port after Kill. It
// fails the test if the port cannot be had again.
func (s *Server) Restart() {
	s.t.Helper()
	s.Kill()
	var why string
	for range 50 { // the old socket may linger for a moment
		if why = s.start(); why == "" {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.t.Fatalf("redistest: restarting redis-server on %s: %s", s.Addr, why)
}

// Pause stops the server with SIGSTOP: it keeps its connections and port
// but answers nothing, as a hung Redis does.
func (s *Server) Pause() { s.signal(syscall.SIGSTOP) }

// Resume continues a paused server with SIGCONT.
func (s *Server) Resume() { s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig syscall.Signal) {
	s.mu.Lock()
	cmd := s.cmd
	s.mu.Unlock()
	if err := cmd.Process.Signal(sig); err != nil {
		s.t.Fatalf("redistest: signal %v to redis-server: %v", sig, err)
	}
}

// StartSentinel starts a Redis Sentinel on a free loopback port that
// monitors master under the name masterName, and returns it. extra are
// more lines of its configuration ("sentinel down-after-milliseconds …").
func StartSentinel(t testing.TB, masterName string, master *Server, extra ...string) *Server {
	t.Helper()
	return startOnFreePort(t, "redis sentinel", func(bin, addr string) *Server {
		dir := t.TempDir()
		conf := filepath.Join(dir, "sentinel.conf")
		text := fmt.Sprintf("sentinel monitor %s 127.0.0.1 %s 1\n", masterName, portOf(master.Addr))
		for _, line := range extra {
			text += line + "\n"
		}
		if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return &Server{Addr: addr, t: t, bin: bin, dir: dir, sentinel: conf}
	})
}

// Cluster is a Redis Cluster of real redis-server processes (masters only)
// created with redis-cli --cluster create.
type Cluster struct {
	// Nodes are the servers; Addrs their addresses, for a cluster client.
	Nodes []*Server
}

// Addrs returns the addresses of the cluster's nodes.
func (c *Cluster) Addrs() []string {
	addrs := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		addrs[i] = n.Addr
	}
	return addrs
}

// StartCluster starts n (at least 3) redis-servers in cluster mode, joins
// them into one cluster covering every slot, and waits until the cluster
// reports ok. It fails the test, rather than skipping it, when
// redis-server or redis-cli is missing.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		t.Fatalf("redis-cli not found (%v); install it: apt-get install -y redis-tools", err)
	}
	c := &Cluster{}
	for range n {
		c.Nodes = append(c.Nodes, StartServer(t, "--cluster-enabled", "yes",
			"--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000"))
	}
	args := append([]string{"--cluster", "create"}, c.Addrs()...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.Command(cli, args...).CombinedOutput(); err != nil {
		t.Fatalf("redistest: redis-cli %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	deadline := time.Now().Add(startTimeout)
	for {
		ok := true
		for _, node := range c.Nodes {
			out, err := exec.Command(cli, "-h", "127.0.0.1", "-p", portOf(node.Addr), "cluster", "info").Output()
			if err != nil || !strings.Contains(string(out), "cluster_state:ok") {
				ok = false
				break
			}
		}
		if ok {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("redistest: cluster of %d nodes not ok within %v", n, startTimeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func portOf(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

// freePort asks the kernel for a loopback port nobody uses right now.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// ping reports whether a Redis server at addr answers PING: with PONG, or
// with NOAUTH when it requires a password.
func ping(addr string) bool {
	conn, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return false
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(500 * time.Millisecond))
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	return err == nil && (strings.HasPrefix(line, "+PONG") || strings.HasPrefix(line, "-NOAUTH"))
}

// String names the server for messages.
func (s *Server) String() string { return fmt.Sprintf("redis-server %s", s.Addr) }
