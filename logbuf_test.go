package main

import (
	"bytes"
	"strings"
	"sync"
	"testing"
)

// recordingWriter remembers each write separately.
type recordingWriter struct {
	mu     sync.Mutex // guards writes
	writes []string
}

func (w *recordingWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writes = append(w.writes, string(p))
	return len(p), nil
}

func TestLineBufferKeepsLinesWhole(t *testing.T) {
	w := &recordingWriter{}
	b := newLineBuffer(w)
	line := strings.Repeat("x", 1000) + "\n"
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 200 {
				b.Write([]byte(line))
			}
		})
	}
	wg.Wait()
	big := strings.Repeat("y", lineBufferSize+10) + "\n"
	b.Write([]byte(big))
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	var all bytes.Buffer
	for i, wr := range w.writes {
		if !strings.HasSuffix(wr, "\n") {
			t.Fatalf("write %d ends mid-line", i)
		}
		all.WriteString(wr)
	}
	if want := 1600*len(line) + len(big); all.Len() != want {
		t.Errorf("%d bytes written, want %d", all.Len(), want)
	}
	if len(w.writes) >= 1600 {
		t.Errorf("%d writes for 1600 lines: not batched", len(w.writes))
	}
}
