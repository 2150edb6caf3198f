package proxy_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caproxy/caproxy/cloudagent/sim"
)

// TestOutcomeOnlyWhenDelivered serves a miss slower than the server's
// WriteTimeout: the client gets no answer, so the access log and metrics
// must say client_gone, not miss (issue 13, item 6: a fetch answered after
// WriteTimeout was logged as served).
func TestOutcomeOnlyWhenDelivered(t *testing.T) {
	h := newHarness(t, setup{sim: sim.Options{Latency: 300 * time.Millisecond}})
	srv := httptest.NewUnstartedServer(h.proxy)
	srv.Config.WriteTimeout = 50 * time.Millisecond
	srv.Start()
	defer srv.Close()

	body := `{"userName":"demo-basic","agentId":"agent001"}`
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/ca_apis/aht", strings.NewReader(body))
	req.Header.Set("apiKey", apikeyAccount.APIKey)
	resp, err := http.DefaultClient.Do(req)
	if err == nil {
		resp.Body.Close()
		t.Fatalf("got HTTP %d after the write deadline, want no answer", resp.StatusCode)
	}
	logs := h.logText()
	if !strings.Contains(logs, "outcome=client_gone") {
		t.Fatalf("access log does not record client_gone:\n%s", logs)
	}
	if strings.Contains(logs, "outcome=miss") {
		t.Fatalf("access log records a miss the client never got:\n%s", logs)
	}
	// The answer is cached all the same: the next client gets it at once.
	if r := h.aht(apikeyAccount, "agent001"); r.code != http.StatusOK || r.header.Get("X-Cache") != "HIT" {
		t.Fatalf("next request: %d %q, want 200 HIT", r.code, r.header.Get("X-Cache"))
	}
}
