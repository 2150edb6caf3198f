// Package redistest starts a real, throwaway redis-server for tests, so
// code that talks to Redis is tested against Redis rather than a mock.
package redistest

import (
	"bufio"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caproxy/caproxy/internal/syncbuf"
)

// startTimeout bounds how long Start waits for redis-server to answer.
const startTimeout = 10 * time.Second

// Start runs redis-server on a free loopback port with persistence off,
// waits until it answers PING, stops it when the test ends, and returns
// its address ("127.0.0.1:port"). It fails the test, rather than skipping
// it, when redis-server is not installed.
func Start(t testing.TB) (addr string) {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redis-server not found (%v); install it: apt-get install -y redis-server", err)
	}
	// Another process may grab the free port before redis-server binds
	// it, so try a few ports.
	var lastErr string
	for range 3 {
		addr, msg := try(t, bin)
		if addr != "" {
			return addr
		}
		lastErr = msg
	}
	t.Fatalf("redistest: redis-server did not start: %s", lastErr)
	return ""
}

// try starts one redis-server and returns its address, or "" and why not.
func try(t testing.TB, bin string) (addr, why string) {
	port, err := freePort()
	if err != nil {
		return "", err.Error()
	}
	addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	// out collects redis-server's output for error messages; the process
	// writes it while this goroutine may read it.
	out := &syncbuf.Buffer{}
	cmd := exec.Command(bin,
		"--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no",
		"--dir", t.TempDir(), "--logfile", "")
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return "", err.Error()
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	stop := func() {
		cmd.Process.Kill()
		<-exited
	}

	deadline := time.Now().Add(startTimeout)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return "", "exited early: " + strings.TrimSpace(out.String())
		default:
		}
		if ping(addr) {
			t.Cleanup(stop)
			return addr, ""
		}
		time.Sleep(20 * time.Millisecond)
	}
	stop()
	return "", "no PONG within " + startTimeout.String() + ": " + strings.TrimSpace(out.String())
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

// ping reports whether a Redis server at addr answers PING with PONG.
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
	return err == nil && strings.HasPrefix(line, "+PONG")
}
