package proxy

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// testEntries cover the hand-formatted lines and every kind of string that
// must go through slog: empty, spaces, quotes, '=', control characters,
// backslashes, non-ASCII, HTML characters, invalid UTF-8.
func testEntries() []accessEntry {
	t0 := time.Date(2026, 11, 29, 1, 2, 3, 456789012, time.UTC)
	base := accessEntry{
		time: t0, duration: 6071 * time.Nanosecond, id: "192572c3354a-3yyl", method: "POST",
		path: "/ca_apis/aht", route: routeAHT, account: "demo-basic", outcome: OutcomeHit,
	}
	var es []accessEntry
	es = append(es, base)
	for _, odd := range []string{"", "a b", `say"hi"`, "k=v", "tab\there", `back\slash`, "ünïcode", "<script>&", "bad\xffutf8", "new\nline"} {
		e := base
		e.id = odd
		es = append(es, e)
		e = base
		e.path = "/x/" + odd
		es = append(es, e)
		e = base
		e.account = odd
		es = append(es, e)
	}
	e := base
	e.time = time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("IST", 5*3600+1800))
	e.duration, e.upstreamStatus, e.outcome, e.method = 1500*time.Millisecond, 502, OutcomeUpstreamError, "GET"
	return append(es, e)
}

// TestAccessLogLinesAreSlogs checks every line against what slog's own
// Text and JSON handlers write for the same record.
func TestAccessLogLinesAreSlogs(t *testing.T) {
	for _, json := range []bool{false, true} {
		l := &AccessLog{json: json}
		for _, e := range testEntries() {
			var want bytes.Buffer
			var h slog.Handler = slog.NewTextHandler(&want, nil)
			if json {
				h = slog.NewJSONHandler(&want, nil)
			}
			slog.New(h).LogAttrs(context.Background(), slog.LevelInfo, "request",
				slog.String("id", e.id), slog.String("method", e.method), slog.String("path", e.path),
				slog.String("route", e.route), slog.String("account", e.account), slog.String("outcome", e.outcome),
				slog.Int("upstream_status", e.upstreamStatus), slog.Duration("duration", e.duration))
			// slog stamps its own time; put ours in its place.
			w := want.String()
			got := string(l.appendEntry(nil, &e, new(bytes.Buffer)))
			stamp := string(appendRFC3339Millis(nil, e.time))
			if json {
				stamp = e.time.Format(time.RFC3339Nano)
				w = `{"time":"` + stamp + w[strings.Index(w, `","level"`):]
			} else {
				w = "time=" + stamp + w[strings.Index(w, " level="):]
			}
			if got != w {
				t.Errorf("json=%v\n got %q\nwant %q", json, got, w)
			}
		}
	}
}

func TestAppendRFC3339Millis(t *testing.T) {
	for _, tc := range []struct {
		t    time.Time
		want string
	}{
		{time.Date(2026, 11, 29, 1, 2, 3, 0, time.UTC), "2026-11-29T01:02:03.000Z"},
		{time.Date(2026, 11, 29, 1, 2, 3, 999999999, time.UTC), "2026-11-29T01:02:03.999Z"},
		{time.Date(2026, 1, 2, 3, 4, 5, 120000000, time.FixedZone("", -7*3600)), "2026-01-02T03:04:05.120-07:00"},
	} {
		if got := string(appendRFC3339Millis(nil, tc.t)); got != tc.want {
			t.Errorf("%v: got %s, want %s", tc.t, got, tc.want)
		}
	}
}

// lockedBuffer is a bytes.Buffer safe for a writer and a reader.
type lockedBuffer struct {
	mu  sync.Mutex // guards buf
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestAccessLogCloseWritesEveryLine logs from many goroutines, closes, and
// counts whole lines; lines logged after Close are written too.
func TestAccessLogCloseWritesEveryLine(t *testing.T) {
	var out lockedBuffer
	l := NewAccessLog(&out, false)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 500 {
				l.log(&accessEntry{time: time.Now(), id: strconv.Itoa(g) + "-" + strconv.Itoa(i), method: "POST",
					path: "/ca_apis/aht", route: routeAHT, account: "demo", outcome: OutcomeHit})
			}
		})
	}
	wg.Wait()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l.log(&accessEntry{time: time.Now(), id: "late", method: "POST", path: "/", route: routeOther, outcome: OutcomeHit})
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if want := 8*500 + 1 - int(l.Dropped()); len(lines) != want {
		t.Fatalf("%d lines written, want %d (%d dropped)", len(lines), want, l.Dropped())
	}
	seen := map[string]bool{}
	for _, line := range lines {
		if !strings.HasPrefix(line, "time=") || !strings.HasSuffix(line, "duration=0s") {
			t.Fatalf("not a whole line: %q", line)
		}
		seen[line[strings.Index(line, " id=")+4:strings.Index(line, " method=")]] = true
	}
	if !seen["late"] || !seen["7-499"] {
		t.Errorf("lines missing: late %v, 7-499 %v", seen["late"], seen["7-499"])
	}
}

// blockingWriter blocks every write until release is closed.
type blockingWriter struct {
	release chan struct{}
	lockedBuffer
}

func (w *blockingWriter) Write(p []byte) (int, error) {
	<-w.release
	return w.lockedBuffer.Write(p)
}

// TestAccessLogNeverBlocks: with the writer stuck, logging goes on; the
// lines that did not fit are dropped and counted, the rest written on
// Close.
func TestAccessLogNeverBlocks(t *testing.T) {
	w := &blockingWriter{release: make(chan struct{})}
	l := NewAccessLog(w, false)
	const n = accessQueueLen + 4000
	for i := range n {
		l.log(&accessEntry{time: time.Now(), id: strconv.Itoa(i), method: "POST", path: "/ca_apis/aht",
			route: routeAHT, account: "demo", outcome: OutcomeHit})
	}
	dropped := l.Dropped()
	if dropped == 0 {
		t.Fatalf("%d lines logged to a stuck writer, none dropped", n)
	}
	close(w.release)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(w.String(), "\n"); got != n-int(dropped) {
		t.Errorf("%d lines written, want %d logged - %d dropped", got, n, dropped)
	}
}

// BenchmarkAccessLogFormat compares a line formatted by hand with the
// same line through slog's TextHandler.
func BenchmarkAccessLogFormat(b *testing.B) {
	e := testEntries()[0]
	b.Run("hand", func(b *testing.B) {
		l := &AccessLog{}
		var buf []byte
		var scratch bytes.Buffer
		b.ReportAllocs()
		for b.Loop() {
			buf = l.appendEntry(buf[:0], &e, &scratch)
		}
	})
	b.Run("slog", func(b *testing.B) {
		lg := slog.New(slog.NewTextHandler(io.Discard, nil))
		b.ReportAllocs()
		for b.Loop() {
			lg.LogAttrs(context.Background(), slog.LevelInfo, "request",
				slog.String("id", e.id), slog.String("method", e.method), slog.String("path", e.path),
				slog.String("route", e.route), slog.String("account", e.account), slog.String("outcome", e.outcome),
				slog.Int("upstream_status", e.upstreamStatus), slog.Duration("duration", e.duration))
		}
	})
}

// BenchmarkAccessLogQueue is what a request pays: handing its line over.
func BenchmarkAccessLogQueue(b *testing.B) {
	l := NewAccessLog(io.Discard, false)
	defer l.Close()
	e := testEntries()[0]
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			l.log(&e)
		}
	})
	b.ReportMetric(float64(l.Dropped()), "dropped")
}
