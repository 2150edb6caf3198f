package credential

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caproxy/caproxy/cloudagent"
	"github.com/caproxy/caproxy/limit"
)

// Defaults of TokenSource, from CloudAgent's documented token rules.
const (
	// DefaultTokenTTL is how long CloudAgent accepts a token.
	DefaultTokenTTL = 60 * time.Minute
	// DefaultRefreshBefore is how long before expiry a token is replaced, so
	// no call goes out with a token about to lapse in flight.
	DefaultRefreshBefore = 7 * time.Minute
	// DefaultGenerationsPerHour is CloudAgent's limit on token generations per
	// account in any hour; the default guard allows exactly that many.
	DefaultGenerationsPerHour = 10
	// DefaultMinSuspectAge is how long a token must have been in use before
	// Suspect (a refusal seen on a call caproxy did not shape itself) may
	// drop it. A client can make such a call fail with "Invalid Token" at
	// will, so this bounds what clients can spend: at most one generation
	// per quarter hour, 4 of the 10 an hour, through Suspect.
	DefaultMinSuspectAge = 15 * time.Minute
)

const (
	// generateTimeout bounds one generation. It is not tied to any caller's
	// context, so it needs a bound of its own.
	generateTimeout = 30 * time.Second
	// Failed generations are retried no sooner than after a backoff that
	// doubles from minRetry to maxRetry: each attempt spends one of only ten
	// hourly generations, so a failing upstream must not be hammered.
	minRetry = time.Second
	maxRetry = time.Minute
	// maxAnswerBytes bounds the generateToken answer read; it is tiny.
	maxAnswerBytes = 64 << 10
	// guardPrefix keys the default guard's store.
	guardPrefix = "tokengen:"
	// freshTokenAge is how young a token must be, and not yet seen accepted
	// (Accept), for its refusal to count as CloudAgent refusing fresh
	// tokens rather than a token that ended (replaced elsewhere, expired).
	freshTokenAge = time.Minute
	// After a fresh token is refused, no token is generated for a pause
	// that doubles from minRecoveryPause to maxRecoveryPause with each such
	// refusal in a row: a new token would most likely be refused too, and
	// each costs one of ten hourly generations and logs out every other app
	// on the account. With these, a burst of refusals costs one generation
	// per pause, three in the first 35 s.
	minRecoveryPause = 5 * time.Second
	maxRecoveryPause = 4 * time.Minute
	// recentTokens is how many of the last tokens Redact hides.
	recentTokens = 4
)

// ErrGenerationLimit is matched (errors.Is) by the error Apply returns when a
// token is needed but the hourly generation guard is spent. errors.As with a
// *GenerationLimitError tells when the next generation is allowed.
var ErrGenerationLimit = errors.New("credential: upstream token generation limit reached")

// GenerationLimitError says that the generation guard refused a generation.
type GenerationLimitError struct {
	UserName string
	// NextFree is when the guard allows the next generation; zero if unknown.
	NextFree time.Time
}

func (e *GenerationLimitError) Error() string {
	s := fmt.Sprintf("credential: account %q: hourly upstream token generation limit reached", e.UserName)
	if !e.NextFree.IsZero() {
		s += "; next generation allowed at " + e.NextFree.UTC().Format(time.RFC3339)
	}
	return s
}

// Is makes errors.Is(err, ErrGenerationLimit) hold.
func (e *GenerationLimitError) Is(target error) bool { return target == ErrGenerationLimit }

// ErrRecovering is matched (errors.Is) by the error Apply returns while
// token generation pauses because CloudAgent refused a freshly generated
// token. errors.As with a *RecoveringError tells when generation resumes.
var ErrRecovering = errors.New("credential: upstream refused a fresh token; token generation paused")

// RecoveringError says that token generation pauses after CloudAgent
// refused freshly generated tokens Refused times in a row.
type RecoveringError struct {
	UserName string
	// RetryAt is when the next generation is allowed.
	RetryAt time.Time
	// Refused is how many fresh tokens were refused in a row (0 when the
	// pause was another replica's, whose count is not known here).
	Refused int
}

func (e *RecoveringError) Error() string {
	return fmt.Sprintf("credential: account %q: upstream refused a freshly generated token; next generation at %s",
		e.UserName, e.RetryAt.UTC().Format(time.RFC3339))
}

// Is makes errors.Is(err, ErrRecovering) hold.
func (e *RecoveringError) Is(target error) bool { return target == ErrRecovering }

// RetryAfter is how long from now until generation resumes, in whole
// seconds rounded up and at least 1, for a Retry-After header.
func (e *RecoveringError) RetryAfter(now time.Time) int {
	return max(int((e.RetryAt.Sub(now)+time.Second-1)/time.Second), 1)
}

// UpstreamError is CloudAgent refusing to generate a token. Message is
// CloudAgent's own message (for example "Invalid userName or apiKey"), with
// the apiKey cut out should the upstream ever echo it.
type UpstreamError struct {
	UserName   string
	StatusCode int    // HTTP status of the answer
	Message    string // CloudAgent's message; empty if the answer had none
}

func (e *UpstreamError) Error() string {
	msg := e.Message
	if msg == "" {
		msg = "unexpected answer"
	}
	return fmt.Sprintf("credential: account %q: upstream refused token generation (HTTP %d): %s", e.UserName, e.StatusCode, msg)
}

// Guard limits upstream token generations per account in a rolling window.
// *limit.Budget satisfies it, in memory for one node or on Redis so that
// replicas share one count.
type Guard interface {
	// Take spends one generation of account's allowance if one is free;
	// st.NextFree says when one frees if not.
	Take(ctx context.Context, account string) (ok bool, st limit.State, err error)
}

// TokenSource is the Upstream of an account in CloudAgent's TOKEN_AUTH mode:
// it holds the account's bearer token and generates a new one when needed.
// Use one TokenSource per account, by pointer, and keep it for the life of
// the process (a new one would generate a new token and invalidate the old).
//
// A token is generated when there is none, when it was rejected, or when it
// is within RefreshBefore of expiry. Refresh is lazy: the first Apply in the
// refresh window generates, so an idle account spends no generations. (A
// background refresher would save one request the generation latency but
// spend a generation every 53 minutes per account whether used or not.)
// While a refresh is in flight callers wait for it, since the new token
// invalidates the old one; if the refresh fails, the old token is used until
// it expires.
//
// When CloudAgent refuses a token generated less than a minute ago and not
// yet seen accepted (Accept), generation pauses, 5 s doubling to 4 min with
// each such refusal in a row, and Apply returns a *RecoveringError
// (ErrRecovering) meanwhile: a burst of refusals spends one generation per
// pause, not one per call. Accept, a refusal of an older token and a
// refresh end the run, so the next pause is short again.
//
// Generation is single-flight: one upstream call however many callers wait.
// Waiters give up when their context ends; the generation itself runs on, so
// its result is not wasted. Each generation first takes from Guard; when
// that is spent Apply fails with ErrGenerationLimit rather than call
// CloudAgent. A failed generation is retried no sooner than after a backoff
// (1 s doubling to 1 min, or until the guard frees), during which Apply
// returns that failure at once.
//
// With several replicas, give each replica's TokenSource the same Shared
// store (and the same shared Guard): they then use one token per account
// instead of logging each other out, with one replica generating for all;
// see Shared.
//
// Set the exported fields before first use and do not change them after.
// String, GoString and LogValue show only the account name.
type TokenSource struct {
	// UserName is the CloudAgent account.
	UserName string
	// APIKey is the account's apiKey, sent only to generateToken.
	APIKey string
	// Endpoint is CloudAgent's base URL; generateToken is
	// Endpoint + cloudagent.PathGenerateToken.
	Endpoint *url.URL
	// Client makes the generateToken call; nil means http.DefaultClient's
	// settings. Its CheckRedirect is ignored: redirects are never followed.
	Client *http.Client
	// TTL is how long CloudAgent accepts a token, counted from when the
	// generation was sent; zero means DefaultTokenTTL.
	TTL time.Duration
	// RefreshBefore is how long before expiry a token is replaced; zero
	// means DefaultRefreshBefore. Values of TTL/2 or more are capped at TTL/2
	// so a token is always used for a while.
	RefreshBefore time.Duration
	// Guard limits generations, keyed by UserName. Give it a budget of its own
	// (or a key prefix of its own) so its keys do not mix with other budgets.
	// nil means a private in-memory guard of DefaultGenerationsPerHour per
	// hour on the Now clock.
	Guard Guard
	// Now is the clock; nil means time.Now. Tests share one fake clock with
	// the simulator and the guard.
	Now func() time.Time
	// Logger receives generation events (never secrets); nil means
	// slog.Default().
	Logger *slog.Logger
	// Shared, when set, shares the account's token with the other replicas
	// whose TokenSources use the same store; nil keeps the token in this
	// process only. With a store, Apply uses the store's token, keeping a
	// local copy for SharedCheck; when the store has none, or it is due for
	// refresh or was rejected, one replica claims the generation (with a
	// lease, so a replica that dies mid-generation blocks the others only
	// until the lease ends) while the others poll the store for its token.
	// Reject drops the token from the store only if it is still the one
	// rejected. A failed generation holds every replica off for its backoff.
	// Generation fails closed while the store is unreachable, and the store
	// holds the token itself: keep it on trusted infrastructure
	// (RedisTokenStore).
	Shared TokenStore
	// SharedCheck is how long a token read from Shared is used before the
	// store is asked whether another replica replaced it; zero means
	// DefaultSharedCheck. A replaced token that CloudAgent refuses is
	// noticed sooner, through Reject.
	SharedCheck time.Duration
	// MinSuspectAge is how long a token must have been in use before Suspect
	// drops it; zero means DefaultMinSuspectAge.
	MinSuspectAge time.Duration

	initOnce sync.Once
	guard    Guard
	owner    string // names this source's claims in Shared

	// mu guards the fields below.
	mu      sync.Mutex
	token   string    // current token; "" when none or rejected
	handle  string    // opaque name of token, given to callers for Reject
	seq     uint64    // generations made by this source, naming handles
	expires time.Time // when CloudAgent stops accepting token
	flight  *flight   // the generation (or, with Shared, the round) in progress, if any
	lastErr error     // the last generation failure; nil after a success
	retryAt time.Time // no generation before this, after a failure
	streak  int       // consecutive failures, for the backoff
	// refused counts fresh tokens refused in a row, for the recovery
	// pause; accepted is the handle of the last token seen accepted.
	refused  int
	accepted string
	// recent are the last tokens held, for Redact: an upstream may echo a
	// token in a message after it was replaced.
	recent [recentTokens]string
	// With Shared, token is the local copy of the store's token and handle
	// its ID; these two serve Shared only.
	checked  time.Time // when the local copy was last read from Shared
	rejected string    // the ID of the last token rejected here

	generations, failures, pauses atomic.Int64
}

// flight is one generation in progress; done is closed once token, handle
// and err are set.
type flight struct {
	done          chan struct{}
	token, handle string
	err           error
}

var _ Upstream = (*TokenSource)(nil)

func (ts *TokenSource) now() time.Time {
	if ts.Now != nil {
		return ts.Now()
	}
	return time.Now()
}

func (ts *TokenSource) ttl() time.Duration {
	if ts.TTL > 0 {
		return ts.TTL
	}
	return DefaultTokenTTL
}

func (ts *TokenSource) refreshBefore() time.Duration {
	rb, ttl := ts.RefreshBefore, ts.ttl()
	if rb <= 0 {
		rb = DefaultRefreshBefore
	}
	return min(rb, ttl/2)
}

func (ts *TokenSource) logger() *slog.Logger {
	if ts.Logger != nil {
		return ts.Logger
	}
	return slog.Default()
}

func (ts *TokenSource) init() {
	ts.initOnce.Do(func() {
		ts.guard = ts.Guard
		if ts.guard == nil {
			ts.guard = limit.NewBudget(&limit.MemoryStore{Now: ts.now}, DefaultGenerationsPerHour, time.Hour,
				limit.WithPrefix(guardPrefix), limit.WithClock(clock(ts.now)))
		}
		ts.owner = rand.Text()
	})
}

// clock adapts a now function to limit.Clock.
type clock func() time.Time

func (c clock) Now() time.Time                         { return c() }
func (c clock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Apply sets "Authorization: Bearer <token>" on h, generating a token first
// if needed, and returns the token's handle for Reject. It fails when no
// usable token can be had: ErrGenerationLimit when the guard is spent, an
// *UpstreamError when CloudAgent refused, ctx's error when ctx ended while
// waiting for a generation.
func (ts *TokenSource) Apply(ctx context.Context, h http.Header) (string, error) {
	ts.init()
	if ts.Shared != nil {
		return ts.applyShared(ctx, h)
	}
	ts.mu.Lock()
	now := ts.now()
	valid := ts.token != "" && now.Before(ts.expires)
	if valid && now.Before(ts.expires.Add(-ts.refreshBefore())) {
		return ts.useLocked(h)
	}
	if ts.flight == nil && now.Before(ts.retryAt) {
		// A generation failed recently: do not spend another one yet.
		if valid {
			return ts.useLocked(h)
		}
		err := ts.lastErr
		ts.mu.Unlock()
		return "", err
	}
	return ts.joinLocked(ctx, h, ts.generate)
}

// joinLocked waits, with ts.mu held on entry and released, for the flight
// in progress, or starts one that runs run. A flight outlives the caller
// that started it: others may be waiting on it, and an abandoned generation
// would still cost one of ten per hour.
func (ts *TokenSource) joinLocked(ctx context.Context, h http.Header, run func(context.Context, *flight)) (string, error) {
	f := ts.flight
	if f == nil {
		if err := context.Cause(ctx); err != nil {
			// Nobody would wait for the token: do not spend a generation.
			ts.mu.Unlock()
			return "", fmt.Errorf("credential: account %q: waiting for upstream token: %w", ts.UserName, err)
		}
		f = &flight{done: make(chan struct{})}
		ts.flight = f
		go run(context.WithoutCancel(ctx), f)
	}
	ts.mu.Unlock()
	return ts.await(ctx, h, f)
}

// await waits for flight f and sets its token on h; if f failed, the
// current token is used while it lasts.
func (ts *TokenSource) await(ctx context.Context, h http.Header, f *flight) (string, error) {
	select {
	case <-f.done:
	case <-ctx.Done():
		return "", fmt.Errorf("credential: account %q: waiting for upstream token: %w", ts.UserName, context.Cause(ctx))
	}
	if f.err == nil {
		setBearer(h, f.token)
		return f.handle, nil
	}
	// A failed refresh leaves the current token in place; use it while it
	// lasts (generate has already logged the failure).
	ts.mu.Lock()
	if ts.token != "" && ts.now().Before(ts.expires) {
		return ts.useLocked(h)
	}
	ts.mu.Unlock()
	return "", f.err
}

// useLocked sets the current token on h and unlocks ts.mu.
func (ts *TokenSource) useLocked(h http.Header) (string, error) {
	token, handle := ts.token, ts.handle
	ts.mu.Unlock()
	setBearer(h, token)
	return handle, nil
}

func setBearer(h http.Header, token string) {
	h.Set(cloudagent.HeaderAuthorization, "Bearer "+token)
}

// Reject drops the token behind handle, if it is still the current one, so
// the next Apply generates a new one. Stale or unknown handles are ignored,
// so any number of rejections of one token cause one generation.
func (ts *TokenSource) Reject(handle string) {
	if handle == "" {
		return
	}
	if ts.Shared != nil {
		ts.rejectShared(handle)
		return
	}
	ts.mu.Lock()
	if ts.token == "" || handle != ts.handle {
		ts.mu.Unlock()
		return
	}
	pause, fresh := ts.noteRefusalLocked(handle, ts.now())
	ts.token, ts.handle, ts.expires = "", "", time.Time{}
	retryAt, n := ts.retryAt, ts.refused
	ts.mu.Unlock()
	if fresh {
		ts.logPause(pause, retryAt, n)
		return
	}
	ts.logger().Info("upstream token rejected; the next call generates a new one", "account", ts.UserName)
}

// noteRefusalLocked records that the token behind handle, the current one,
// was refused at now. A fresh token's refusal starts (or lengthens) a
// recovery pause, returned with fresh true; an older token's ends the run.
// ts.mu must be held.
func (ts *TokenSource) noteRefusalLocked(handle string, now time.Time) (pause time.Duration, fresh bool) {
	generated := ts.expires.Add(-ts.ttl())
	if handle == ts.accepted || !now.Before(generated.Add(freshTokenAge)) {
		ts.refused = 0
		return 0, false
	}
	ts.refused++
	pause = min(minRecoveryPause<<min(ts.refused-1, 16), maxRecoveryPause)
	if until := now.Add(pause); until.After(ts.retryAt) {
		ts.retryAt = until
	}
	ts.lastErr = &RecoveringError{UserName: ts.UserName, RetryAt: ts.retryAt, Refused: ts.refused}
	ts.pauses.Add(1)
	return pause, true
}

// logPause logs one line for a recovery pause.
func (ts *TokenSource) logPause(pause time.Duration, retryAt time.Time, refused int) {
	ts.logger().Warn("upstream refused a freshly generated token; pausing token generation",
		"account", ts.UserName, "pause", pause, "retry_at", retryAt, "fresh_tokens_refused_in_a_row", refused)
}

// Accept reports that CloudAgent accepted a call made with the token behind
// handle. It ends a run of refused fresh tokens, so the next refusal pauses
// generation for the shortest pause again, and it marks the token as
// working, so its later refusal is not taken for a fresh token's. Stale
// handles are ignored. Callers should call it after each upstream call the
// token was not refused on; it costs one lock.
func (ts *TokenSource) Accept(handle string) {
	if handle == "" {
		return
	}
	ts.mu.Lock()
	if handle != ts.handle || handle == ts.accepted {
		ts.mu.Unlock()
		return
	}
	ts.accepted = handle
	n := ts.refused
	ts.refused = 0
	ts.mu.Unlock()
	if n > 0 {
		ts.logger().Info("upstream accepts tokens again; token generation pause reset", "account", ts.UserName, "fresh_tokens_refused_before", n)
	}
}

// Suspect is Reject on weaker evidence: a refusal of the token seen on a
// call whose shape caproxy did not control (a pass-through request), which a
// client may have provoked on purpose. It drops the token only if it has
// been in use for MinSuspectAge; a younger token is kept, and caproxy's own
// calls (which Reject) or the refresh before expiry replace it if it really
// is dead.
func (ts *TokenSource) Suspect(handle string) {
	if handle == "" {
		return
	}
	age := ts.MinSuspectAge
	if age <= 0 {
		age = DefaultMinSuspectAge
	}
	ts.mu.Lock()
	young := ts.token != "" && handle == ts.handle && ts.now().Before(ts.expires.Add(-ts.ttl()).Add(age))
	ts.mu.Unlock()
	if young {
		ts.logger().Info("upstream token refused on a pass-through call; kept, it is too young to replace on that evidence",
			"account", ts.UserName, "min_age", age)
		return
	}
	ts.Reject(handle)
}

// Ready reports whether Apply can be expected to succeed: a usable token is
// held, or no generation has failed since the last success, or the backoff
// after a failure has passed so the next Apply tries again, or the failure
// is the shared store's or a recovery pause (see the comment inside). It
// makes no upstream call.
func (ts *TokenSource) Ready() bool {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	now := ts.now()
	if ts.token != "" && now.Before(ts.expires) {
		return true
	}
	// A shared store that is down is an outage of its own (reported as
	// degraded); this replica still serves what its memory holds. So does
	// a replica pausing after refused fresh tokens: every replica pauses
	// together, and a load balancer that dropped them all would drop their
	// hits and stale answers too.
	return ts.lastErr == nil || !now.Before(ts.retryAt) || errors.Is(ts.lastErr, ErrStoreUnavailable) ||
		errors.Is(ts.lastErr, ErrRecovering)
}

// Generations returns how many tokens this source has generated.
func (ts *TokenSource) Generations() int64 { return ts.generations.Load() }

// Failures returns how many generations failed or were refused by the guard.
func (ts *TokenSource) Failures() int64 { return ts.failures.Load() }

// RecoveryPauses returns how many times generation paused because CloudAgent
// refused a freshly generated token (one log line each).
func (ts *TokenSource) RecoveryPauses() int64 { return ts.pauses.Load() }

// TokenAge returns how long ago the token in use was generated (here or,
// with Shared, by another replica), counted from when its generation was
// sent; ok is false while no token is held.
func (ts *TokenSource) TokenAge() (age time.Duration, ok bool) {
	ts.mu.Lock()
	token, expires := ts.token, ts.expires
	ts.mu.Unlock()
	if token == "" || expires.IsZero() {
		return 0, false
	}
	return max(ts.now().Sub(expires.Add(-ts.ttl())), 0), true
}

// guardState is a Guard that can tell an account's standing without
// spending (a *limit.Budget).
type guardState interface {
	State(ctx context.Context, account string) (limit.State, error)
}

// GenerationsThisHour returns how many generations the Guard counts for the
// account in its rolling hour (every replica's, with a shared guard) and
// how many it allows. It errs when the guard cannot tell: its store is
// unreachable, or it is a Guard that only spends.
func (ts *TokenSource) GenerationsThisHour(ctx context.Context) (used, allowed int64, err error) {
	ts.init()
	g, ok := ts.guard.(guardState)
	if !ok {
		return 0, 0, fmt.Errorf("credential: account %q: the generation guard cannot report its state", ts.UserName)
	}
	st, err := g.State(ctx, ts.UserName)
	if err != nil {
		return 0, 0, err
	}
	return st.Limit - st.Remaining, st.Limit, nil
}

// generate runs one generation for flight f and installs its outcome.
func (ts *TokenSource) generate(ctx context.Context, f *flight) {
	ctx, cancel := context.WithTimeout(ctx, generateTimeout)
	defer cancel()
	start := ts.now()
	token, err := ts.fetch(ctx)

	ts.mu.Lock()
	now := ts.now()
	if err == nil {
		if ts.token != "" {
			// Replacing a token that was never refused (a refresh): it
			// worked, so a run of refused fresh tokens is over.
			ts.refused = 0
		}
		ts.seq++
		ts.token, ts.handle = token, strconv.FormatUint(ts.seq, 10)
		ts.rememberLocked(token)
		// Counted from before the call went out, so we never believe a
		// token lives longer than CloudAgent does.
		ts.expires = start.Add(ts.ttl())
		ts.lastErr, ts.retryAt, ts.streak = nil, time.Time{}, 0
		f.token, f.handle = ts.token, ts.handle
	} else {
		ts.streak++
		ts.retryAt = now.Add(min(minRetry<<min(ts.streak-1, 10), maxRetry))
		if le, ok := errors.AsType[*GenerationLimitError](err); ok && le.NextFree.After(now) {
			ts.retryAt = le.NextFree
		}
		ts.lastErr = err
		f.err = err
	}
	expires, retryAt := ts.expires, ts.retryAt
	keeping := ts.token != "" && now.Before(ts.expires)
	ts.flight = nil
	ts.mu.Unlock()
	// Counted and logged before the waiters wake, so what they see
	// (metrics, logs) already includes this generation.
	defer close(f.done)

	log := ts.logger()
	if err == nil {
		n := ts.generations.Add(1)
		log.Info("generated upstream token", "account", ts.UserName, "expires", expires, "generated_total", n)
		return
	}
	ts.failures.Add(1)
	attrs := []any{"account", ts.UserName, "retry_at", retryAt, "keeping_current_token", keeping}
	if le, ok := errors.AsType[*GenerationLimitError](err); ok {
		log.Warn("not generating upstream token: hourly generation limit reached", append(attrs, "next_allowed", le.NextFree)...)
		return
	}
	log.Warn("upstream token generation failed", append(attrs, "err", err)...)
}

// fetch takes a generation from the guard and asks CloudAgent for a token.
func (ts *TokenSource) fetch(ctx context.Context) (string, error) {
	if ts.Endpoint == nil {
		return "", fmt.Errorf("credential: account %q: no upstream endpoint configured", ts.UserName)
	}
	ok, st, err := ts.guard.Take(ctx, ts.UserName)
	if err != nil {
		// Fail closed: generating without the guard could exceed the hourly
		// limit or log out another replica's token.
		return "", fmt.Errorf("credential: account %q: token generation guard unavailable: %w", ts.UserName, err)
	}
	if !ok {
		return "", &GenerationLimitError{UserName: ts.UserName, NextFree: st.NextFree}
	}

	body, _ := json.Marshal(cloudagent.TokenRequest{UserName: ts.UserName}) // a string always marshals
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ts.Endpoint.JoinPath(cloudagent.PathGenerateToken).String(), bytes.NewReader(body))
	if err != nil {
		return "", fmt.Errorf("credential: account %q: token generation: %w", ts.UserName, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(cloudagent.HeaderAPIKey, ts.APIKey)
	client := http.Client{}
	if ts.Client != nil {
		client = *ts.Client
	}
	// A redirect is never followed: the apiKey header would go with it to
	// whatever host the answer names (net/http strips Authorization on a
	// cross-host redirect, not apiKey).
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := client.Do(req)
	if err != nil {
		// A *url.Error names the URL and the cause, never the headers.
		return "", fmt.Errorf("credential: account %q: token generation: %w", ts.UserName, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 == 3 {
		return "", &UpstreamError{UserName: ts.UserName, StatusCode: resp.StatusCode,
			Message: "redirect refused: caproxy does not send the apiKey on to another address"}
	}
	answer, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes))
	if err != nil {
		return "", fmt.Errorf("credential: account %q: token generation: reading answer: %w", ts.UserName, err)
	}
	if resp.StatusCode/100 == 2 {
		var tr cloudagent.TokenResponse
		if json.Unmarshal(answer, &tr) == nil && tr.Token != "" {
			return tr.Token, nil
		}
	}
	msg, _ := cloudagent.ErrorMessage(answer)
	// An upstream may echo the key in any case or escaped; the message goes
	// into client answers and logs.
	msg = Redact(msg, ts.APIKey)
	return "", &UpstreamError{UserName: ts.UserName, StatusCode: resp.StatusCode, Message: msg}
}

// rememberLocked adds token to the recent tokens Redact hides; ts.mu must
// be held.
func (ts *TokenSource) rememberLocked(token string) {
	if token == "" || token == ts.recent[0] {
		return
	}
	copy(ts.recent[1:], ts.recent[:])
	ts.recent[0] = token
}

// Redact returns s with the account's apiKey and the last tokens this
// source held hidden, in any case and escaped form (see the package
// function Redact). Use it on upstream text (an error message, a body
// logged) before it reaches a client's answer or a log line.
func (ts *TokenSource) Redact(s string) string {
	ts.mu.Lock()
	secrets := append([]string{ts.APIKey}, ts.recent[:]...)
	ts.mu.Unlock()
	return Redact(s, secrets...)
}

// String names the account only.
func (ts *TokenSource) String() string {
	return "credential.TokenSource(" + strconv.Quote(ts.UserName) + ")"
}

// GoString keeps the key and token out of %#v.
func (ts *TokenSource) GoString() string {
	return "&credential.TokenSource{UserName:" + strconv.Quote(ts.UserName) + ", APIKey:" + strconv.Quote(redacted) + "}"
}

// LogValue keeps the key and token out of slog.
func (ts *TokenSource) LogValue() slog.Value {
	return slog.GroupValue(slog.String("account", ts.UserName), slog.String("auth", "token"))
}
