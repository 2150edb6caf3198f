package syncbuf_test

import (
	"strings"
	"sync"
	"testing"

	"github.com/caproxy/caproxy/internal/syncbuf"
)

// TestConcurrentWrites writes from several goroutines while another reads;
// its point is -race, and that no write is lost or torn.
func TestConcurrentWrites(t *testing.T) {
	const writers, lines = 4, 100
	var buf syncbuf.Buffer // the zero value is ready
	var wg sync.WaitGroup
	for range writers {
		wg.Go(func() {
			for range lines {
				if n, err := buf.Write([]byte("line\n")); n != 5 || err != nil {
					t.Errorf("Write = %d, %v", n, err)
				}
			}
		})
	}
	stop := make(chan struct{})
	read := make(chan struct{})
	go func() {
		defer close(read)
		for {
			select {
			case <-stop:
				return
			default:
				_ = buf.String()
			}
		}
	}()
	wg.Wait()
	close(stop)
	<-read
	if got, want := buf.String(), strings.Repeat("line\n", writers*lines); got != want {
		t.Fatalf("String has %d bytes, want %d", len(got), len(want))
	}
}
