package jsonbody

import (
	"errors"
	"io"
	"net/http"
	"sync"
)

// Buffer sizes of Read. A body starts in a pooled buffer of startSize
// bytes and doubles only as bytes arrive, so a client that declares a
// large Content-Length and sends little holds little. Only buffers of
// startSize go back to the pool (maxPooled): a pooled buffer grown by an
// earlier large body would let an idle connection hold it again.
const (
	startSize = 512
	maxPooled = startSize
)

// bufPool holds buffers, each in a *[]byte holder (a pointer, so Put does
// not allocate); holders holds the emptied holders, so Release can put a
// buffer back without allocating one.
var (
	bufPool = sync.Pool{New: func() any {
		b := make([]byte, 0, startSize)
		return &b
	}}
	holders = sync.Pool{New: func() any { return new([]byte) }}
)

// Read reads r's whole body, at most limit bytes. A body declared
// (Content-Length) longer is refused with *http.MaxBytesError before a
// byte is read; one found longer too, and then (http.MaxBytesReader) the
// server closes the connection after the answer. A missing or empty body
// reads as nil; a body cut short is io.ErrUnexpectedEOF or the
// transport's error. w may be nil (no connection to close).
//
// The buffer grows only as bytes arrive, never to the declared length
// beforehand. The returned slice is the caller's; it comes from a pool,
// and the caller may give it back with Release once nothing refers to it
// any more (a Doc parsed from it included). Not releasing it is safe.
func Read(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	if r.Body == nil || r.Body == http.NoBody {
		return nil, nil
	}
	if r.ContentLength > limit {
		return nil, &http.MaxBytesError{Limit: limit}
	}
	if n := r.ContentLength; n >= 0 && n <= startSize {
		// The common case, a small declared body: read exactly that into
		// a pooled buffer, with no limiting reader to allocate (net/http
		// ends the body at its declared length).
		return readSmall(r.Body, int(n))
	}
	body := http.MaxBytesReader(w, r.Body, limit)
	h := bufPool.Get().(*[]byte)
	buf := (*h)[:0]
	*h = nil
	holders.Put(h)
	for {
		if len(buf) == cap(buf) {
			// Full: double, but past limit+1 there is no need (one
			// byte more than limit is enough to refuse the body).
			n := min(2*int64(cap(buf)), limit+1)
			if n <= int64(cap(buf)) {
				n = int64(cap(buf)) + 1
			}
			grown := make([]byte, len(buf), n)
			copy(grown, buf)
			Release(buf)
			buf = grown
		}
		n, err := body.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			if len(buf) == 0 {
				Release(buf)
				return nil, nil
			}
			return buf, nil
		}
		if err != nil {
			Release(buf)
			var tooLarge *http.MaxBytesError
			if errors.As(err, &tooLarge) {
				return nil, tooLarge
			}
			return nil, err
		}
	}
}

// readSmall reads a body declared n bytes long, n at most startSize.
func readSmall(body io.Reader, n int) ([]byte, error) {
	if n == 0 {
		return nil, nil
	}
	h := bufPool.Get().(*[]byte)
	buf := (*h)[:n]
	*h = nil
	holders.Put(h)
	if _, err := io.ReadFull(body, buf); err != nil {
		Release(buf)
		return nil, err
	}
	return buf, nil
}

// Release gives a buffer returned by Read back to the pool. The caller
// must not use b, or anything parsed from it, afterwards. Very large
// buffers are left to the garbage collector.
func Release(b []byte) {
	if cap(b) < startSize || cap(b) > maxPooled {
		return
	}
	h := holders.Get().(*[]byte)
	*h = b[:0]
	bufPool.Put(h)
}
