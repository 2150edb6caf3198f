// Command caproxy is a caching, rate-limiting reverse proxy in front of
// CloudAgent's API. See README.md.
//
//	caproxy -config config.yaml          serve
//	caproxy -config config.yaml -check   validate the config and exit
//	caproxy sim -listen 127.0.0.1:8081   run the CloudAgent simulator alone
//	caproxy -version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/caproxy/caproxy/cloudagent/sim"
	"github.com/caproxy/caproxy/config"
	"github.com/caproxy/caproxy/daemon"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "sim" {
		return runSim(args[1:], stderr)
	}
	fs := flag.NewFlagSet("caproxy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "config.yaml", "path of the configuration file")
	check := fs.Bool("check", false, "validate the configuration and exit")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	// Parsing stops at the first non-flag: without this, a typo such as
	// "caproxy sim-listen …" or a flag after a stray word would be ignored
	// and caproxy would serve (or pass -check) on config.yaml.
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "caproxy: unexpected argument %q (usage: caproxy [-config FILE] [-check] [-version], or caproxy sim -listen ADDR)\n", fs.Arg(0))
		return 2
	}
	if *showVersion {
		fmt.Fprintln(stdout, "caproxy", version)
		return 0
	}
	// Catch SIGHUP from the start: before serve listens for it, a reload
	// request must not kill the process (its default action).
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	cfg, err := config.Load(*path)
	if err != nil {
		fmt.Fprintln(stderr, "caproxy: bad config:", oneLine(err))
		return 1
	}
	// The route table's own checks (names, canonical paths, what may be
	// cached) run here too, so -check finds what serve would refuse.
	if err := daemon.CheckRoutes(cfg); err != nil {
		fmt.Fprintln(stderr, "caproxy: bad config: routes:", oneLine(err))
		return 1
	}
	// The certificate and key are checked here, not by package config,
	// so that -check and the start refuse the same files.
	var certs *servedCert
	if cfg.TLS.Enabled() {
		if certs, err = newServedCert(cfg.TLS, time.Now()); err != nil {
			fmt.Fprintln(stderr, "caproxy: bad config:", oneLine(err))
			return 1
		}
	}
	if err := daemon.CheckState(cfg); err != nil {
		fmt.Fprintln(stderr, "caproxy: bad config:", oneLine(err))
		return 1
	}
	if *check {
		if certs != nil {
			if w := expiresSoon(certs.leaf(), time.Now()); w != "" {
				fmt.Fprintln(stderr, "caproxy: warning:", w)
			}
		}
		fmt.Fprintln(stderr, "caproxy: config ok:", *path)
		return 0
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := serve(ctx, *path, cfg, certs, hup, stderr); err != nil {
		fmt.Fprintln(stderr, "caproxy:", oneLine(err))
		return 1
	}
	return 0
}

// oneLine joins a multi-line error (several config problems) into one line.
func oneLine(err error) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(err.Error(), "\n", "; ")), " ")
}

// runSim serves the CloudAgent simulator alone, for load tests and demos.
func runSim(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("caproxy sim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:8081", "address to serve the simulator on")
	data := fs.String("data", "", "JSON file with accounts, agents and campaigns (default: the built-in demo set)")
	latency := fs.Duration("latency", 0, "latency added to every CloudAgent answer")
	errorRate := fs.Float64("error-rate", 0, "fraction of AHT calls answered with HTTP 503")
	limit := fs.Int("limit", 0, "AHT calls per account per window (0: CloudAgent's 50)")
	window := fs.Duration("window", 0, "trailing window of the limit (0: 60s)")
	delay := fs.Duration("delay", 0, "one-way network delay: a call is counted and answered this long after it is received")
	seed := fs.Int64("seed", 0, "seed of the generated call records and summaries (the same seed, the same answers)")
	callsPerAgent := fs.Int("calls-per-agent", sim.DefaultCallsPerAgent, fmt.Sprintf("calls each agent makes a day in the generated CDRs (0 to %d; 50 agents x 100 calls is a busy day of megabytes)", sim.MaxCallsPerAgent))
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "caproxy sim: unexpected argument %q (usage: caproxy sim -listen ADDR [flags])\n", fs.Arg(0))
		return 2
	}
	if *callsPerAgent < 0 || *callsPerAgent > sim.MaxCallsPerAgent {
		fmt.Fprintf(stderr, "caproxy sim: -calls-per-agent %d is not between 0 and %d\n", *callsPerAgent, sim.MaxCallsPerAgent)
		return 2
	}
	perDay := *callsPerAgent
	if perDay == 0 {
		perDay = -1 // Options: 0 is the default, negative none
	}
	opts := sim.Options{Latency: *latency, ErrorRate: *errorRate, Limit: *limit, Window: *window, Delay: *delay,
		Seed: *seed, CallsPerAgent: perDay}
	if *data != "" {
		d, err := sim.LoadData(*data)
		if err != nil {
			fmt.Fprintln(stderr, "caproxy sim:", oneLine(err))
			return 1
		}
		opts.Accounts, opts.Agents, opts.Campaigns = d.Accounts, d.Agents, d.Campaigns
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(stderr, "caproxy sim:", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	srv := &http.Server{Handler: sim.New(opts), ReadHeaderTimeout: 5 * time.Second}
	slog.New(slog.NewTextHandler(stderr, nil)).Info("CloudAgent simulator listening", "addr", ln.Addr().String())
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintln(stderr, "caproxy sim:", err)
		return 1
	}
	return 0
}
