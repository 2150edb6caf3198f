package credential

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"
)

// DefaultSharedCheck is how long a TokenSource with a Shared store uses the
// token it read before asking the store again, when SharedCheck is zero.
const DefaultSharedCheck = time.Second

const (
	// claimLease is how long a replica may hold the claim to generate: the
	// generation's own bound plus room for the guard and the store. A
	// replica that dies while generating blocks the others this long.
	claimLease = generateTimeout + 15*time.Second
	// sharedWait bounds one read-or-generate round (a flight): long enough
	// to outwait a dead claim holder's lease and then generate.
	sharedWait = claimLease + generateTimeout
	// sharedPoll is how often a replica waiting for another's generation
	// looks for the new token. Each look is one small Redis read.
	sharedPoll = 20 * time.Millisecond
	// storeTimeout bounds a store call that no caller waits on (Reject, and
	// the Put or Release after a generation).
	storeTimeout = 5 * time.Second
)

// ErrStoreUnavailable is matched (errors.Is) by the error Apply returns
// when a token is needed but the shared store cannot be reached: no token
// is generated without it (that could log the other replicas out).
var ErrStoreUnavailable = errors.New("shared token store unavailable")

// sharedResult is the outcome of one read-or-generate round on the shared
// store.
type sharedResult struct {
	// tok is the token to use from now on: a fresh one when err is nil, the
	// still valid one being replaced (or none) when err is set.
	tok Token
	// err says why no fresh token could be had.
	err error
	// retryAt is when this replica may next try to generate, after err.
	retryAt time.Time
	// storeDown says the store could not be read, so tok says nothing and
	// the local copy stays as it is.
	storeDown bool
}

func (ts *TokenSource) sharedCheck() time.Duration {
	if ts.SharedCheck > 0 {
		return ts.SharedCheck
	}
	return DefaultSharedCheck
}

// applyShared is Apply with a Shared store. The token read from the store is
// kept locally and used for SharedCheck; past that, or once it is due for
// refresh or rejected, one flight per process reads the store again and, if
// the store's token needs replacing too, takes part in electing the one
// replica that generates.
func (ts *TokenSource) applyShared(ctx context.Context, h http.Header) (string, error) {
	ts.mu.Lock()
	now := ts.now()
	valid := ts.token != "" && now.Before(ts.expires)
	if !ts.checked.IsZero() && now.Sub(ts.checked) < ts.sharedCheck() {
		if valid && now.Before(ts.expires.Add(-ts.refreshBefore())) {
			return ts.useLocked(h)
		}
		if now.Before(ts.retryAt) {
			// A generation failed recently, here or on another replica: do
			// not try again yet.
			if valid {
				return ts.useLocked(h)
			}
			err := ts.lastErr
			ts.mu.Unlock()
			return "", err
		}
	}
	return ts.joinLocked(ctx, h, ts.syncShared)
}

// syncShared runs one read-or-generate round for flight f and installs its
// outcome as the local copy.
func (ts *TokenSource) syncShared(ctx context.Context, f *flight) {
	ctx, cancel := context.WithTimeout(ctx, sharedWait)
	defer cancel()
	r := ts.obtain(ctx)

	ts.mu.Lock()
	prev := ts.handle
	if !r.storeDown {
		// The store is the truth: follow it, also when it has no token.
		ts.token, ts.handle, ts.expires = r.tok.Value, r.tok.ID, r.tok.Expires
		ts.rememberLocked(r.tok.Value)
	}
	ts.checked = ts.now()
	if r.err == nil {
		ts.lastErr, ts.retryAt, ts.streak = nil, time.Time{}, 0
		f.token, f.handle = ts.token, ts.handle
	} else {
		ts.lastErr, ts.retryAt = r.err, r.retryAt
		f.err = r.err
	}
	ts.flight = nil
	ts.mu.Unlock()
	defer close(f.done) // after the log line, as generate does

	if r.err == nil && r.tok.ID != prev {
		ts.logger().Debug("using shared upstream token", "account", ts.UserName, "token_id", r.tok.ID, "expires", r.tok.Expires)
	}
}

// obtain returns the store's token if it is fresh; otherwise it claims the
// generation and generates, or waits while another replica does.
func (ts *TokenSource) obtain(ctx context.Context) sharedResult {
	for {
		cur, ok, err := ts.Shared.Get(ctx, ts.UserName)
		if err != nil {
			return ts.storeFailed(ctx, err)
		}
		var stored *Token
		if ok {
			stored = &cur
		}
		if tok, put := ts.putBack(ctx, stored); put {
			return sharedResult{tok: tok}
		}
		now := ts.now()
		ts.mu.Lock()
		rejected := ok && cur.ID == ts.rejected
		retryAt, lastErr := ts.retryAt, ts.lastErr
		ts.mu.Unlock()

		// keep is the token being replaced, used while replacing it fails.
		var keep Token
		if ok && !rejected && now.Before(cur.Expires) {
			keep = cur
			if now.Before(cur.Expires.Add(-ts.refreshBefore())) {
				return sharedResult{tok: cur}
			}
		}
		if lastErr != nil && now.Before(retryAt) {
			// This replica's generation failed recently, or it saw another
			// replica's hold: no new attempt yet.
			return sharedResult{tok: keep, err: lastErr, retryAt: retryAt}
		}
		if err := context.Cause(ctx); err != nil {
			return sharedResult{tok: keep, err: ts.gaveUp(err)}
		}

		seen := ""
		if ok {
			seen = cur.ID
		}
		cl, err := ts.Shared.Claim(ctx, ts.UserName, ts.owner, seen, claimLease)
		if err != nil {
			return ts.storeFailed(ctx, err)
		}
		switch {
		case cl.Changed:
			// Another replica stored or dropped a token meanwhile: read it.
			continue
		case cl.Won:
			if r, done := ts.generateShared(ctx, keep); done {
				return r
			}
			continue
		case cl.Hold.For > 0:
			until := now.Add(cl.Hold.For)
			if cl.Hold.Recovering {
				// Continue the run of refused fresh tokens where the
				// replica that saw the last one left it, so the next
				// pause here is as long as it would be there.
				ts.mu.Lock()
				ts.refused = max(ts.refused, cl.Hold.Refused)
				ts.mu.Unlock()
			}
			ts.logger().Debug("not generating upstream token: another replica's generation failed", "account", ts.UserName, "retry_at", until)
			return sharedResult{tok: keep, err: ts.heldError(cl.Hold, until), retryAt: until}
		}
		// Another replica is generating: look again shortly.
		t := time.NewTimer(sharedPoll)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return sharedResult{tok: keep, err: ts.gaveUp(context.Cause(ctx))}
		}
	}
}

// putBack puts this replica's copy of the token into a store that has
// none (Redis restarted empty, or came back after an outage without its
// data), or that has an older one than this copy (another replica, holding
// a token this one's generation superseded, put it back first after the
// data loss), so the replicas keep the newest token instead of generating
// a new one that would log every copy out. A copy this replica saw
// rejected, or one due for refresh, is not put back; Put stores only while
// nobody holds the claim to generate, and only the newest token the
// account had (its epoch), so a superseded copy loses to its successor.
func (ts *TokenSource) putBack(ctx context.Context, stored *Token) (Token, bool) {
	ts.mu.Lock()
	tok := Token{ID: ts.handle, Value: ts.token, Expires: ts.expires}
	rejected := ts.rejected
	ts.mu.Unlock()
	now := ts.now()
	if tok.Value == "" || tok.ID == rejected || !now.Before(tok.Expires.Add(-ts.refreshBefore())) {
		return Token{}, false
	}
	if stored != nil && !tok.Expires.After(stored.Expires) {
		return Token{}, false
	}
	put, err := ts.Shared.Put(ctx, ts.UserName, ts.owner, tok, tok.Expires.Sub(now))
	if err != nil || !put {
		return Token{}, false
	}
	if stored != nil {
		ts.logger().Info("shared token store had an older upstream token than this replica's; put this replica's back",
			"account", ts.UserName, "token_id", tok.ID, "replaced_token_id", stored.ID)
	} else {
		ts.logger().Info("shared token store had no upstream token; put this replica's back", "account", ts.UserName, "token_id", tok.ID)
	}
	return tok, true
}

// generateShared generates a token as the claim holder and stores it for the
// other replicas. done false means another replica took the claim over
// meanwhile, so the caller should read the store again.
func (ts *TokenSource) generateShared(ctx context.Context, keep Token) (r sharedResult, done bool) {
	start := ts.now()
	gctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), generateTimeout)
	value, err := ts.fetch(gctx)
	cancel()
	// The store calls that finish the round must happen even if the round's
	// own bound has passed while generating.
	sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), storeTimeout)
	defer scancel()
	now := ts.now()
	log := ts.logger()

	if err != nil {
		ts.mu.Lock()
		ts.streak++
		retryAt := now.Add(min(minRetry<<min(ts.streak-1, 10), maxRetry))
		ts.mu.Unlock()
		le, limited := errors.AsType[*GenerationLimitError](err)
		if limited && le.NextFree.After(now) {
			retryAt = le.NextFree
		}
		ts.failures.Add(1)
		// Hold every replica off for the backoff: the guard and the
		// upstream are shared, so each replica trying in turn would spend
		// generations as fast as one replica without a backoff.
		hold := Hold{For: retryAt.Sub(now), Limited: limited, Message: err.Error()}
		if rerr := ts.Shared.Release(sctx, ts.UserName, ts.owner, hold); rerr != nil {
			log.Warn("could not record failed token generation in the shared store", "account", ts.UserName, "err", rerr)
		}
		attrs := []any{"account", ts.UserName, "retry_at", retryAt, "keeping_current_token", keep.Value != ""}
		if limited {
			log.Warn("not generating upstream token: hourly generation limit reached", append(attrs, "next_allowed", le.NextFree)...)
		} else {
			log.Warn("upstream token generation failed", append(attrs, "err", err)...)
		}
		return sharedResult{tok: keep, err: err, retryAt: retryAt}, true
	}

	// Expiry counted from before the call went out, as without a store.
	tok := Token{ID: TokenID(value), Value: value, Expires: start.Add(ts.ttl())}
	n := ts.generations.Add(1)
	stored, perr := ts.Shared.Put(sctx, ts.UserName, ts.owner, tok, tok.Expires.Sub(now))
	switch {
	case perr != nil:
		// The new token has already logged out the old one everywhere; use
		// it here at least. Other replicas get it after their old one is
		// refused and, failing to drop it, replace it (one more generation).
		log.Warn("generated upstream token but could not share it", "account", ts.UserName, "token_id", tok.ID, "err", perr)
		return sharedResult{tok: tok}, true
	case !stored:
		log.Warn("generated upstream token after the claim to generate had lapsed; using the shared token instead", "account", ts.UserName, "token_id", tok.ID)
		return sharedResult{}, false
	}
	log.Info("generated upstream token", "account", ts.UserName, "token_id", tok.ID, "expires", tok.Expires, "generated_total", n, "shared", true)
	return sharedResult{tok: tok}, true
}

// storeFailed is the outcome of a round whose store call failed: fail
// closed (no generation without the store, which might log the other
// replicas out) but keep the local copy, and look again after minRetry.
func (ts *TokenSource) storeFailed(ctx context.Context, err error) sharedResult {
	if cause := context.Cause(ctx); cause != nil {
		return sharedResult{storeDown: true, err: ts.gaveUp(cause)}
	}
	ts.logger().Warn("shared token store unavailable; keeping the current upstream token, not generating", "account", ts.UserName, "err", err)
	return sharedResult{
		storeDown: true,
		err:       fmt.Errorf("credential: account %q: %w: %w", ts.UserName, ErrStoreUnavailable, err),
		retryAt:   ts.now().Add(minRetry),
	}
}

// gaveUp is the error of a round that ran out of time.
func (ts *TokenSource) gaveUp(cause error) error {
	return fmt.Errorf("credential: account %q: waiting for upstream token from another replica: %w", ts.UserName, cause)
}

// heldError is the error of a round that found another replica's hold.
func (ts *TokenSource) heldError(h Hold, until time.Time) error {
	if h.Recovering {
		return &RecoveringError{UserName: ts.UserName, RetryAt: until, Refused: h.Refused}
	}
	if h.Limited {
		return &GenerationLimitError{UserName: ts.UserName, NextFree: until}
	}
	return fmt.Errorf("credential: account %q: upstream token generation failed on another replica; next attempt at %s: %s",
		ts.UserName, until.UTC().Format(time.RFC3339), h.Message)
}

// rejectShared is Reject with a Shared store: it forgets the local copy if
// it is the rejected token and drops the token from the store if it is still
// the one there, so however many replicas reject one token, it is replaced
// once.
func (ts *TokenSource) rejectShared(handle string) {
	ts.init()
	ts.mu.Lock()
	if handle == ts.rejected {
		// Already dropped (or being dropped) by this replica.
		ts.mu.Unlock()
		return
	}
	ts.rejected = handle
	var pause time.Duration
	var fresh bool
	if ts.token != "" && handle == ts.handle {
		pause, fresh = ts.noteRefusalLocked(handle, ts.now())
		ts.token, ts.handle, ts.expires = "", "", time.Time{}
	}
	retryAt, n := ts.retryAt, ts.refused
	ts.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	if fresh {
		ts.logPause(pause, retryAt, n)
		ts.holdOthers(ctx, handle, pause, n)
	}
	dropped, err := ts.Shared.Drop(ctx, ts.UserName, handle)
	switch {
	case err != nil:
		// The next round still replaces it: it never uses a token it saw
		// rejected, and claims to replace it.
		ts.logger().Warn("could not drop rejected upstream token from the shared store", "account", ts.UserName, "err", err)
	case dropped && !fresh:
		ts.logger().Info("upstream token rejected; the next call generates a new one", "account", ts.UserName, "token_id", handle)
	}
}

// holdOthers extends a recovery pause to every replica: while the refused
// token is still the store's and nobody claims its replacement, it claims
// it, drops the token and gives the claim up leaving a hold for pause, so
// no replica generates in between. Otherwise another replica got there
// first: it is generating, or has dropped the token (and held the others).
func (ts *TokenSource) holdOthers(ctx context.Context, handle string, pause time.Duration, refused int) {
	cl, err := ts.Shared.Claim(ctx, ts.UserName, ts.owner, handle, claimLease)
	if err == nil && cl.Won {
		if _, err = ts.Shared.Drop(ctx, ts.UserName, handle); err == nil {
			err = ts.Shared.Release(ctx, ts.UserName, ts.owner, Hold{For: pause, Recovering: true, Refused: refused,
				Message: "upstream refused a freshly generated token"})
		}
	}
	if err != nil {
		ts.logger().Warn("could not share the token generation pause", "account", ts.UserName, "err", err)
	}
}
