package proxy_test

import (
	"net/http"
	"strconv"
	"sync"
	"testing"

	"github.com/caproxy/caproxy/cloudagent"
)

// TestEveryTokenPathIsLocal: generateToken at either of CloudAgent's token
// paths, in any spelling, gets a caproxy token and never reaches upstream.
func TestEveryTokenPathIsLocal(t *testing.T) {
	h := newHarness(t, setup{})
	for _, path := range []string{
		cloudagent.PathGenerateToken, cloudagent.PathReportsGenerateToken,
		"//ca_reports/CAToken/generateToken/", "/ca_reports/./CAToken/%67enerateToken",
	} {
		for _, a := range h.accounts {
			r := h.do(http.MethodPost, path, `{"userName":"`+a.UserName+`"}`, "apiKey", a.APIKey)
			if r.code != http.StatusOK || field(r.body, "token") == "" {
				t.Fatalf("%s for %s: %d %s", path, a.UserName, r.code, r.body)
			}
			// The token is caproxy's: it opens AHT through caproxy.
			tok := field(r.body, "token")
			if r := h.do(http.MethodPost, cloudagent.PathAHT, `{"userName":"`+a.UserName+`","campaignName":"Sales"}`,
				"Authorization", "Bearer "+tok); r.code != http.StatusOK {
				t.Fatalf("AHT with the token from %s: %d %s", path, r.code, r.body)
			}
		}
	}
	// Only the AHT calls above needed an upstream token (one, for demo).
	if st := h.sim.Stats(); st.TokenGenerations != 1 || st.TokenRejected != 0 {
		t.Fatalf("upstream token calls: %+v", st)
	}
}

// TestOddSpellingsOfAHTShareItsBudget: 70 concurrent requests for new
// agents, spelled four ways, are all AHT to caproxy: never more than 50
// upstream calls in the window, none refused by the upstream.
func TestOddSpellingsOfAHTShareItsBudget(t *testing.T) {
	h := newHarness(t, setup{})
	spellings := []string{"/ca_apis/aht/", "//ca_apis/aht", "/ca_apis/./aht", "/ca_apis/%61ht"}
	var wg sync.WaitGroup
	codes := make([]int, 70)
	for i := range 70 {
		wg.Go(func() {
			body := `{"userName":"demo-basic","agentId":"new-agent-` + strconv.Itoa(i) + `"}`
			codes[i] = h.do(http.MethodPost, spellings[i%len(spellings)], body, "apiKey", apikeyAccount.APIKey).code
		})
	}
	wg.Wait()
	st := h.sim.Stats()
	if st.AHTLimited != 0 || st.AHTAdmitted > 50 || st.AHTCalls > 50 {
		t.Fatalf("upstream saw %d AHT calls, %d admitted, %d refused for its limit", st.AHTCalls, st.AHTAdmitted, st.AHTLimited)
	}
	limited := 0
	for _, c := range codes {
		if c == http.StatusTooManyRequests {
			limited++
		}
	}
	if limited != 70-int(st.AHTCalls) {
		t.Fatalf("%d answered 429, %d upstream calls; want the 70 split between them", limited, st.AHTCalls)
	}
}

// TestUncleanablePathIsRefused: a path caproxy cannot clean safely is
// answered 400 and never forwarded.
func TestUncleanablePathIsRefused(t *testing.T) {
	h := newHarness(t, setup{})
	for _, path := range []string{"/ca_apis%2Faht", "/ca_apis/aht;x=1", "/../ca_apis/aht"} {
		r := h.do(http.MethodPost, path, `{"userName":"demo-basic","agentId":"a"}`, "apiKey", apikeyAccount.APIKey)
		if r.code != http.StatusBadRequest || r.status() != cloudagent.StatusError {
			t.Fatalf("%s: %d %s", path, r.code, r.body)
		}
	}
	if st := h.sim.Stats(); st.AHTCalls+st.OtherCalls != 0 {
		t.Fatalf("refused paths reached the upstream: %+v", st)
	}
}
