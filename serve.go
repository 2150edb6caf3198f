package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/caproxy/caproxy/config"
	"github.com/caproxy/caproxy/daemon"
	"github.com/caproxy/caproxy/deadline"
	"github.com/caproxy/caproxy/gcheadroom"
	"github.com/caproxy/caproxy/proxy"
	"github.com/caproxy/caproxy/statuspage"
)

// deadlineTick is how late, at most, the proxy listener's timeouts fire:
// 5% of the shortest (ReadHeaderTimeout, 5 s).
const deadlineTick = 250 * time.Millisecond

// gcRoom is the least heap growth between two garbage collections while
// GOGC is not set (see gcheadroom): net/http allocates about 2.6 KB per
// request, so at 25k requests/s about two collections a second instead of
// twenty, for at most 32 MiB more heap than Go's default.
const gcRoom = 32 << 20

// serve runs caproxy with cfg until ctx ends, reloading path on hup. With
// certs (not nil: cfg.TLS is set) the proxy listener serves HTTPS, HTTP/2
// included, and hup reloads the certificate too.
func serve(ctx context.Context, path string, cfg *config.Config, certs *servedCert, hup <-chan os.Signal, stderr io.Writer) error {
	d, err := daemon.New(ctx, cfg, daemon.Options{Log: stderr})
	if err != nil {
		return err
	}
	// Closed (every queued access line written, Redis released) after the
	// servers have drained and the refresh loop has stopped.
	defer d.Close()
	logger := d.Logger()

	if os.Getenv("GOGC") == "" { // an operator's GOGC is theirs
		gctx, stopGC := context.WithCancel(context.Background())
		gcDone := make(chan struct{})
		go func() { defer close(gcDone); gcheadroom.Run(gctx, gcRoom, 100, time.Second) }()
		defer func() { stopGC(); <-gcDone }()
	}

	tcpLn, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return err
	}
	// The proxy's timeouts (below) are enforced by one sweeper at
	// deadlineTick rather than a runtime timer update per request.
	ln := deadline.NewListener(tcpLn, deadlineTick)
	adminLn, err := net.Listen("tcp", cfg.AdminListen)
	if err != nil {
		ln.Close()
		return err
	}
	srv := &http.Server{
		Handler:           d.Handler(),
		MaxHeaderBytes:    proxy.MaxHeaderBytes,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		// Long enough for an upstream call and a wait for budget.
		WriteTimeout: cfg.Upstream.Timeout + cfg.Limit.MaxWait + 10*time.Second,
		IdleTimeout:  120 * time.Second,
		ErrorLog:     slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	if certs != nil {
		srv.TLSConfig = certs.tlsConfig()
		if w := expiresSoon(certs.leaf(), time.Now()); w != "" {
			logger.Warn(w)
		}
	}
	admin := &http.Server{Handler: statuspage.Wrap(d.AdminHandler()), ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 30 * time.Second}

	// Refreshes run while the proxy serves (they do nothing unless
	// cache.refresh_ahead is on) and stop before the drain.
	rctx, stopRefresh := context.WithCancel(context.Background())
	refreshDone := make(chan struct{})
	go func() { defer close(refreshDone); d.RunRefresh(rctx) }()
	defer func() { stopRefresh(); <-refreshDone }()

	errc := make(chan error, 2)
	go func() {
		if certs != nil {
			// The certificate comes from TLSConfig.GetCertificate;
			// ServeTLS adds HTTP/2 to what the handshake offers.
			errc <- srv.ServeTLS(ln, "", "")
			return
		}
		errc <- srv.Serve(ln)
	}()
	go func() { errc <- admin.Serve(adminLn) }()
	logger.Info("caproxy listening", "version", version, "addr", ln.Addr().String(), "tls", certs != nil,
		"admin", adminLn.Addr().String(), "upstream", cfg.Upstream.URL, "accounts", len(cfg.Accounts))

	var serveErr error
loop:
	for {
		select {
		case <-hup:
			reload(d, path, certs)
		case err := <-errc:
			serveErr = err
			break loop
		case <-ctx.Done():
			break loop
		}
	}
	logger.Info("shutting down: draining in-flight requests")
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	shutdownErr := errors.Join(srv.Shutdown(sctx), admin.Shutdown(sctx))
	if serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) {
		return serveErr
	}
	return shutdownErr
}

// reload reads the config file again and applies it; an invalid file is
// refused and the running config stays. With TLS on, the certificate is
// read again too (from the files the new config names, or the files in
// force if the config was refused), so a renewed certificate is picked up
// even when the config file is broken; unusable files keep the certificate
// in force. TLS cannot be turned on or off without a restart.
func reload(d *daemon.Daemon, path string, certs *servedCert) {
	cfg, err := config.Load(path)
	if err != nil {
		d.Logger().Error("reload refused: bad config; keeping the running one", "err", oneLine(err))
		if certs != nil {
			certs.reload(certs.files, time.Now(), d.Logger())
		}
		return
	}
	if (certs != nil) != cfg.TLS.Enabled() {
		d.Logger().Warn("reload: this key takes effect only on restart", "key", "tls")
	}
	d.Reload(cfg)
	if certs != nil {
		files := cfg.TLS
		if !files.Enabled() {
			files = certs.files
		}
		certs.reload(files, time.Now(), d.Logger())
	}
}
