package proxy_test

import (
	"net/http"
	"testing"

	"github.com/caproxy/caproxy/cache"
)

// TestAmbiguousBodiesRefused checks that an AHT body CloudAgent and
// encoding/json would read differently (a field named twice, a field name
// in another case) is answered 400 locally and never reaches the upstream.
func TestAmbiguousBodiesRefused(t *testing.T) {
	h := newHarness(t, setup{})
	for body, want := range map[string]error{
		`{"userName":"demo-basic","agentId":"agent001","agentId":null}`:       cache.ErrFieldRepeated,
		`{"userName":"demo-basic","agentId":"agent001","agentId":"agent002"}`: cache.ErrFieldRepeated,
		`{"userName":"demo-basic","AgentId":"agent001"}`:                      cache.ErrFieldCase,
	} {
		r := h.do(http.MethodPost, "/ca_apis/aht", body, "apiKey", apikeyAccount.APIKey)
		if r.code != http.StatusBadRequest || r.message() != want.Error() {
			t.Errorf("%s: HTTP %d %s, want 400 %q", body, r.code, r.body, want)
		}
	}
	if st := h.sim.Stats(); st.AHTCalls != 0 {
		t.Errorf("%d ambiguous bodies reached the upstream", st.AHTCalls)
	}
}
