package credential

import (
	"encoding/base64"
	"encoding/binary"
	"strings"
	"testing"
	"time"
)

var issuerNow = time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC)

// keys is a keyFor over a fixed account table.
func keys(m map[string]string) func(string) (string, bool) {
	return func(u string) (string, bool) {
		k, ok := m[u]
		return k, ok
	}
}

var accounts = keys(map[string]string{
	"alice": "alice-key",
	"bob":   "bob-key",
	"nokey": "",
})

func TestIssuerRoundTrip(t *testing.T) {
	var iss Issuer
	tok, exp := iss.Issue("alice", "alice-key", issuerNow)
	if !exp.Equal(issuerNow.Add(DefaultIssuerTTL)) {
		t.Errorf("expires %v, want %v", exp, issuerNow.Add(DefaultIssuerTTL))
	}
	if user, ok := iss.Verify(tok, accounts, issuerNow); !ok || user != "alice" {
		t.Fatalf("Verify = %q, %v; want alice, true", user, ok)
	}
	if user, ok := iss.Verify(tok, accounts, exp.Add(-time.Second)); !ok || user != "alice" {
		t.Errorf("a second before expiry: %q, %v", user, ok)
	}
	tok2, _ := iss.Issue("alice", "alice-key", issuerNow)
	if tok2 == tok {
		t.Error("two tokens issued in the same second are equal")
	}
	if strings.Contains(tok, "alice-key") {
		t.Error("token contains the key")
	}
}

func TestIssuerExpiry(t *testing.T) {
	iss := Issuer{TTL: 5 * time.Minute}
	tok, exp := iss.Issue("alice", "alice-key", issuerNow)
	if !exp.Equal(issuerNow.Add(5 * time.Minute)) {
		t.Fatalf("expires %v", exp)
	}
	for _, at := range []time.Time{exp, exp.Add(time.Nanosecond), exp.Add(time.Hour)} {
		if _, ok := iss.Verify(tok, accounts, at); ok {
			t.Errorf("expired token accepted at %v (expires %v)", at, exp)
		}
	}
	// The expiry is in the signed token, not in the verifier's TTL.
	if _, ok := (Issuer{TTL: time.Hour}).Verify(tok, accounts, exp); ok {
		t.Error("a longer verifier TTL extended an issued token")
	}
}

func TestIssuerKeys(t *testing.T) {
	var iss Issuer
	tok, _ := iss.Issue("alice", "alice-key", issuerNow)
	if _, ok := iss.Verify(tok, keys(map[string]string{"alice": "rotated-key"}), issuerNow); ok {
		t.Error("token accepted after the account's key changed")
	}
	if _, ok := iss.Verify(tok, keys(map[string]string{"bob": "alice-key"}), issuerNow); ok {
		t.Error("token accepted for an unknown account")
	}
	bobTok, _ := iss.Issue("alice", "bob-key", issuerNow) // signed with another account's key
	if _, ok := iss.Verify(bobTok, accounts, issuerNow); ok {
		t.Error("token signed with bob's key accepted for alice")
	}
	empty, _ := iss.Issue("nokey", "", issuerNow)
	if _, ok := iss.Verify(empty, accounts, issuerNow); ok {
		t.Error("token accepted for an account without a key")
	}
}

// TestIssuerUserBinding: a token names one user for good, even when accounts
// share a key, and its user cannot be swapped under the signature.
func TestIssuerUserBinding(t *testing.T) {
	var iss Issuer
	shared := keys(map[string]string{"alice": "same-key", "bob": "same-key", "alic": "same-key"})
	tok, _ := iss.Issue("alice", "same-key", issuerNow)
	if user, ok := iss.Verify(tok, shared, issuerNow); !ok || user != "alice" {
		t.Fatalf("Verify = %q, %v; want alice", user, ok)
	}
	p64, s64, _ := strings.Cut(tok, ".")
	payload, err := b64.DecodeString(p64)
	if err != nil {
		t.Fatal(err)
	}
	for _, user := range []string{"bob", "alic", "alice\x00", "Alice"} {
		forged := append(payload[:headerLen:headerLen], user...)
		ft := b64.EncodeToString(forged) + "." + s64
		if got, ok := iss.Verify(ft, shared, issuerNow); ok {
			t.Errorf("payload renamed to %q verified as %q", user, got)
		}
	}
}

func TestIssuerTampered(t *testing.T) {
	var iss Issuer
	tok, _ := iss.Issue("alice", "alice-key", issuerNow)
	p64, s64, _ := strings.Cut(tok, ".")
	payload, _ := b64.DecodeString(p64)
	sig, _ := b64.DecodeString(s64)

	flip := func(b []byte, i int) []byte {
		c := append([]byte(nil), b...)
		c[i] ^= 1
		return c
	}
	later := append([]byte(nil), payload...)
	binary.BigEndian.PutUint64(later[1:9], uint64(issuerNow.Add(24*time.Hour).Unix()))

	cases := map[string]string{
		"payload version":   b64.EncodeToString(flip(payload, 0)) + "." + s64,
		"payload expiry":    b64.EncodeToString(later) + "." + s64,
		"payload nonce":     b64.EncodeToString(flip(payload, 12)) + "." + s64,
		"payload user":      b64.EncodeToString(flip(payload, len(payload)-1)) + "." + s64,
		"signature first":   p64 + "." + b64.EncodeToString(flip(sig, 0)),
		"signature last":    p64 + "." + b64.EncodeToString(flip(sig, len(sig)-1)),
		"signature swapped": p64 + "." + strings.SplitN(mustIssue("alice", "bob-key"), ".", 2)[1],
	}
	for name, ft := range cases {
		if _, ok := iss.Verify(ft, accounts, issuerNow); ok {
			t.Errorf("%s: tampered token accepted", name)
		}
	}
}

func mustIssue(user, key string) string {
	tok, _ := Issuer{}.Issue(user, key, issuerNow)
	return tok
}

func TestIssuerMalformed(t *testing.T) {
	var iss Issuer
	good := mustIssue("alice", "alice-key")
	p64, s64, _ := strings.Cut(good, ".")
	payload, _ := b64.DecodeString(p64)
	noUser := b64.EncodeToString(payload[:headerLen])

	// bob's payload (28 bytes) needs padding in padded base64.
	bp64, bs64, _ := strings.Cut(mustIssue("bob", "bob-key"), ".")
	bobPayload, _ := b64.DecodeString(bp64)
	padded := base64.URLEncoding.EncodeToString(bobPayload) + "." + bs64
	// A token whose text has '-' or '_', so the standard alphabet differs.
	urlOnly := good
	for i := 0; !strings.ContainsAny(urlOnly, "-_"); i++ {
		if i == 1000 {
			t.Fatal("no token with '-' or '_' in 1000 tries")
		}
		urlOnly = mustIssue("alice", "alice-key")
	}

	for _, c := range []struct{ name, token string }{
		{"empty", ""},
		{"dot only", "."},
		{"no dot", p64 + s64},
		{"no signature", p64 + "."},
		{"no payload", "." + s64},
		{"two dots", good + "." + s64},
		{"trailing dot", good + "."},
		{"not base64 payload", "!!!!" + "." + s64},
		{"not base64 signature", p64 + ".????"},
		{"padded payload", padded},
		{"std alphabet", strings.NewReplacer("-", "+", "_", "/").Replace(urlOnly)},
		{"short signature", p64 + "." + b64.EncodeToString([]byte("short"))},
		{"header only, no user", noUser + "." + s64},
		{"short payload", b64.EncodeToString(payload[:5]) + "." + s64},
		{"whitespace", " " + good},
		{"bearer prefix", "Bearer " + good},
		{"huge", strings.Repeat("A", 5000) + "." + s64},
		{"version 2", b64.EncodeToString(append([]byte{2}, payload[1:]...)) + "." + s64},
	} {
		if user, ok := iss.Verify(c.token, accounts, issuerNow); ok {
			t.Errorf("%s: accepted as %q", c.name, user)
		}
	}
	for _, tok := range []string{good, urlOnly, bp64 + "." + bs64} {
		if _, ok := iss.Verify(tok, accounts, issuerNow); !ok {
			t.Errorf("untampered token %q refused", tok)
		}
	}
}
