package main

import (
	"io"
	"sync"
	"time"
)

// lineBuffer batches log lines for a writer, so an access-log line per
// request costs a memory copy rather than a write system call. Lines are
// never split: a line that does not fit flushes what is buffered first.
// Buffered lines reach the writer within flushEvery, and on Close.
type lineBuffer struct {
	w    io.Writer
	stop chan struct{}
	done chan struct{}

	mu  sync.Mutex // guards buf and err
	buf []byte
	err error
}

const (
	lineBufferSize = 64 << 10
	flushEvery     = 200 * time.Millisecond
)

func newLineBuffer(w io.Writer) *lineBuffer {
	b := &lineBuffer{w: w, buf: make([]byte, 0, lineBufferSize), stop: make(chan struct{}), done: make(chan struct{})}
	go b.loop()
	return b
}

// Write buffers p, which slog hands over as one whole line.
func (b *lineBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.buf)+len(p) > cap(b.buf) {
		b.flushLocked()
		if len(p) > cap(b.buf) {
			_, err := b.w.Write(p)
			return len(p), err
		}
	}
	b.buf = append(b.buf, p...)
	return len(p), nil
}

func (b *lineBuffer) flushLocked() {
	if len(b.buf) == 0 {
		return
	}
	if _, err := b.w.Write(b.buf); err != nil && b.err == nil {
		b.err = err
	}
	b.buf = b.buf[:0]
}

func (b *lineBuffer) loop() {
	defer close(b.done)
	t := time.NewTicker(flushEvery)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			b.mu.Lock()
			b.flushLocked()
			b.mu.Unlock()
		case <-b.stop:
			b.mu.Lock()
			b.flushLocked()
			b.mu.Unlock()
			return
		}
	}
}

// Close flushes what is buffered and stops the flusher.
func (b *lineBuffer) Close() error {
	close(b.stop)
	<-b.done
	return b.err
}
