package proxy

import (
	"net/textproto"
	"strconv"
	"testing"

	"github.com/caproxy/caproxy/cloudagent"
)

// TestCanonicalAPIKey: the header name read without canonicalizing is
// the one net/http stores the apiKey header under.
func TestCanonicalAPIKey(t *testing.T) {
	if got := textproto.CanonicalMIMEHeaderKey(cloudagent.HeaderAPIKey); got != canonicalAPIKey {
		t.Fatalf("net/http stores %q as %q, caproxy reads %q", cloudagent.HeaderAPIKey, got, canonicalAPIKey)
	}
}

// TestAgeValue: the prebuilt Age values say the age, inside the table and
// beyond it.
func TestAgeValue(t *testing.T) {
	for _, secs := range []int{0, 1, 59, 3599, 3600, 86400} {
		if v := ageValue(secs); len(v) != 1 || v[0] != strconv.Itoa(secs) {
			t.Errorf("ageValue(%d) = %q", secs, v)
		}
	}
}
