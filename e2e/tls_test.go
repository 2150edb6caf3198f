package e2e

import (
	"io"
	"net/http"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/caproxy/caproxy/cloudagent"
	"github.com/caproxy/caproxy/internal/testcert"
)

// TestTLSListener serves the proxy over HTTPS as an app that hard-codes
// https:// would reach it: AHT with the cache as over HTTP, HTTP/2, and a
// renewed certificate picked up on SIGHUP without dropping connections.
func TestTLSListener(t *testing.T) {
	ca := testcert.NewCA(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	ca.IssueValid(t, "first").Write(t, certFile, keyFile)
	render := func(listen, admin string) string {
		return proxyConfig{}.render(listen, admin) + "tls:\n  cert_file: " + certFile + "\n  key_file: " + keyFile + "\n"
	}
	p := startProxyText(t, render)

	// One client whose HTTP/2 connection outlives the reload.
	tr := &http.Transport{TLSClientConfig: ca.ClientConfig(), ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	kept := &client{t: t, hc: &http.Client{Transport: tr, Timeout: waitEvent}}
	url := "https://" + p.listen + cloudagent.PathAHT

	ask := func(c *client, agent string) (response, string, int, bool) {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(ahtBody("demo", agent)))
		if err != nil {
			t.Fatal(err)
		}
		reused := false
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
			GotConn: func(info httptrace.GotConnInfo) { reused = info.Reused },
		}))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set(cloudagent.HeaderAPIKey, demoKey)
		resp, err := c.hc.Do(req)
		if err != nil {
			t.Fatalf("HTTPS AHT of %s: %v", agent, err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		r := response{code: resp.StatusCode, header: resp.Header, body: string(b)}
		return r, resp.TLS.PeerCertificates[0].Subject.CommonName, resp.ProtoMajor, reused
	}

	r, cn, proto, _ := ask(kept, "agent001")
	checkAgentAHT(t, r, "agent001", "MISS")
	if cn != "first" || proto != 2 {
		t.Fatalf("certificate %q over HTTP/%d, want first over HTTP/2", cn, proto)
	}
	r, _, _, _ = ask(kept, "agent001")
	checkAgentAHT(t, r, "agent001", "HIT")

	ca.IssueValid(t, "second").Write(t, certFile, keyFile)
	p.signal(t, syscall.SIGHUP)
	p.waitLog(t, "tls certificate reloaded", 1)

	fresh := &http.Transport{TLSClientConfig: ca.ClientConfig(), ForceAttemptHTTP2: true}
	t.Cleanup(fresh.CloseIdleConnections)
	r, cn, proto, _ = ask(&client{t: t, hc: &http.Client{Transport: fresh, Timeout: waitEvent}}, "agent001")
	checkAgentAHT(t, r, "agent001", "HIT")
	if cn != "second" || proto != 2 {
		t.Errorf("a new connection after SIGHUP got %q over HTTP/%d, want second over HTTP/2", cn, proto)
	}
	r, cn, _, reused := ask(kept, "agent002")
	checkAgentAHT(t, r, "agent002", "MISS")
	if !reused || cn != "first" {
		t.Errorf("the connection made before SIGHUP: reused %v, certificate %q; want it still open with first", reused, cn)
	}
}

// TestTLSFilesRefused runs -check, and a start, with TLS files that cannot
// serve: each is refused with one line naming the problem.
func TestTLSFilesRefused(t *testing.T) {
	ca := testcert.NewCA(t)
	first, second := ca.IssueValid(t, "first"), ca.IssueValid(t, "second")
	for _, tt := range []struct {
		name string
		pair *testcert.Pair // nil: no files
		want string
	}{
		{"mismatched pair", &testcert.Pair{CertPEM: first.CertPEM, KeyPEM: second.KeyPEM}, "private key does not match"},
		{"missing files", nil, "no such file"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
			if tt.pair != nil {
				tt.pair.Write(t, certFile, keyFile)
			}
			path := filepath.Join(dir, "config.yaml")
			text := proxyConfig{}.render(freeAddr(t), freeAddr(t)) + "tls:\n  cert_file: " + certFile + "\n  key_file: " + keyFile + "\n"
			if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
				t.Fatal(err)
			}
			for _, mode := range [][]string{{"-config", path, "-check"}, {"-config", path}} {
				r := run(t, nil, mode...)
				if r.code != 1 || strings.Count(r.stderr, "\n") != 1 || !strings.Contains(r.stderr, "tls.cert_file") || !strings.Contains(r.stderr, tt.want) {
					t.Errorf("%v: exit %d, stderr %q; want 1 and one line naming tls.cert_file and %q", mode, r.code, r.stderr, tt.want)
				}
			}
		})
	}
}
