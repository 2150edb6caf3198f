package deadline

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// safety bounds how long a test waits for what must happen; reaching it is
// a failure, never a measurement.
const safety = 10 * time.Second

// serve runs srv on a loopback Listener sweeping every tick, until the
// test ends.
func serve(t *testing.T, srv *http.Server, tick time.Duration) (*Listener, string) {
	t.Helper()
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := NewListener(tcp, tick)
	go srv.Serve(ln)
	t.Cleanup(func() {
		srv.Close()
		select {
		case <-ln.Done():
		case <-time.After(safety):
			t.Error("sweeper still running after the server closed")
		}
	})
	return ln, tcp.Addr().String()
}

// waitClosed reads from c until the server closes it (EOF or reset), or
// fails after safety. Bytes the server sent first are skipped.
func waitClosed(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(safety)) // a real deadline: the test's own bound
	_, err := io.Copy(io.Discard, c)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("server kept the connection open for %v", safety)
	}
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// A client that sends its header slower than ReadHeaderTimeout is cut off.
func TestSlowHeaderIsClosed(t *testing.T) {
	_, addr := serve(t, &http.Server{
		Handler:           http.NotFoundHandler(),
		ReadHeaderTimeout: 100 * time.Millisecond,
	}, 10*time.Millisecond)
	c := dial(t, addr)
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n"); err != nil {
		t.Fatal(err)
	}
	// Keep trickling header lines, never ending the header.
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if _, err := io.WriteString(c, "X-Slow: 1\r\n"); err != nil {
				return
			}
		}
	}()
	waitClosed(t, c)
}

// A handler whose client never reads the answer gets a write timeout, and
// the connection is closed.
func TestUnreadAnswerTimesOut(t *testing.T) {
	writeErr := make(chan error, 1)
	chunk := make([]byte, 64<<10)
	ln, addr := serve(t, &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			for {
				if _, err := w.Write(chunk); err != nil {
					writeErr <- err
					return
				}
			}
		}),
		WriteTimeout: 200 * time.Millisecond,
	}, 10*time.Millisecond)
	c := dial(t, addr)
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-writeErr:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("handler's write failed with %v, want a deadline error", err)
		}
	case <-time.After(safety):
		t.Fatalf("handler still writing to a client that does not read after %v", safety)
	}
	for end := time.Now().Add(safety); ln.Open() > 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("connection still open after the write timeout")
		}
	}
}

// An idle keep-alive connection is closed after IdleTimeout.
func TestIdleConnIsClosed(t *testing.T) {
	_, addr := serve(t, &http.Server{
		Handler:     http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }),
		IdleTimeout: 100 * time.Millisecond,
	}, 10*time.Millisecond)
	c := dial(t, addr)
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK || res.Close {
		t.Fatalf("first answer: %d, close %v; want a kept-alive 200", res.StatusCode, res.Close)
	}
	waitClosed(t, c)
}

// net/http aborts its background read after every request with a deadline
// in the past and then clears it: that must take effect at once (the tick
// here is an hour; the connection goes idle only after the abort), and the
// connection must stay usable.
func TestKeepAliveServesManyRequests(t *testing.T) {
	var conns atomic.Int32
	idle := make(chan struct{}, 1)
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			w.Write(b)
		}),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       5 * time.Second,
		WriteTimeout:      5 * time.Second,
		IdleTimeout:       5 * time.Second,
		ConnState: func(_ net.Conn, s http.ConnState) {
			switch s {
			case http.StateNew:
				conns.Add(1)
			case http.StateIdle:
				idle <- struct{}{}
			}
		},
	}
	_, addr := serve(t, srv, time.Hour)
	client := &http.Client{Transport: &http.Transport{}, Timeout: safety}
	defer client.CloseIdleConnections()
	for i := range 50 {
		res, err := client.Post("http://"+addr+"/", "text/plain", strings.NewReader("ping"))
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if string(b) != "ping" {
			t.Fatalf("request %d answered %q", i, b)
		}
		select {
		case <-idle:
		case <-time.After(safety):
			t.Fatalf("request %d: the server's background read was not aborted", i)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("50 requests used %d connections, want 1 kept alive", n)
	}
}

// net/http half-closes a connection (CloseWrite, found by type assertion)
// before hanging up on a request it refused (431, 400), so the client reads
// the answer rather than a reset: the wrapped connection must half-close.
// (e2e's TestReportingAppDropIn sees the reset without it.)
func TestCloseWriteHalfCloses(t *testing.T) {
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := NewListener(tcp, 10*time.Millisecond)
	defer ln.Close()
	c := dial(t, tcp.Addr().String())
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	cw, ok := sc.(interface{ CloseWrite() error })
	if !ok {
		t.Fatal("accepted connection has no CloseWrite")
	}
	io.WriteString(sc, "answer")
	if err := cw.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(safety))
	got, err := io.ReadAll(c) // ends at the server's FIN
	if err != nil || string(got) != "answer" {
		t.Fatalf("client read %q, %v; want the answer, then EOF", got, err)
	}
	// The other direction stays open.
	io.WriteString(c, "more")
	b := make([]byte, 4)
	sc.SetReadDeadline(time.Now().Add(safety))
	if _, err := io.ReadFull(sc, b); err != nil || string(b) != "more" {
		t.Fatalf("server read %q, %v after its CloseWrite", b, err)
	}
}

// direction's bookkeeping: what reaches the real connection, and when.
func TestDirection(t *testing.T) {
	const tick = int64(1000) // the sweeper's last tick, unix ns
	type step struct {
		set    time.Time // a Set*Deadline call, or zero time with sweep
		sweep  int64     // a sweep at this time instead, if not 0
		apply  bool      // the call (or sweep) touches the real connection
		toZero bool      // what it puts there is the zero deadline
	}
	at := func(ns int64) time.Time { return time.Unix(0, ns) }
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"future deadline is only recorded", []step{{set: at(5000)}}},
		{"zero without a real deadline is a no-op", []step{{set: time.Time{}}}},
		{"past deadline goes through, zero clears it", []step{
			{set: at(1), apply: true}, {set: time.Time{}, apply: true, toZero: true}, {set: time.Time{}},
		}},
		{"a future deadline after a past one clears it", []step{
			{set: at(1), apply: true}, {set: at(5000), apply: true, toZero: true},
		}},
		{"sweep before the deadline does nothing", []step{{set: at(5000)}, {sweep: 4999}}},
		{"sweep after the deadline applies it once", []step{
			{set: at(5000)}, {sweep: 5000, apply: true}, {sweep: 6000},
		}},
		{"a moved deadline is not applied at the old time", []step{
			{set: at(5000)}, {set: at(9000)}, {sweep: 6000}, {sweep: 9000, apply: true},
		}},
		{"a deadline cleared before the sweep is not applied", []step{
			{set: at(5000)}, {set: time.Time{}}, {sweep: 6000},
		}},
		{"after a sweep applied it, the next call clears it", []step{
			{set: at(5000)}, {sweep: 5000, apply: true}, {set: at(9000), apply: true, toZero: true},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var d direction
			for i, s := range tc.steps {
				if s.sweep != 0 {
					if got := d.expired(s.sweep); got != s.apply {
						t.Fatalf("step %d: sweep at %d applied %v, want %v", i, s.sweep, got, s.apply)
					}
					continue
				}
				real, apply := d.update(s.set, tick)
				if apply != s.apply || (apply && real.IsZero() != s.toZero) {
					t.Fatalf("step %d: set %v: apply %v (real %v), want apply %v zero %v", i, s.set, apply, real, s.apply, s.toZero)
				}
				if apply && !s.toZero && !real.Equal(s.set) {
					t.Fatalf("step %d: real deadline %v, want the one set (%v)", i, real, s.set)
				}
			}
		})
	}
}
