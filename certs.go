package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/caproxy/caproxy/config"
)

// expiryWarning is how close to its end a certificate is reported (at
// start, on reload and by -check) so that renewal is not missed. It is a
// warning, not an error: the certificate still works.
const expiryWarning = 14 * 24 * time.Hour

// servedCert is the certificate the client listener serves over TLS. The
// handshake of each new connection reads it (GetCertificate), so a reload
// swaps it for new connections while connections already made keep the
// one they were made with.
type servedCert struct {
	cur atomic.Pointer[tls.Certificate]
	// files are the cert_file and key_file cur was read from; used only
	// by the goroutine that reloads.
	files config.TLS
}

// newServedCert loads files (see loadCertificate), failing if they are not
// a usable pair at now.
func newServedCert(files config.TLS, now time.Time) (*servedCert, error) {
	cert, err := loadCertificate(files, now)
	if err != nil {
		return nil, err
	}
	s := &servedCert{files: files}
	s.cur.Store(cert)
	return s, nil
}

// getCertificate is tls.Config.GetCertificate: the certificate in force.
func (s *servedCert) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return s.cur.Load(), nil
}

// leaf is the certificate in force, parsed.
func (s *servedCert) leaf() *x509.Certificate { return s.cur.Load().Leaf }

// reload reads files again and serves them to new connections. Files that
// cannot be loaded are refused (logged) and the certificate in force stays:
// a renewal gone wrong must not take HTTPS down.
func (s *servedCert) reload(files config.TLS, now time.Time, logger *slog.Logger) {
	cert, err := loadCertificate(files, now)
	if err != nil {
		logger.Error("tls reload refused: keeping the certificate in force", "err", oneLine(err),
			"subject", s.leaf().Subject.String(), "not_after", s.leaf().NotAfter)
		return
	}
	s.cur.Store(cert)
	s.files = files
	logger.Info("tls certificate reloaded", "subject", cert.Leaf.Subject.String(), "not_after", cert.Leaf.NotAfter)
	if w := expiresSoon(cert.Leaf, now); w != "" {
		logger.Warn(w)
	}
}

// tlsConfig is the client listener's TLS: TLS 1.2 or later, Go's default
// cipher suites and curves, the certificate from s. NextProtos is left to
// net/http, which offers HTTP/2 and HTTP/1.1.
func (s *servedCert) tlsConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: s.getCertificate}
}

// loadCertificate reads the PEM files of files and checks that they are a
// certificate and its private key, and that the certificate is valid at now
// (an expired or not yet valid certificate is an error: every client that
// checks certificates would refuse it).
func loadCertificate(files config.TLS, now time.Time) (*tls.Certificate, error) {
	if files.CertFile == "" || files.KeyFile == "" {
		return nil, errors.New("tls: tls.cert_file and tls.key_file must both be set")
	}
	cert, err := tls.LoadX509KeyPair(files.CertFile, files.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("tls: cannot use tls.cert_file %s with tls.key_file %s: %w", files.CertFile, files.KeyFile, err)
	}
	leaf := cert.Leaf
	if leaf == nil { // LoadX509KeyPair fills it since Go 1.23; kept for safety
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("tls: tls.cert_file %s: %w", files.CertFile, err)
		}
		cert.Leaf = leaf
	}
	switch {
	case now.After(leaf.NotAfter):
		return nil, fmt.Errorf("tls: the certificate in tls.cert_file %s expired on %s", files.CertFile, leaf.NotAfter.UTC().Format(time.RFC3339))
	case now.Before(leaf.NotBefore):
		return nil, fmt.Errorf("tls: the certificate in tls.cert_file %s is not valid before %s", files.CertFile, leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	return &cert, nil
}

// expiresSoon returns a warning if leaf expires within expiryWarning of
// now, or "".
func expiresSoon(leaf *x509.Certificate, now time.Time) string {
	if left := leaf.NotAfter.Sub(now); left < expiryWarning {
		return fmt.Sprintf("tls: the certificate (%s) expires on %s, in %s: renew it and send SIGHUP",
			leaf.Subject.String(), leaf.NotAfter.UTC().Format(time.RFC3339), left.Round(time.Minute))
	}
	return ""
}
