package credential

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/caproxy/caproxy/cloudagent"
)

func TestRedact(t *testing.T) {
	const key = "Ab/c+D e%9"
	const token = "eyJhbGciOi.J9x_y-Z"
	for _, c := range []struct {
		name, in string
	}{
		{"exact", "bad key " + key},
		{"upper", "bad key " + strings.ToUpper(key)},
		{"lower", "bad key " + strings.ToLower(key)},
		{"query-escaped", "GET /x?apiKey=Ab%2Fc%2BD+e%259"},
		{"query-escaped lower hex", "GET /x?apiKey=ab%2fc%2bd+E%259"},
		{"path-escaped", "/ca_apis/Ab%2Fc+D%20e%259/x"},
		{"every byte encoded", "k=%41%62%2F%63%2B%44%20%65%25%39"},
		{"every byte encoded lower", "k=%41%62%2f%63%2b%44%20%65%25%39"},
		{"token", `{"message":"Invalid Token ` + token + `"}`},
		{"token upper", "INVALID TOKEN " + strings.ToUpper(token)},
		{"both", key + " and " + token},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := Redact(c.in, key, token)
			if !strings.Contains(got, redacted) {
				t.Fatalf("Redact(%q) = %q: nothing redacted", c.in, got)
			}
			low := strings.ToLower(got)
			for _, form := range []string{"ab/c+d e%9", "ab%2fc", "ab%2fc%2bd", "%41%62%2f", "j9x_y-z"} {
				if strings.Contains(low, form) {
					t.Fatalf("Redact(%q) = %q: still holds %q", c.in, got, form)
				}
			}
		})
	}
	for _, in := range []string{"", "userName or apiKey is Invalid", "nothing secret here"} {
		if got := Redact(in, key, token); got != in {
			t.Errorf("Redact(%q) = %q, want it unchanged", in, got)
		}
	}
	if got := Redact("x", "", ""); got != "x" {
		t.Errorf("empty secrets changed the text: %q", got)
	}
}

// TestUpstreamEchoOfKeyIsRedacted has generateToken's refusal echo the
// apiKey the request carried, in each form an upstream might, and checks
// that neither the error (what a client's answer is built from) nor the
// log holds it in any form.
func TestUpstreamEchoOfKeyIsRedacted(t *testing.T) {
	const key = "Echo/Key+S3CRET 0123"
	for _, c := range []struct {
		name string
		echo func(string) string
	}{
		{"exact", func(k string) string { return k }},
		{"upper", strings.ToUpper},
		{"lower", strings.ToLower},
		{"query-escaped", url.QueryEscape},
		{"path-escaped", url.PathEscape},
		{"query-escaped lower hex", func(k string) string { return strings.ToLower(url.QueryEscape(k)) }},
		{"every byte encoded", percentEncodeAll},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, 10, func(next http.Handler) http.Handler {
				return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if r.URL.Path == cloudagent.PathGenerateToken {
						w.Header().Set("Content-Type", "application/json")
						w.Write(cloudagent.TokenErrorBody("Invalid apiKey " + c.echo(r.Header.Get(cloudagent.HeaderAPIKey))))
						return
					}
					next.ServeHTTP(w, r)
				})
			})
			e.ts.APIKey = key
			_, err := e.ts.Apply(context.Background(), http.Header{})
			ue, ok := errors.AsType[*UpstreamError](err)
			if !ok || !strings.Contains(ue.Message, "Invalid apiKey "+redacted) {
				t.Fatalf("Apply: %v; want an *UpstreamError with the echoed key redacted", err)
			}
			for _, s := range []string{err.Error(), e.logs.String()} {
				low := strings.ToLower(s)
				for _, form := range []string{key, url.QueryEscape(key), url.PathEscape(key), percentEncodeAll(key)} {
					if strings.Contains(low, strings.ToLower(form)) {
						t.Errorf("%q holds the key as %q", s, form)
					}
				}
			}
		})
	}
}

// TestSourceRedactsKeyAndTokens checks the Redact methods the proxy uses on
// upstream text: a TokenSource hides its key and its current and replaced
// tokens, an APIKey itself.
func TestSourceRedactsKeyAndTokens(t *testing.T) {
	e := newEnv(t, 10, nil)
	h1, tok1 := e.apply(t)
	e.ts.Accept(h1)
	e.ts.Reject(h1)
	_, tok2 := e.apply(t)
	for _, in := range []string{
		"key " + strings.ToUpper(demoKey),
		"old token " + url.QueryEscape(strings.ToUpper(tok1)),
		"token " + tok2,
		"path /x/" + url.PathEscape(demoKey),
	} {
		got := e.ts.Redact(in)
		low := strings.ToLower(got)
		if !strings.Contains(got, redacted) || strings.Contains(low, strings.ToLower(demoKey)) ||
			strings.Contains(low, strings.ToLower(tok1)) || strings.Contains(low, strings.ToLower(tok2)) {
			t.Errorf("TokenSource.Redact(%q) = %q", in, got)
		}
	}
	if got := APIKey(demoKey).Redact("x " + strings.ToLower(demoKey)); got != "x "+redacted {
		t.Errorf("APIKey.Redact = %q", got)
	}
}
