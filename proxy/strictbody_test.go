package proxy_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/caproxy/caproxy/cloudagent"
	"github.com/caproxy/caproxy/cloudagent/sim"
)

// TestDeepBodyRefusedOnRoute: a body nesting arrays 32,000 deep on a
// cached route (256 of them, unauthenticated, once took the process from
// 14 MiB to 2.4 GiB) is refused by the one strict reader for its depth,
// well-formed or not, and nothing reaches the upstream.
func TestDeepBodyRefusedOnRoute(t *testing.T) {
	h := newHarness(t, setup{})
	open, closed := strings.Repeat("[", 32000), strings.Repeat("]", 32000)
	day := `"fromDate":"2026-11-27 00:00:00","toDate":"2026-11-27 23:59:59"`
	for _, body := range []string{open, open + closed,
		`{"userName":"demo-basic",` + day + `,"x":` + open + closed + `}`} {
		r := h.do(http.MethodGet, cloudagent.PathFetchCDRDetails, body, "apiKey", apikeyAccount.APIKey)
		// Unclosed, it is not JSON either; closed, its depth is refused.
		if r.code != http.StatusBadRequest || r.status() != cloudagent.StatusFalse || (body != open && !strings.Contains(r.message(), "deeper")) {
			t.Fatalf("%d %.200q; want 400 in the route's shape, refused for its depth", r.code, r.body)
		}
	}
	if st := h.sim.Stats(); st.ReportCalls != 0 {
		t.Fatalf("%d calls reached the upstream", st.ReportCalls)
	}
}

// TestCaseTwinBodyRefusedOnPassThrough: {"userName":"demo","USERNAME":
// "demo-basic"} reads as demo-basic to a case-folding reader (Go's
// encoding/json) and as demo to CloudAgent's: pass-through refuses it
// rather than authenticate one account and forward the other.
func TestCaseTwinBodyRefusedOnPassThrough(t *testing.T) {
	h := newHarness(t, setup{})
	body := `{"userName":"demo","USERNAME":"demo-basic"}`
	r := h.do(http.MethodPost, sim.PathAgentDetails, body, "apiKey", apikeyAccount.APIKey)
	if r.code != http.StatusBadRequest || r.status() != cloudagent.StatusError {
		t.Fatalf("%d %q; want 400", r.code, r.body)
	}
	if st := h.sim.Stats(); st.OtherCalls != 0 {
		t.Fatalf("%d calls reached the upstream", st.OtherCalls)
	}
}
