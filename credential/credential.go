// Package credential holds caproxy's secrets-bearing credentials: the ones it
// sends upstream to CloudAgent, and the ones it hands to its own clients.
//
// Upstream, an account authenticates either with its apiKey on every call
// (APIKey, CloudAgent's BASIC_AUTH mode) or with a bearer token generated from
// that key (TokenSource, TOKEN_AUTH mode). CloudAgent allows only 10 token
// generations per account per hour and a new token invalidates every earlier
// one, so caproxy must be the only owner of an account's token: TokenSource
// generates one token at a time, single-flight, refreshes it shortly before
// it expires, and refuses to generate beyond an hourly guard. Replicas share
// one token per account through a TokenStore (RedisTokenStore), so exactly
// one of them generates and none logs the others out; a single node keeps
// its token across restarts in one (BoltTokenStore, a file of its own).
//
// Downstream, clients that call generateToken through caproxy get a token
// from Issuer: stateless and HMAC-signed with a key derived from the
// account's apiKey, so every replica with the same configuration verifies it
// and the upstream token is never handed out.
//
// Nothing in this package writes a key or token into an error, a log line or
// a formatted value.
package credential

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"log/slog"
	"net/http"

	"github.com/caproxy/caproxy/cloudagent"
)

// Upstream attaches one account's upstream credentials to an outgoing request.
type Upstream interface {
	// Apply sets the credentials on h (the outgoing request's header) and returns
	// an opaque handle of what it used, for Reject.
	Apply(ctx context.Context, h http.Header) (handle string, err error)
	// Reject reports that the upstream refused the credentials behind handle
	// (token expired or invalid), so the next Apply gets fresh ones. Rejecting a
	// handle that is no longer current is a no-op (so N concurrent rejections of
	// one token cause one regeneration).
	Reject(handle string)
}

// redacted replaces a secret wherever a value is formatted or logged.
const redacted = "[REDACTED]"

// ErrNoAPIKey is returned by APIKey.Apply when no key is configured, rather
// than sending a request CloudAgent is sure to refuse.
var ErrNoAPIKey = errors.New("credential: no apiKey configured")

// APIKey is an account's CloudAgent apiKey, sent as the apiKey header on every
// upstream call (CloudAgent's BASIC_AUTH mode). Its String, GoString and
// LogValue never reveal the key, so an APIKey can be logged or printed by
// mistake without leaking it; only an explicit string(k) conversion does.
type APIKey string

var _ Upstream = APIKey("")

// Apply sets the apiKey header. The handle is always "": there is nothing to
// renew, so Reject has nothing to do.
func (k APIKey) Apply(_ context.Context, h http.Header) (string, error) {
	if k == "" {
		return "", ErrNoAPIKey
	}
	h.Set(cloudagent.HeaderAPIKey, string(k))
	return "", nil
}

// Reject is a no-op: a refused apiKey stays refused until the operator
// changes it, and there is no fresh one to fetch.
func (APIKey) Reject(string) {}

// Redact returns s with the key hidden in any case and escaped form (see
// the package function Redact).
func (k APIKey) Redact(s string) string { return Redact(s, string(k)) }

// String hides the key.
func (APIKey) String() string { return redacted }

// GoString hides the key from %#v.
func (APIKey) GoString() string { return `credential.APIKey("` + redacted + `")` }

// LogValue hides the key from slog.
func (APIKey) LogValue() slog.Value { return slog.StringValue(redacted) }

// CheckKey reports whether got equals want, in time that depends on neither
// value nor on whether their lengths differ: both are hashed first, so only
// equal-length digests are compared. An empty want never matches, so an
// account configured without a key cannot be opened with an empty header.
func CheckKey(got, want string) bool { return NewKey(want).Matches(got) }

// Key is an apiKey kept as its SHA-256 digest, so checking a presented key
// (Matches) costs one hash, not two, on every request. The zero Key matches
// nothing.
type Key struct {
	digest [sha256.Size]byte
	set    bool
}

// NewKey returns the Key of apiKey; an empty apiKey gives the zero Key.
func NewKey(apiKey string) Key {
	if apiKey == "" {
		return Key{}
	}
	return Key{digest: sha256.Sum256([]byte(apiKey)), set: true}
}

// Matches reports, in constant time, whether got is the key.
func (k Key) Matches(got string) bool {
	g := sha256.Sum256([]byte(got))
	return subtle.ConstantTimeCompare(g[:], k.digest[:]) == 1 && k.set
}

// String keeps the digest out of logs too.
func (Key) String() string { return redacted }
