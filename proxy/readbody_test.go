package proxy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

// firstReadSize is a body that records how much room the first Read was
// offered, then sends a few bytes and ends.
type firstReadSize struct {
	offered int
	sent    bool
}

func (b *firstReadSize) Read(p []byte) (int, error) {
	if b.sent {
		return 0, io.EOF
	}
	b.offered, b.sent = len(p), true
	return copy(p, `{"userName":"demo"}`), nil
}

func (b *firstReadSize) Close() error { return nil }

// TestReadBodyGrowsAsBytesArrive: a request declaring 64 KiB is read into a
// buffer that grows as bytes arrive, not one grown to the declared length
// before the first byte (8,000 idle connections declaring 64 KiB held
// 639 MiB that way).
func TestReadBodyGrowsAsBytesArrive(t *testing.T) {
	body := &firstReadSize{}
	r := httptest.NewRequest(http.MethodPost, "/ca_apis/aht", nil)
	r.Body, r.ContentLength = body, MaxBodyBytes
	buf, err := readBody(httptest.NewRecorder(), r)
	if err != nil {
		t.Fatal(err)
	}
	defer putBody(buf)
	if body.offered > maxPooledBody {
		t.Fatalf("the first read was offered %d bytes for a body declaring %d; want at most %d", body.offered, MaxBodyBytes, maxPooledBody)
	}
	if buf.String() != `{"userName":"demo"}` {
		t.Fatalf("read %q", buf.String())
	}
}
