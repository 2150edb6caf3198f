// Package testport gives tests loopback listeners in a port range of
// their own, so that tests of several packages (or several people on one
// machine) running at once do not take each other's ports.
package testport

import (
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
)

// Listen opens a TCP listener on 127.0.0.1 at a free port in lo-hi, or in
// the range the environment variable CAPROXY_TEST_PORTS=lo-hi gives, which
// wins. It fails the test when the variable is malformed or no port is
// free.
func Listen(t testing.TB, lo, hi int) net.Listener {
	t.Helper()
	if r := os.Getenv("CAPROXY_TEST_PORTS"); r != "" {
		a, b, _ := strings.Cut(r, "-")
		l, err1 := strconv.Atoi(a)
		h, err2 := strconv.Atoi(b)
		if err1 != nil || err2 != nil || l <= 0 || h < l {
			t.Fatalf("CAPROXY_TEST_PORTS=%q: want lo-hi", r)
		}
		lo, hi = l, h
	}
	n := hi - lo + 1
	start := rand.IntN(n)
	for i := range n {
		if ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(lo+(start+i)%n)); err == nil {
			return ln
		}
	}
	t.Fatalf("no free port in %d-%d", lo, hi)
	return nil
}

// Free returns a port in lo-hi (see Listen) that was free a moment ago,
// for a process the test starts to listen on.
func Free(t testing.TB, lo, hi int) string {
	t.Helper()
	ln := Listen(t, lo, hi)
	defer ln.Close()
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}
