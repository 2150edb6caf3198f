// Package accesslog writes caproxy's access log: one line per answered
// request, formatted off the request's path, exactly as log/slog would.
package accesslog

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Log writes one line per answered request, off the request's path:
// a request hands over a small record (a channel send, no formatting, no
// system call) and one goroutine formats the lines and writes them in
// batches. The lines are exactly what a log/slog Text or JSON handler
// writes for the message "request" at level INFO with the fields id,
// method, path, route, account, outcome, upstream_status and duration, so
// nothing that reads them changes; common lines are formatted by hand, any
// line with a string that would need quoting or escaping by slog itself.
//
// A request never waits for the log: when the queue is full (the writer is
// slower than the requests) the line is dropped and counted (Dropped).
// Close writes every queued line before it returns; a line logged after
// Close is written at once, so shutdown loses none.
type Log struct {
	w    io.Writer
	json bool

	queue    chan Entry
	flushReq chan chan struct{}
	stop     chan struct{}
	done     chan struct{}
	dropped  atomic.Uint64

	// mu is read-locked by every send and write-locked by Close, so no
	// send lands in the queue after the writer has drained it for good.
	mu     sync.RWMutex
	closed bool // guarded by mu

	// late guards writes of lines logged after Close, and err.
	late sync.Mutex
	err  error
}

// Entry is one request as the access log records it. Strings are
// shared with the request, never copied.
type Entry struct {
	Time           time.Time
	Duration       time.Duration
	ID             string
	Method         string
	Path           string
	Route          string
	Account        string
	Outcome        string
	UpstreamStatus int
}

// Access-log tuning: how many lines may wait for the writer, how much is
// written at once, and how often the writer takes the queued lines. The
// writer never waits on the queue itself, so a request's send never has a
// goroutine to wake: it is a copy into the channel's buffer. At 20 ms a
// full queue is 800k lines a second.
const (
	accessQueueLen   = 16 << 10
	accessFlushBytes = 32 << 10
	accessDrainEvery = 20 * time.Millisecond
)

// New starts an access log writing to w, as slog's JSONHandler
// when json is set and as its TextHandler otherwise. Close it to flush.
func New(w io.Writer, json bool) *Log {
	l := &Log{
		w: w, json: json,
		queue:    make(chan Entry, accessQueueLen),
		flushReq: make(chan chan struct{}),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	go l.loop()
	return l
}

// Log queues e for the writer; it never blocks on the writer.
func (l *Log) Log(e *Entry) {
	l.mu.RLock()
	if l.closed {
		l.mu.RUnlock()
		l.writeNow(e)
		return
	}
	select {
	case l.queue <- *e:
	default:
		l.dropped.Add(1)
	}
	l.mu.RUnlock()
}

// Dropped is how many lines were dropped because the queue was full.
func (l *Log) Dropped() uint64 { return l.dropped.Load() }

// Flush returns once every line logged before it was called is written.
func (l *Log) Flush() {
	ack := make(chan struct{})
	select {
	case l.flushReq <- ack:
		<-ack
	case <-l.done:
	}
}

// Close writes every queued line, stops the writer and returns the first
// write error, if any.
func (l *Log) Close() error {
	l.mu.Lock()
	already := l.closed
	l.closed = true
	l.mu.Unlock()
	if !already {
		close(l.stop)
	}
	<-l.done
	l.late.Lock()
	defer l.late.Unlock()
	return l.err
}

// writeNow formats and writes one line at once (after Close).
func (l *Log) writeNow(e *Entry) {
	line := l.appendEntry(nil, e, new(bytes.Buffer))
	l.late.Lock()
	defer l.late.Unlock()
	l.write(line)
}

// write writes b, remembering the first error; l.late or the writer
// goroutine's ownership serializes it.
func (l *Log) write(b []byte) {
	if len(b) == 0 {
		return
	}
	if _, err := l.w.Write(b); err != nil && l.err == nil {
		l.err = err
	}
}

func (l *Log) loop() {
	defer close(l.done)
	buf := make([]byte, 0, accessFlushBytes+4<<10)
	var scratch bytes.Buffer // the slog fallback's output
	tick := time.NewTicker(accessDrainEvery)
	defer tick.Stop()
	flush := func() {
		l.late.Lock()
		l.write(buf)
		l.late.Unlock()
		buf = buf[:0]
	}
	// drain formats every entry queued now.
	drain := func() {
		for {
			select {
			case e := <-l.queue:
				buf = l.appendEntry(buf, &e, &scratch)
				if len(buf) >= accessFlushBytes {
					flush()
				}
			default:
				return
			}
		}
	}
	for {
		select {
		case <-tick.C:
			drain()
			flush()
		case ack := <-l.flushReq:
			drain()
			flush()
			close(ack)
		case <-l.stop:
			// Close holds no lock now, and no sender is past the closed
			// check with a line not yet in the queue: drain it all.
			drain()
			flush()
			return
		}
	}
}

// appendEntry appends e's line. Strings that slog would quote or escape
// make the line go through slog's own handler (scratch is its buffer).
func (l *Log) appendEntry(b []byte, e *Entry, scratch *bytes.Buffer) []byte {
	if !plain(e.ID) || !plain(e.Method) || !plain(e.Path) || !plain(e.Route) || !plain(e.Account) || !plain(e.Outcome) {
		return l.appendSlog(b, e, scratch)
	}
	if l.json {
		b = append(b, `{"time":"`...)
		b = e.Time.AppendFormat(b, time.RFC3339Nano) // JSONHandler keeps nanoseconds
		b = append(b, `","level":"INFO","msg":"request","id":"`...)
		b = append(b, e.ID...)
		b = append(b, `","method":"`...)
		b = append(b, e.Method...)
		b = append(b, `","path":"`...)
		b = append(b, e.Path...)
		b = append(b, `","route":"`...)
		b = append(b, e.Route...)
		b = append(b, `","account":"`...)
		b = append(b, e.Account...)
		b = append(b, `","outcome":"`...)
		b = append(b, e.Outcome...)
		b = append(b, `","upstream_status":`...)
		b = strconv.AppendInt(b, int64(e.UpstreamStatus), 10)
		b = append(b, `,"duration":`...)
		b = strconv.AppendInt(b, int64(e.Duration), 10)
		return append(b, "}\n"...)
	}
	b = append(b, "time="...)
	b = appendRFC3339Millis(b, e.Time)
	b = append(b, " level=INFO msg=request id="...)
	b = appendText(b, e.ID)
	b = append(b, " method="...)
	b = appendText(b, e.Method)
	b = append(b, " path="...)
	b = appendText(b, e.Path)
	b = append(b, " route="...)
	b = appendText(b, e.Route)
	b = append(b, " account="...)
	b = appendText(b, e.Account)
	b = append(b, " outcome="...)
	b = appendText(b, e.Outcome)
	b = append(b, " upstream_status="...)
	b = strconv.AppendInt(b, int64(e.UpstreamStatus), 10)
	b = append(b, " duration="...)
	b = append(b, e.Duration.String()...)
	return append(b, '\n')
}

// appendText appends a plain string as slog's TextHandler does: as is,
// or "" when empty.
func appendText(b []byte, s string) []byte {
	if s == "" {
		return append(b, `""`...)
	}
	return append(b, s...)
}

// appendSlog formats e with slog's own handler, for the rare line whose
// strings need quoting or escaping.
func (l *Log) appendSlog(b []byte, e *Entry, scratch *bytes.Buffer) []byte {
	scratch.Reset()
	var h slog.Handler
	if l.json {
		h = slog.NewJSONHandler(scratch, nil)
	} else {
		h = slog.NewTextHandler(scratch, nil)
	}
	r := slog.NewRecord(e.Time, slog.LevelInfo, "request", 0)
	r.AddAttrs(
		slog.String("id", e.ID),
		slog.String("method", e.Method),
		slog.String("path", e.Path),
		slog.String("route", e.Route),
		slog.String("account", e.Account),
		slog.String("outcome", e.Outcome),
		slog.Int("upstream_status", e.UpstreamStatus),
		slog.Duration("duration", e.Duration),
	)
	h.Handle(context.Background(), r)
	return append(b, scratch.Bytes()...)
}

// plain reports whether s is written the same, unquoted and unescaped, by
// slog's Text and JSON handlers (the empty string is handled by the
// callers). It is deliberately narrower than slog's own rules.
func plain(s string) bool {
	for i := 0; i < len(s); i++ {
		if !plainByte[s[i]] {
			return false
		}
	}
	return true
}

var plainByte = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "-_./:@+,~%!*()$'" {
		t[c] = true
	}
	return t
}()

// appendRFC3339Millis appends t as slog does: RFC 3339 with exactly three
// digits of milliseconds (truncated).
func appendRFC3339Millis(b []byte, t time.Time) []byte {
	const prefixLen = len("2006-01-02T15:04:05.000")
	n := len(b)
	t = t.Truncate(time.Millisecond).Add(time.Millisecond / 10)
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b[:n+prefixLen], b[n+prefixLen+1:]...)
}
