// Package deadline enforces connection deadlines with one sweeper goroutine
// at a fixed granularity instead of a runtime timer per deadline.
//
// net/http moves a connection's read and write deadlines several times per
// request when the server has ReadHeaderTimeout, ReadTimeout, WriteTimeout
// or IdleTimeout (the slow-client protection); each move of a real deadline
// is a runtime timer update. A Listener's connections record future
// deadlines in memory instead, and a sweeper closes in on them every tick:
// a deadline that has passed is then put on the real connection (as one in
// the past), so a blocked Read or Write fails with os.ErrDeadlineExceeded
// exactly as it would have, up to one tick late. Deadlines already in the
// past when set (net/http's way to abort its background read: the year
// 1970) go to the real connection at once, and the zero deadline that
// follows clears them; "past" is judged against the sweeper's last tick, so
// a deadline set less than a tick in the past is enforced at the next tick.
//
// Measured on Go 1.26 (README, Speed: scripts/callgrind-hit.sh, which
// counts instructions under callgrind): a cache hit costs 5.6% more
// instructions without it (65.0k against 61.5k), and one request's eight
// deadline moves in BenchmarkRequestDeadlines cost 4,600 instructions
// through the runtime's timers, 2,550 swept. So it stays.
package deadline

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// past is the deadline put on a connection whose recorded deadline passed
// (net/http uses the same instant for "now").
var past = time.Unix(1, 0)

// Listener wraps a net.Listener so the deadlines of the connections it
// accepts are enforced by its sweeper, each at most one tick late.
type Listener struct {
	net.Listener
	tick time.Duration
	// now is the time of the sweeper's last tick (unix ns): a deadline
	// before it is past, and goes to the connection at once.
	now atomic.Int64

	mu     sync.Mutex         // guards conns, closed and quit
	conns  map[*conn]struct{} // the open connections the sweeper checks
	closed bool               // the listener was closed
	quit   chan struct{}      // closed, under mu, when closed and conns is empty

	done chan struct{} // closed when the sweeper has stopped
}

// NewListener wraps ln; its sweeper checks deadlines every tick until the
// listener and every connection it accepted are closed (a server's drain
// still has its slow clients timed out). A deadline is enforced between 0
// and tick after it passes.
func NewListener(ln net.Listener, tick time.Duration) *Listener {
	l := &Listener{
		Listener: ln,
		tick:     tick,
		conns:    map[*conn]struct{}{},
		quit:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	l.now.Store(time.Now().UnixNano())
	go l.sweep()
	return l
}

// Accept returns the next connection, with its deadlines swept.
func (l *Listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	dc := &conn{Conn: c, l: l}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed { // the sweeper may have stopped
		c.Close()
		return nil, net.ErrClosed
	}
	l.conns[dc] = struct{}{}
	return dc, nil
}

// Close closes the listener; the sweeper stops once the connections it
// accepted are closed too (see Done).
func (l *Listener) Close() error {
	l.mu.Lock()
	l.closed = true
	l.maybeQuitLocked()
	l.mu.Unlock()
	return l.Listener.Close()
}

// maybeQuitLocked stops the sweeper once there is nothing left to sweep.
func (l *Listener) maybeQuitLocked() {
	if l.closed && len(l.conns) == 0 {
		select {
		case <-l.quit:
		default:
			close(l.quit)
		}
	}
}

// Done is closed when the sweeper has stopped.
func (l *Listener) Done() <-chan struct{} { return l.done }

// sweep puts every passed deadline on its connection, every tick.
func (l *Listener) sweep() {
	defer close(l.done)
	t := time.NewTicker(l.tick)
	defer t.Stop()
	var open []*conn // reused between ticks
	for {
		var now time.Time
		select {
		case <-l.quit:
			return
		case now = <-t.C:
		}
		// Copy, so Accept and Close are not held up by the sweep.
		l.mu.Lock()
		open = open[:0]
		for c := range l.conns {
			open = append(open, c)
		}
		l.mu.Unlock()
		n := now.UnixNano()
		l.now.Store(n)
		for _, c := range open {
			c.expire(n)
		}
		clear(open) // let closed conns go
	}
}

// Open returns the number of connections the sweeper watches.
func (l *Listener) Open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.conns)
}

// conn is an accepted connection whose deadlines the listener enforces.
type conn struct {
	net.Conn
	l      *Listener
	closed atomic.Bool

	mu sync.Mutex // guards read and write
	// read and write: each direction's deadline.
	read, write direction
}

// direction is one direction's deadline state.
type direction struct {
	// at is the recorded deadline, unix ns; 0 for none.
	at int64
	// set: the real connection holds a deadline in the past (passed on
	// by the caller, or put there by the sweeper) that a later call must
	// clear.
	set bool
}

// update records t for one direction, now being the sweeper's last tick
// (unix ns), and returns the deadline to put on the real connection, if any.
func (d *direction) update(t time.Time, now int64) (real time.Time, apply bool) {
	switch at := t.UnixNano(); {
	case t.IsZero():
		d.at = 0
	case at <= now:
		// Already passed: at once (an abort), not at the next tick.
		d.at = 0
		d.set = true
		return t, true
	default:
		d.at = at
	}
	if d.set {
		d.set = false
		return time.Time{}, true
	}
	return time.Time{}, false
}

// expired reports whether the recorded deadline passed by now (unix ns),
// marking it applied.
func (d *direction) expired(now int64) bool {
	if d.at == 0 || d.at > now {
		return false
	}
	d.at = 0
	d.set = true
	return true
}

// SetReadDeadline records t; a past t reaches the connection at once.
func (c *conn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if real, apply := c.read.update(t, c.l.now.Load()); apply {
		return c.Conn.SetReadDeadline(real)
	}
	return nil
}

// SetWriteDeadline records t; a past t reaches the connection at once.
func (c *conn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if real, apply := c.write.update(t, c.l.now.Load()); apply {
		return c.Conn.SetWriteDeadline(real)
	}
	return nil
}

// SetDeadline sets both deadlines.
func (c *conn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

// expire puts the deadlines that passed by now (unix ns) on the connection.
// Under c.mu, so a deadline moved meanwhile is not applied.
func (c *conn) expire(now int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.read.expired(now) {
		c.Conn.SetReadDeadline(past)
	}
	if c.write.expired(now) {
		c.Conn.SetWriteDeadline(past)
	}
}

// CloseWrite shuts down the writing side, as net.TCPConn does: net/http
// half-closes before it hangs up on a request it refused (431, 400), so the
// client reads the answer instead of a reset.
func (c *conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// ReadFrom lets the connection's own ReadFrom (sendfile, splice) serve
// io.Copy to it, as net/http does for a response copied from a file.
func (c *conn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{c.Conn}, r)
}

// Close closes the connection and stops sweeping it.
func (c *conn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		c.l.mu.Lock()
		delete(c.l.conns, c)
		c.l.maybeQuitLocked()
		c.l.mu.Unlock()
	}
	return c.Conn.Close()
}
