package e2e

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caproxy/caproxy/cloudagent"
)

// TestReportingAppDropIn: through the built binary, an app gets its token
// at the reporting token path, reads a day's CDRs (GET + JSON body) for a
// token-mode account with it, then asks for AHT: all work, with exactly one
// upstream token generation and no reporting call refused upstream. An
// oversized header is refused before it reaches the upstream.
func TestReportingAppDropIn(t *testing.T) {
	s := startSim(t)
	p := startProxy(t, proxyConfig{Upstream: s.url()})
	c := newClient(t)

	r := c.do(http.MethodPost, p.url(cloudagent.PathReportsGenerateToken), `{"userName":"demo"}`, cloudagent.HeaderAPIKey, demoKey)
	var tr cloudagent.TokenResponse
	if r.code != http.StatusOK || json.Unmarshal([]byte(r.body), &tr) != nil || tr.Token == "" {
		t.Fatalf("generateToken: %d %s", r.code, r.body)
	}
	day := time.Now().Format("2006-01-02")
	body := `{"fromDate":"` + day + ` 00:00:00","toDate":"` + day + ` 23:59:59","userName":"demo"}`
	for i, want := range []string{"MISS", "HIT"} {
		r = c.do(http.MethodGet, p.url(cloudagent.PathFetchCDRDetails), body, "Authorization", "Bearer "+tr.Token)
		if r.code != http.StatusOK || !strings.Contains(r.body, `"status":"success"`) || r.header.Get("X-Cache") != want {
			t.Fatalf("fetchCDRDetails %d: %d %v %s", i, r.code, r.header.Get("X-Cache"), r.body)
		}
	}
	r = c.do(http.MethodPost, p.url("/ca_apis/aht/"), `{"userName":"demo","agentId":"agent001"}`, "Authorization", "Bearer "+tr.Token)
	if r.code != http.StatusOK || !strings.Contains(r.body, `"status":"success"`) {
		t.Fatalf("AHT: %d %s", r.code, r.body)
	}

	r = c.do(http.MethodPost, p.url(cloudagent.PathAHT), `{"userName":"demo","agentId":"agent002"}`,
		cloudagent.HeaderAPIKey, demoKey, "X-Padding", strings.Repeat("x", 100<<10))
	if r.code != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("100 KiB header: %d %s", r.code, r.body)
	}

	st := s.stats(t, c)
	if st.TokenGenerations != 1 || st.ReportAdmitted != 1 || st.ReportAuthFailed != 0 || st.AHTCalls != 1 {
		t.Fatalf("upstream saw %+v", st)
	}
}
