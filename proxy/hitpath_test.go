package proxy

import (
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
)

// TestAgeValue: the prebuilt Age values say the age, inside the table and
// beyond it.
func TestAgeValue(t *testing.T) {
	for _, secs := range []int{0, 1, 59, 3599, 3600, 86400} {
		if v := ageValue(secs); len(v) != 1 || v[0] != strconv.Itoa(secs) {
			t.Errorf("ageValue(%d) = %q", secs, v)
		}
	}
}

// TestRequestID: a client's id is echoed; a missing or oversized one is
// replaced by a generated one, unique, echoed, and unchanged by later ones
// (its bytes share the header value's allocation).
func TestRequestID(t *testing.T) {
	for _, tc := range []struct {
		name, sent string
		echoed     bool
	}{
		{"client's id echoed", "abc-123", true},
		{"none sent", "", false},
		{"oversized replaced", strings.Repeat("x", 129), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", "/ca_apis/aht", nil)
			if tc.sent != "" {
				r.Header.Set("X-Request-Id", tc.sent)
			}
			w := httptest.NewRecorder()
			id := requestID(w, r)
			if got := w.Header().Get("X-Request-Id"); got != id {
				t.Fatalf("header %q, returned %q", got, id)
			}
			if tc.echoed != (id == tc.sent) {
				t.Fatalf("id %q for sent %q", id, tc.sent)
			}
			if !tc.echoed && !strings.HasPrefix(id, requestIDPrefix) {
				t.Fatalf("generated id %q lacks the process prefix %q", id, requestIDPrefix)
			}
		})
	}
	seen := map[string]bool{}
	var first, firstCopy string
	for i := range 1000 {
		id := requestID(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
		if seen[id] {
			t.Fatalf("id %q generated twice", id)
		}
		seen[id] = true
		if i == 0 {
			first, firstCopy = id, strings.Clone(id)
		}
	}
	if first != firstCopy {
		t.Fatalf("first id changed from %q to %q", firstCopy, first)
	}
}
