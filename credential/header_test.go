package credential

import (
	"net/textproto"
	"testing"

	"github.com/caproxy/caproxy/cloudagent"
)

// TestCanonicalAPIKeyHeader: the header name Present reads without
// canonicalizing is the one net/http stores the apiKey header under.
func TestCanonicalAPIKeyHeader(t *testing.T) {
	if got := textproto.CanonicalMIMEHeaderKey(cloudagent.HeaderAPIKey); got != canonicalAPIKeyHeader {
		t.Fatalf("net/http stores %q as %q, caproxy reads %q", cloudagent.HeaderAPIKey, got, canonicalAPIKeyHeader)
	}
}
