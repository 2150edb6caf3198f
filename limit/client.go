package limit

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/ulule/limiter/v3"
	"github.com/ulule/limiter/v3/drivers/store/memory"
)

// Headers ulule's stdlib middleware sets, which ClientLimit sets too.
const (
	HeaderRateLimitLimit     = "X-RateLimit-Limit"
	HeaderRateLimitRemaining = "X-RateLimit-Remaining"
	HeaderRateLimitReset     = "X-RateLimit-Reset"
)

// ClientLimit is the optional per-client inbound limit: perMinute requests
// per key in ulule's fixed one-minute windows, kept in ulule's own memory
// store. A fixed window is fine here: it protects the proxy from one noisy
// client, while the upstream itself is guarded by the strict Budget.
//
// A nil *ClientLimit allows everything, so "no client limit" needs no
// special case.
type ClientLimit struct {
	limiter *limiter.Limiter
}

// NewClientLimit returns a limit of perMinute requests per key, or nil
// (allow everything) when perMinute <= 0. Its ulule memory store runs a
// cleanup goroutine that stops when the ClientLimit is garbage collected.
func NewClientLimit(perMinute int64) *ClientLimit {
	if perMinute <= 0 {
		return nil
	}
	rate := limiter.Rate{Period: time.Minute, Limit: perMinute}
	return &ClientLimit{limiter: limiter.New(memory.NewStore(), rate)}
}

// Allow counts one request for key (the proxy uses account + remote IP),
// sets the X-RateLimit-Limit, -Remaining and -Reset headers on h as ulule's
// middleware does, and reports whether the request is within the limit.
func (c *ClientLimit) Allow(ctx context.Context, key string, h http.Header) (bool, error) {
	if c == nil {
		return true, nil
	}
	lc, err := c.limiter.Get(ctx, key)
	if err != nil {
		return false, err
	}
	h.Set(HeaderRateLimitLimit, strconv.FormatInt(lc.Limit, 10))
	h.Set(HeaderRateLimitRemaining, strconv.FormatInt(lc.Remaining, 10))
	h.Set(HeaderRateLimitReset, strconv.FormatInt(lc.Reset, 10))
	if lc.Reached {
		// A refusal says when to come back, as the upstream budget's 429
		// does: when the fixed window (its Reset, unix seconds on ulule's
		// wall clock) ends, at least 1 s.
		retry := lc.Reset - time.Now().Unix()
		if retry < 1 {
			retry = 1
		}
		h.Set("Retry-After", strconv.FormatInt(retry, 10))
	}
	return !lc.Reached, nil
}
