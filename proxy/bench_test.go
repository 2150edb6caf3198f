package proxy_test

import (
	"bytes"
	"io"
	"net/http"
	"strconv"
	"testing"

	"github.com/caproxy/caproxy/accesslog"
)

// discardWriter is a reusable ResponseWriter, so the benchmarks measure
// the handler rather than httptest's recorder.
type discardWriter struct {
	h    http.Header
	code int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *discardWriter) WriteHeader(code int)        { w.code = code }

var ahtBody = []byte(`{"userName":"demo","agentId":"agent001"}`)

// benchHandler runs h over a cached-answer request from parallel goroutines.
func benchHandler(b *testing.B, h http.Handler) {
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		rd := bytes.NewReader(ahtBody)
		req, _ := http.NewRequest("POST", "http://caproxy/ca_apis/aht", rd)
		req.Header.Set("apiKey", "demo-key")
		req.Header.Set("Content-Type", "application/json")
		w := &discardWriter{h: http.Header{}}
		for pb.Next() {
			rd.Reset(ahtBody)
			req.Body = io.NopCloser(rd)
			clear(w.h)
			h.ServeHTTP(w, req)
			if w.code != http.StatusOK {
				b.Fatalf("HTTP %d", w.code)
			}
		}
	})
}

// BenchmarkHitParallel is caproxy's whole cache-hit path: body read, parse,
// client auth, key, lookup, headers, write, metrics.
func BenchmarkHitParallel(b *testing.B) {
	h := newHarness(&testing.T{}, setup{})
	h.proxy.AccessLog = nil
	if r := h.aht(tokenAccount, "agent001"); r.code != 200 {
		b.Fatalf("warm-up: %d %s", r.code, r.body)
	}
	benchHandler(b, h.proxy)
}

// BenchmarkHitParallelAccessLog is BenchmarkHitParallel with the access
// log on (to io.Discard): what a request pays to hand its line over, and
// the writer goroutine's formatting on the same cores.
func BenchmarkHitParallelAccessLog(b *testing.B) {
	h := newHarness(&testing.T{}, setup{})
	h.proxy.AccessLog = accesslog.New(io.Discard, false)
	defer h.proxy.AccessLog.Close()
	if r := h.aht(tokenAccount, "agent001"); r.code != 200 {
		b.Fatalf("warm-up: %d %s", r.code, r.body)
	}
	benchHandler(b, h.proxy)
	b.ReportMetric(float64(h.proxy.AccessLog.Dropped())/float64(b.N), "dropped/op")
}

// BenchmarkBareHandler is the floor BenchmarkHitParallel is compared with:
// read the body, write a fixed reply.
func BenchmarkBareHandler(b *testing.B) {
	reply := []byte(`{"status":"success","message":{"AgentID":"agent001","AgentName":"Agent 001","AHT":"00:01:11"}}`)
	benchHandler(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(reply)))
		w.WriteHeader(http.StatusOK)
		w.Write(reply)
	}))
}
