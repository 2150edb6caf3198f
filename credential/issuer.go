package credential

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"strings"
	"time"
)

// DefaultIssuerTTL is how long an issued client token lives when Issuer.TTL
// is zero: as long as a CloudAgent token, so clients that schedule their
// renewals for CloudAgent behave the same against caproxy.
const DefaultIssuerTTL = 60 * time.Minute

// Layout of an issued token's payload. The version byte lets a later format
// coexist with this one; the nonce makes two tokens issued in the same second
// differ, so a token says nothing about how many others exist.
const (
	tokenVersion = 1
	nonceLen     = 16
	headerLen    = 1 + 8 + nonceLen // version, expiry (unix seconds, big endian), nonce
	// maxTokenLen bounds what Verify decodes, so a huge header costs nothing.
	maxTokenLen = 1024
)

// issuerKeyLabel separates the signing key from any other use of the
// apiKey; changing it would revoke every issued token.
const issuerKeyLabel = "caproxy client token v1"

var b64 = base64.RawURLEncoding.Strict()

// Issuer makes and checks the tokens caproxy hands to its own clients from
// the locally answered generateToken endpoint, so clients in token mode never
// trigger an upstream generation.
//
// Tokens are stateless: base64url(payload) "." base64url(HMAC-SHA256(k,
// payload)), where the payload carries the userName, the expiry and a random
// nonce, and k = HMAC-SHA256(apiKey, "caproxy client token v1"). Any replica
// with the same accounts verifies them without shared state, no extra secret
// has to be configured, and rotating an account's apiKey revokes its tokens.
// Tokens cannot be revoked one by one; they expire after TTL.
//
// The zero value is ready to use.
type Issuer struct {
	// TTL is how long an issued token is accepted; zero means
	// DefaultIssuerTTL.
	TTL time.Duration
}

func (i Issuer) ttl() time.Duration {
	if i.TTL > 0 {
		return i.TTL
	}
	return DefaultIssuerTTL
}

// Issue returns a new token for userName, signed with apiKey, and when it
// expires (whole seconds, as the token records it). apiKey must not be empty:
// Verify never accepts a token for an account with an empty key, because
// anyone could sign one.
func (i Issuer) Issue(userName, apiKey string, now time.Time) (token string, expires time.Time) {
	exp := now.Add(i.ttl()).Unix()
	payload := make([]byte, headerLen+len(userName))
	payload[0] = tokenVersion
	binary.BigEndian.PutUint64(payload[1:9], uint64(exp))
	rand.Read(payload[9:headerLen]) // never fails (crypto/rand)
	copy(payload[headerLen:], userName)
	sig := sign(apiKey, payload)
	return b64.EncodeToString(payload) + "." + b64.EncodeToString(sig), time.Unix(exp, 0)
}

// Verify checks token and returns the userName it was issued for. keyFor
// returns an account's current apiKey (ok false for an unknown account). The
// token is refused when malformed, signed with another key, issued for an
// unknown account or an account without a key, or expired at now. The
// signature is compared in constant time.
func (i Issuer) Verify(token string, keyFor func(userName string) (apiKey string, ok bool), now time.Time) (userName string, ok bool) {
	if len(token) > maxTokenLen {
		return "", false
	}
	p64, s64, found := strings.Cut(token, ".")
	if !found || strings.Contains(s64, ".") {
		return "", false
	}
	payload, err := b64.DecodeString(p64)
	if err != nil || len(payload) <= headerLen || payload[0] != tokenVersion {
		return "", false
	}
	sig, err := b64.DecodeString(s64)
	if err != nil || len(sig) != sha256.Size {
		return "", false
	}
	user := string(payload[headerLen:])
	apiKey, known := keyFor(user)
	if !known || apiKey == "" {
		return "", false
	}
	if !hmac.Equal(sig, sign(apiKey, payload)) {
		return "", false
	}
	// Checked only once the signature holds, so the expiry read is trusted.
	exp := int64(binary.BigEndian.Uint64(payload[1:9]))
	if !now.Before(time.Unix(exp, 0)) {
		return "", false
	}
	return user, true
}

// sign is HMAC-SHA256 of payload under the key derived from apiKey.
func sign(apiKey string, payload []byte) []byte {
	k := hmac.New(sha256.New, []byte(apiKey))
	k.Write([]byte(issuerKeyLabel))
	m := hmac.New(sha256.New, k.Sum(nil))
	m.Write(payload)
	return m.Sum(nil)
}
