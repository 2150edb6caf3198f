package accesslog

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
func testEntries() []Entry {
	t0 := time.Date(2026, 11, 29, 1, 2, 3, 456789012, time.UTC)
	base := Entry{
		Time: t0, Duration: 6071 * time.Nanosecond, ID: "192572c3354a-3yyl", Method: "POST",
		Path: "/ca_apis/aht", Route: "aht", Account: "demo-basic", Outcome: "hit",
	}
	var es []Entry
	es = append(es, base)
	for _, odd := range []string{"", "a b", `say"hi"`, "k=v", "tab\there", `back\slash`, "ünïcode", "<script>&", "bad\xffutf8", "new\nline"} {
		e := base
		e.ID = odd
		es = append(es, e)
		e = base
		e.Path = "/x/" + odd
		es = append(es, e)
		e = base
		e.Account = odd
		es = append(es, e)
	}
	e := base
	e.Time = time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("IST", 5*3600+1800))
	e.Duration, e.UpstreamStatus, e.Outcome, e.Method = 1500*time.Millisecond, 502, "upstream_error", "GET"
	return append(es, e)
}

// TestAccessLogLinesAreSlogs checks every line against what slog's own
// Text and JSON handlers write for the same record.
func TestAccessLogLinesAreSlogs(t *testing.T) {
	for _, json := range []bool{false, true} {
		l := &Log{json: json}
		for _, e := range testEntries() {
			var want bytes.Buffer
			var h slog.Handler = slog.NewTextHandler(&want, nil)
			if json {
				h = slog.NewJSONHandler(&want, nil)
			}
			slog.New(h).LogAttrs(context.Background(), slog.LevelInfo, "request",
				slog.String("id", e.ID), slog.String("method", e.Method), slog.String("path", e.Path),
				slog.String("route", e.Route), slog.String("account", e.Account), slog.String("outcome", e.Outcome),
				slog.Int("upstream_status", e.UpstreamStatus), slog.Duration("duration", e.Duration))
			// slog stamps its own time; put ours in its place.
			w := want.String()
			got := string(l.appendEntry(nil, &e, new(bytes.Buffer)))
			stamp := string(appendRFC3339Millis(nil, e.Time))
			if json {
				stamp = e.Time.Format(time.RFC3339Nano)
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
	l := New(&out, false)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 500 {
				l.Log(&Entry{Time: time.Now(), ID: strconv.Itoa(g) + "-" + strconv.Itoa(i), Method: "POST",
					Path: "/ca_apis/aht", Route: "aht", Account: "demo", Outcome: "hit"})
			}
		})
	}
	wg.Wait()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l.Log(&Entry{Time: time.Now(), ID: "late", Method: "POST", Path: "/", Route: "other", Outcome: "hit"})
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
	l := New(w, false)
	const n = accessQueueLen + 4000
	for i := range n {
		l.Log(&Entry{Time: time.Now(), ID: strconv.Itoa(i), Method: "POST", Path: "/ca_apis/aht",
			Route: "aht", Account: "demo", Outcome: "hit"})
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
		l := &Log{}
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
				slog.String("id", e.ID), slog.String("method", e.Method), slog.String("path", e.Path),
				slog.String("route", e.Route), slog.String("account", e.Account), slog.String("outcome", e.Outcome),
				slog.Int("upstream_status", e.UpstreamStatus), slog.Duration("duration", e.Duration))
		}
	})
}

// BenchmarkAccessLogQueue is what a request pays: handing its line over.
func BenchmarkAccessLogQueue(b *testing.B) {
	l := New(io.Discard, false)
	defer l.Close()
	e := testEntries()[0]
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			l.Log(&e)
		}
	})
	b.ReportMetric(float64(l.Dropped()), "dropped")
}
