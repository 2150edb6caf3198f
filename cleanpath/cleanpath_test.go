package cleanpath

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestCanonicalPath(t *testing.T) {
	for _, tc := range []struct {
		in, want string // want "" means refused
	}{
		{"/ca_apis/aht", "/ca_apis/aht"},
		{"/ca_apis/aht/", "/ca_apis/aht"},
		{"//ca_apis/aht", "/ca_apis/aht"},
		{"/ca_apis//aht//", "/ca_apis/aht"},
		{"/ca_apis/./aht", "/ca_apis/aht"},
		{"/ca_apis/%61ht", "/ca_apis/aht"},
		{"/ca_apis/%41%48%54", "/ca_apis/AHT"}, // case is CloudAgent's business
		{"/%63a_apis/aht", "/ca_apis/aht"},
		{"/ca_apis/x/../aht", "/ca_apis/aht"},
		{"/ca_apis/%2e/aht", "/ca_apis/aht"},
		{"/ca_apis/%2E%2E/ca_apis/aht", "/ca_apis/aht"},
		{"/ca_apis/a%20b", "/ca_apis/a%20b"},
		{"/ca_apis/a%c3%a9", "/ca_apis/a%C3%A9"},
		{"/ca_reports/CAToken/generateToken/", "/ca_reports/CAToken/generateToken"},
		{"/", "/"},
		{"", "/"},
		{"/.hidden", "/.hidden"},
		{"/ca_apis/aht;jsessionid=1", ""},
		{"/ca_apis%2Faht", ""},
		{"/ca_apis%2faht", ""},
		{"/ca_apis%5Caht", ""},
		{"/ca_apis/aht%3B", ""},
		{"/ca_apis/aht%00", ""},
		{"/ca_apis/aht%", ""},
		{"/ca_apis/aht%6", ""},
		{"/ca_apis/aht%zz", ""},
		{"/../ca_apis/aht", ""},
		{"/ca_apis/../../aht", ""},
		{`/ca_apis\aht`, ""},
		{"ca_apis/aht", ""},
	} {
		got, err := Canonical(tc.in)
		if tc.want == "" {
			if err == nil {
				t.Errorf("Canonical(%q) = %q, want refused", tc.in, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("Canonical(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
		// Canonical is a fixed point.
		if again, err := Canonical(got); err != nil || again != got {
			t.Errorf("Canonical(%q) = %q, %v; not a fixed point", got, again, err)
		}
	}
}

func TestCanonicalizeRewritesRequest(t *testing.T) {
	for in, want := range map[string]string{
		"/ca_apis/%61ht":   "/ca_apis/aht",
		"//ca_apis/aht/":   "/ca_apis/aht",
		"/ca_apis/a%20b/":  "/ca_apis/a%20b",
		"/ca_apis/%7e/aht": "/ca_apis/~/aht",
	} {
		r := httptest.NewRequest(http.MethodPost, "http://caproxy"+in, nil)
		w := httptest.NewRecorder()
		if !Canonicalize(w, r) {
			t.Fatalf("%s refused: %s", in, w.Body)
		}
		if got := r.URL.EscapedPath(); got != want {
			t.Errorf("%s: forwarded as %q, want %q", in, got, want)
		}
	}
	r := httptest.NewRequest(http.MethodPost, "http://caproxy/ca_apis%2Faht", nil)
	w := httptest.NewRecorder()
	if Canonicalize(w, r) || w.Code != http.StatusBadRequest || w.Body.String() != `{"status":"error","message":"request path cannot be cleaned safely"}` {
		t.Fatalf("encoded slash: %d %s", w.Code, w.Body)
	}
}

func BenchmarkCanonicalPath(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		Canonical("/ca_apis/aht")
	}
}
