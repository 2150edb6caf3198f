package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caproxy/caproxy/cloudagent"
	"github.com/caproxy/caproxy/config"
	"github.com/caproxy/caproxy/internal/syncbuf"
	"github.com/caproxy/caproxy/internal/testcert"
)

// waitFor bounds every wait on the server; generous for a shared machine
// and -race. Nothing is asserted on elapsed time.
const waitFor = 30 * time.Second

// tlsServer is serve running in-process with TLS on, for one test.
type tlsServer struct {
	t       *testing.T
	cfgPath string
	files   config.TLS
	addr    string // the proxy listener
	log     *syncbuf.Buffer
	hup     chan os.Signal
}

// tlsConfigText is a config serving the built-in simulator over TLS with
// files, on ports the kernel picks.
func tlsConfigText(files config.TLS) string {
	return "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\n" +
		"accounts:\n  - {user_name: demo, api_key: demo-key, auth: token}\n" +
		"tls:\n  cert_file: " + files.CertFile + "\n  key_file: " + files.KeyFile + "\n"
}

var listenAddrRe = regexp.MustCompile(`caproxy listening.* addr=(127\.0\.0\.1:\d+)`)

// startTLSServer writes pair and a config naming it, and runs serve until
// the test ends.
func startTLSServer(t *testing.T, pair testcert.Pair) *tlsServer {
	t.Helper()
	dir := t.TempDir()
	s := &tlsServer{t: t, cfgPath: filepath.Join(dir, "config.yaml"), log: &syncbuf.Buffer{}, hup: make(chan os.Signal, 1),
		files: config.TLS{CertFile: filepath.Join(dir, "cert.pem"), KeyFile: filepath.Join(dir, "key.pem")}}
	pair.Write(t, s.files.CertFile, s.files.KeyFile)
	if err := os.WriteFile(s.cfgPath, []byte(tlsConfigText(s.files)), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(s.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	certs, err := newServedCert(cfg.TLS, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, s.cfgPath, cfg, certs, s.hup, s.log) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("serve: %v", err)
			}
		case <-time.After(waitFor):
			t.Errorf("serve did not return within %v of its context ending", waitFor)
		}
	})
	s.waitLog("caproxy listening", 1)
	m := listenAddrRe.FindStringSubmatch(s.log.String())
	if m == nil {
		t.Fatalf("no listen address in the log:\n%s", s.log.String())
	}
	s.addr = m[1]
	return s
}

// waitLog waits until the log holds substr n times.
func (s *tlsServer) waitLog(substr string, n int) {
	s.t.Helper()
	deadline := time.Now().Add(waitFor)
	for strings.Count(s.log.String(), substr) < n {
		if time.Now().After(deadline) {
			s.t.Fatalf("gave up waiting for %q (%d times) in the log:\n%s", substr, n, s.log.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// httpsClient is a client with its own connections that trusts ca and
// offers HTTP/2 (a custom TLS config turns net/http's automatic HTTP/2 off
// unless ForceAttemptHTTP2 is set).
func httpsClient(t *testing.T, ca *testcert.CA) *http.Client {
	tr := &http.Transport{TLSClientConfig: ca.ClientConfig(), ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: waitFor}
}

// tlsAnswer is what one HTTPS AHT request showed.
type tlsAnswer struct {
	xcache     string
	protoMajor int
	peerCN     string // the served certificate's common name
	reused     bool   // the request went over a connection made earlier
	body       string
}

// askAHT asks for agent's AHT over HTTPS and checks it is a success.
func (s *tlsServer) askAHT(c *http.Client, agent string) tlsAnswer {
	s.t.Helper()
	body, _ := json.Marshal(cloudagent.AHTRequest{UserName: "demo", AgentID: agent})
	req, err := http.NewRequest(http.MethodPost, "https://"+s.addr+cloudagent.PathAHT, strings.NewReader(string(body)))
	if err != nil {
		s.t.Fatal(err)
	}
	var a tlsAnswer
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
		GotConn: func(info httptrace.GotConnInfo) { a.reused = info.Reused },
	}))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(cloudagent.HeaderAPIKey, "demo-key")
	resp, err := c.Do(req)
	if err != nil {
		s.t.Fatalf("HTTPS AHT of %s: %v", agent, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		s.t.Fatal(err)
	}
	a.xcache, a.protoMajor, a.body = resp.Header.Get("X-Cache"), resp.ProtoMajor, string(b)
	if resp.TLS == nil || len(resp.TLS.PeerCertificates) == 0 {
		s.t.Fatalf("HTTPS AHT of %s: no TLS state", agent)
	}
	a.peerCN = resp.TLS.PeerCertificates[0].Subject.CommonName
	if resp.StatusCode != http.StatusOK || !cloudagent.IsSuccess(b) {
		s.t.Fatalf("HTTPS AHT of %s: HTTP %d %s, want 200 success", agent, resp.StatusCode, b)
	}
	return a
}

// TestServeHTTPS serves AHT over TLS with HTTP/2 and the cache as over
// plain HTTP.
func TestServeHTTPS(t *testing.T) {
	ca := testcert.NewCA(t)
	s := startTLSServer(t, ca.IssueValid(t, "first"))
	c := httpsClient(t, ca)

	miss := s.askAHT(c, "agent001")
	hit := s.askAHT(c, "agent001")
	if miss.xcache != "MISS" || hit.xcache != "HIT" {
		t.Errorf("X-Cache %q then %q, want MISS then HIT", miss.xcache, hit.xcache)
	}
	if miss.body != hit.body {
		t.Errorf("the hit %s differs from the miss %s", hit.body, miss.body)
	}
	if miss.protoMajor != 2 || hit.protoMajor != 2 {
		t.Errorf("HTTP/%d and HTTP/%d, want HTTP/2 negotiated", miss.protoMajor, hit.protoMajor)
	}
	if miss.peerCN != "first" {
		t.Errorf("served certificate %q, want %q", miss.peerCN, "first")
	}

	// HTTP/1.1 clients (no ALPN h2) are served too.
	h1 := &http.Transport{TLSClientConfig: ca.ClientConfig()}
	t.Cleanup(h1.CloseIdleConnections)
	if a := s.askAHT(&http.Client{Transport: h1, Timeout: waitFor}, "agent001"); a.protoMajor != 1 || a.xcache != "HIT" {
		t.Errorf("HTTP/1.1 client: HTTP/%d X-Cache %q, want HTTP/1 HIT", a.protoMajor, a.xcache)
	}

	// Below TLS 1.2 is refused.
	old := ca.ClientConfig()
	old.MinVersion, old.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
	conn, err := tls.Dial("tcp", s.addr, old)
	if err == nil {
		conn.Close()
		t.Errorf("a TLS 1.1 handshake succeeded, want it refused")
	}
}

// TestServeHTTPSReloadsCertificate swaps the certificate files and sends
// SIGHUP (to serve's signal channel): new connections get the new
// certificate, a keep-alive connection made before keeps working, and
// unusable files keep the certificate in force.
func TestServeHTTPSReloadsCertificate(t *testing.T) {
	ca := testcert.NewCA(t)
	s := startTLSServer(t, ca.IssueValid(t, "first"))
	before := httpsClient(t, ca)
	if a := s.askAHT(before, "agent001"); a.peerCN != "first" {
		t.Fatalf("served certificate %q, want first", a.peerCN)
	}

	ca.IssueValid(t, "second").Write(t, s.files.CertFile, s.files.KeyFile)
	s.hup <- syscall.SIGHUP
	s.waitLog("tls certificate reloaded", 1)

	if a := s.askAHT(httpsClient(t, ca), "agent002"); a.peerCN != "second" || a.reused {
		t.Errorf("a new connection after the reload got %q (reused %v), want second on a new connection", a.peerCN, a.reused)
	}
	a := s.askAHT(before, "agent001")
	if !a.reused || a.peerCN != "first" || a.xcache != "HIT" {
		t.Errorf("the connection made before the reload: reused %v, certificate %q, X-Cache %q; want it kept (first, HIT)",
			a.reused, a.peerCN, a.xcache)
	}

	// A certificate with another certificate's key is refused; the one
	// in force stays for new connections, and the config reload itself
	// still happens.
	third, other := ca.IssueValid(t, "third"), ca.IssueValid(t, "other")
	testcert.Pair{CertPEM: third.CertPEM, KeyPEM: other.KeyPEM}.Write(t, s.files.CertFile, s.files.KeyFile)
	s.hup <- syscall.SIGHUP
	s.waitLog("tls reload refused", 1)
	if line := logLine(s.log.String(), "tls reload refused"); !strings.Contains(line, "private key does not match") {
		t.Errorf("the refusal does not say why: %q", line)
	}
	if a := s.askAHT(httpsClient(t, ca), "agent003"); a.peerCN != "second" {
		t.Errorf("after a refused reload a new connection got %q, want second", a.peerCN)
	}
	if n := strings.Count(s.log.String(), "config reloaded"); n != 2 {
		t.Errorf("%d config reloads logged, want 2", n)
	}

	// A missing key file is refused the same way.
	if err := os.Remove(s.files.KeyFile); err != nil {
		t.Fatal(err)
	}
	s.hup <- syscall.SIGHUP
	s.waitLog("tls reload refused", 2)
	if a := s.askAHT(httpsClient(t, ca), "agent003"); a.peerCN != "second" {
		t.Errorf("after a refused reload a new connection got %q, want second", a.peerCN)
	}

	// A renewed certificate is taken even when the config file is broken
	// (the config reload is refused; the files in force are read again).
	ca.IssueValid(t, "fourth").Write(t, s.files.CertFile, s.files.KeyFile)
	if err := os.WriteFile(s.cfgPath, []byte(tlsConfigText(s.files)+"cache_ttl: 5s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s.hup <- syscall.SIGHUP
	s.waitLog("tls certificate reloaded", 2)
	if !strings.Contains(s.log.String(), "reload refused: bad config") {
		t.Errorf("the broken config was not refused:\n%s", s.log.String())
	}
	if a := s.askAHT(httpsClient(t, ca), "agent003"); a.peerCN != "fourth" {
		t.Errorf("after a reload with a broken config a new connection got %q, want fourth", a.peerCN)
	}
}

// logLine returns the first line of log containing substr.
func logLine(log, substr string) string {
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, substr) {
			return line
		}
	}
	return ""
}

// TestCheckTLSFiles runs -check on configs whose TLS files are good, do not
// pair, are missing or expired.
func TestCheckTLSFiles(t *testing.T) {
	ca := testcert.NewCA(t)
	now := time.Now()
	first, second := ca.IssueValid(t, "first"), ca.IssueValid(t, "second")
	tests := []struct {
		name  string
		pair  *testcert.Pair // nil: no files written
		code  int
		wants []string // in the one stderr line
	}{
		{"good pair", &first, 0, []string{"config ok"}},
		{"mismatched pair", &testcert.Pair{CertPEM: first.CertPEM, KeyPEM: second.KeyPEM}, 1, []string{"tls.cert_file", "private key does not match"}},
		{"missing files", nil, 1, []string{"tls.cert_file", "no such file"}},
		{"not PEM", &testcert.Pair{CertPEM: []byte("hello"), KeyPEM: first.KeyPEM}, 1, []string{"tls.cert_file", "PEM"}},
		{"expired", ptr(ca.Issue(t, "old", now.Add(-48*time.Hour), now.Add(-time.Hour))), 1, []string{"expired on"}},
		{"not yet valid", ptr(ca.Issue(t, "early", now.Add(time.Hour), now.Add(48*time.Hour))), 1, []string{"not valid before"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			files := config.TLS{CertFile: filepath.Join(dir, "cert.pem"), KeyFile: filepath.Join(dir, "key.pem")}
			if tt.pair != nil {
				tt.pair.Write(t, files.CertFile, files.KeyFile)
			}
			path := filepath.Join(dir, "config.yaml")
			if err := os.WriteFile(path, []byte(tlsConfigText(files)), 0o600); err != nil {
				t.Fatal(err)
			}
			var stdout, stderr strings.Builder
			code := run([]string{"-config", path, "-check"}, &stdout, &stderr)
			if code != tt.code || strings.Count(stderr.String(), "\n") != 1 {
				t.Errorf("exit %d, stderr %q; want exit %d and one line", code, stderr.String(), tt.code)
			}
			for _, w := range tt.wants {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("stderr %q does not say %q", stderr.String(), w)
				}
			}
		})
	}

	// A certificate close to its end passes with a warning.
	dir := t.TempDir()
	files := config.TLS{CertFile: filepath.Join(dir, "cert.pem"), KeyFile: filepath.Join(dir, "key.pem")}
	ca.Issue(t, "soon", now.Add(-time.Hour), now.Add(72*time.Hour)).Write(t, files.CertFile, files.KeyFile)
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, []byte(tlsConfigText(files)), 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr strings.Builder
	if code := run([]string{"-config", path, "-check"}, &stdout, &stderr); code != 0 ||
		!strings.Contains(stderr.String(), "warning") || !strings.Contains(stderr.String(), "expires on") {
		t.Errorf("certificate expiring in 3 days: exit %d, stderr %q; want 0 with an expiry warning", code, stderr.String())
	}
}

func ptr[T any](v T) *T { return &v }
