package proxy_test

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/caproxy/caproxy/cloudagent"
)

// oddUpstream stands in for a misbehaving CloudAgent (or a gateway in front
// of it) on one path: the simulator is strict CloudAgent and never answers
// a redirect, an HTML page or a multi-megabyte body, so this tiny handler
// answers those while everything else (token generation above all) still
// reaches the simulator. It counts the calls it answered.
type oddUpstream struct {
	path   string
	status int
	ctype  string
	body   string
	header []string // name, value pairs
	calls  atomic.Int64
}

func (o *oddUpstream) front(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != o.path {
			next.ServeHTTP(w, r)
			return
		}
		o.calls.Add(1)
		for i := 0; i+1 < len(o.header); i += 2 {
			w.Header().Set(o.header[i], o.header[i+1])
		}
		if o.ctype != "" {
			w.Header().Set("Content-Type", o.ctype)
		}
		w.WriteHeader(o.status)
		w.Write([]byte(o.body))
	})
}

const htmlPage = "<html><body><h1>Too Many Requests</h1></body></html>"

// TestHTMLLimitOnAHTSpendsTheBudget: an HTTP 429 with an HTML body (a
// gateway's page) on AHT is CloudAgent's limit all the same: the client
// gets CloudAgent's limit error, and the budget is marked spent, so the
// next miss does not call into the limit.
func TestHTMLLimitOnAHTSpendsTheBudget(t *testing.T) {
	odd := &oddUpstream{path: cloudagent.PathAHT, status: http.StatusTooManyRequests, ctype: "text/html", body: htmlPage}
	h := newHarness(t, setup{front: odd.front})
	r := h.aht(tokenAccount, "agent001")
	if r.code != http.StatusTooManyRequests || r.status() != cloudagent.StatusError || r.message() != cloudagent.MsgLimitExceeded || r.header.Get("Retry-After") == "" {
		t.Fatalf("HTML 429: %d %v %q; want CloudAgent's limit error with Retry-After", r.code, r.header, r.body)
	}
	if r := h.aht(tokenAccount, "agent002"); r.code != http.StatusTooManyRequests || r.message() != cloudagent.MsgLimitExceeded {
		t.Fatalf("next miss: %d %q", r.code, r.body)
	}
	if got := odd.calls.Load(); got != 1 {
		t.Fatalf("%d upstream AHT calls; want 1: the budget was not marked spent", got)
	}
}

// TestOddAnswersOnAHTAre502: a redirect, a non-JSON 200 and an HTML 404 on
// AHT are not CloudAgent answers: each is a CloudAgent-shaped 502 naming
// what came back, never served raw and never cached.
func TestOddAnswersOnAHTAre502(t *testing.T) {
	for _, tc := range []struct {
		name  string
		odd   *oddUpstream
		write string // in the message
	}{
		{"redirect", &oddUpstream{status: http.StatusFound, header: []string{"Location", "https://login.example/"}}, "upstream answered HTTP 302 (redirect)"},
		{"non-JSON 200", &oddUpstream{status: http.StatusOK, ctype: "text/plain", body: "OK"}, "upstream answered a non-JSON body (HTTP 200, text/plain)"},
		{"HTML 404", &oddUpstream{status: http.StatusNotFound, ctype: "text/html", body: "<html>Not Found</html>"}, "upstream answered a non-JSON body (HTTP 404, text/html)"},
		{"JSON 404", &oddUpstream{status: http.StatusNotFound, ctype: "application/json", body: `{"timestamp":1,"error":"Not Found"}`}, "upstream answered HTTP 404"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			odd := tc.odd
			odd.path = cloudagent.PathAHT
			h := newHarness(t, setup{front: odd.front})
			for i := range 2 {
				r := h.aht(tokenAccount, "agent001")
				if r.code != http.StatusBadGateway || r.status() != cloudagent.StatusError || r.message() != tc.write {
					t.Fatalf("call %d: %d %q; want 502 %q", i, r.code, r.body, tc.write)
				}
				if r.header.Get("Location") != "" {
					t.Fatalf("call %d: the redirect's Location reached the client", i)
				}
			}
			if got := odd.calls.Load(); got != 2 {
				t.Fatalf("%d upstream calls for 2 requests: the odd answer was cached", got)
			}
		})
	}
}

// bigAnswer is a successful CloudAgent answer of at least n bytes.
func bigAnswer(t *testing.T, n int, aht bool) string {
	pad := strings.Repeat("x", n)
	var v any = map[string]any{"status": "success", "message": "success",
		"details": []map[string]string{{"Comments": pad}}}
	if aht {
		v = map[string]any{"status": "success",
			"message": map[string]string{"AgentID": "agent001", "AgentName": pad, "AHT": "00:01:00"}}
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestLargeAnswerServedWhole: a 2 MiB upstream answer on AHT and on a
// cached route is served whole (today's 1 MiB cut served invalid JSON),
// and stored: the second request is a hit.
func TestLargeAnswerServedWhole(t *testing.T) {
	for _, aht := range []bool{true, false} {
		t.Run("aht="+strconv.FormatBool(aht), func(t *testing.T) {
			odd := &oddUpstream{path: cloudagent.PathFetchCDRDetails, status: http.StatusOK, ctype: "application/json", body: bigAnswer(t, 2<<20, aht)}
			if aht {
				odd.path = cloudagent.PathAHT
			}
			h := newHarness(t, setup{front: odd.front})
			ask := func() reply {
				if aht {
					return h.aht(apikeyAccount, "agent001")
				}
				return h.cdr(apikeyAccount, "2026-11-27", "apiKey", apikeyAccount.APIKey)
			}
			for i, want := range []string{"MISS", "HIT"} {
				r := ask()
				if r.code != http.StatusOK || r.body != odd.body || r.header.Get("X-Cache") != want {
					t.Fatalf("call %d: %d X-Cache %q, %d bytes (valid JSON: %v); want the %d bytes whole, %s",
						i, r.code, r.header.Get("X-Cache"), len(r.body), json.Valid([]byte(r.body)), len(odd.body), want)
				}
			}
		})
	}
}

// TestAnswerOverMaxAnswerIs502: an answer larger than upstream.max_answer
// is refused whole with a clear 502, not cut, not cached.
func TestAnswerOverMaxAnswerIs502(t *testing.T) {
	odd := &oddUpstream{path: cloudagent.PathAHT, status: http.StatusOK, ctype: "application/json"}
	odd.body = bigAnswer(t, 8<<10, true)
	h := newHarness(t, setup{front: odd.front, maxAnswer: 4 << 10})
	r := h.aht(tokenAccount, "agent001")
	if want := "upstream answer larger than 4096 bytes"; r.code != http.StatusBadGateway || r.message() != want {
		t.Fatalf("%d %q (%d bytes); want 502 %q", r.code, r.message(), len(r.body), want)
	}
}

// TestHTMLLimitOnPassThroughSpendsTheRouteBudget: a passed-through route
// with a budget (summaryReport) reads an HTML 429 as CloudAgent's limit:
// the route's budget is marked spent, so the next request is refused here.
func TestHTMLLimitOnPassThroughSpendsTheRouteBudget(t *testing.T) {
	odd := &oddUpstream{path: cloudagent.PathSummaryReport, status: http.StatusTooManyRequests, ctype: "text/html", body: htmlPage}
	h := newHarness(t, setup{front: odd.front})
	body := `{"fromDate":"2026-11-27 00:00:00","toDate":"2026-11-27 10:00:00","userName":"demo-basic"}`
	r := h.do(http.MethodPost, cloudagent.PathSummaryReport, body, "apiKey", apikeyAccount.APIKey)
	if r.code != http.StatusTooManyRequests {
		t.Fatalf("first: %d %q", r.code, r.body)
	}
	r = h.do(http.MethodPost, cloudagent.PathSummaryReport, body, "apiKey", apikeyAccount.APIKey)
	if r.code != http.StatusTooManyRequests || r.message() != cloudagent.MsgLimitExceeded {
		t.Fatalf("second: %d %q; want the route's limit error", r.code, r.body)
	}
	if got := odd.calls.Load(); got != 1 {
		t.Fatalf("%d upstream calls; want 1: the route budget was not marked spent", got)
	}
}
