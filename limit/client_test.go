package limit

import (
	"context"
	"net/http"
	"strconv"
	"testing"
	"time"
)

func TestClientLimit(t *testing.T) {
	ctx := context.Background()
	c := NewClientLimit(3)
	for i := range 3 {
		h := http.Header{}
		ok, err := c.Allow(ctx, "demo|10.0.0.1", h)
		if err != nil || !ok {
			t.Fatalf("request #%d refused: %v", i+1, err)
		}
		if h.Get("X-RateLimit-Limit") != "3" || h.Get("X-RateLimit-Remaining") != strconv.Itoa(2-i) {
			t.Fatalf("request #%d headers = %v", i+1, h)
		}
		reset, _ := strconv.ParseInt(h.Get("X-RateLimit-Reset"), 10, 64)
		if now := time.Now().Unix(); reset < now || reset > now+61 {
			t.Fatalf("X-RateLimit-Reset = %d, now %d", reset, now)
		}
	}
	h := http.Header{}
	if ok, _ := c.Allow(ctx, "demo|10.0.0.1", h); ok || h.Get("X-RateLimit-Remaining") != "0" {
		t.Fatalf("4th request in a minute allowed, headers %v", h)
	}
	if ok, _ := c.Allow(ctx, "demo|10.0.0.2", http.Header{}); !ok {
		t.Fatal("another client refused")
	}
}

func TestClientLimitOff(t *testing.T) {
	for _, n := range []int64{0, -1} {
		c := NewClientLimit(n)
		if c != nil {
			t.Fatalf("NewClientLimit(%d) = %v, want nil (off)", n, c)
		}
		h := http.Header{}
		for range 100 {
			if ok, err := c.Allow(context.Background(), "k", h); !ok || err != nil {
				t.Fatal("nil ClientLimit refused")
			}
		}
		if len(h) != 0 {
			t.Fatalf("nil ClientLimit set headers %v", h)
		}
	}
}
