// Command bare is the baseline of scripts/bench-hit.sh: the least a Go
// net/http server can do to answer an AHT request. It reads the request body
// and writes a fixed JSON reply of the size of a cached AHT answer, so the
// benchmark can compare caproxy's cache hit with plain net/http under the
// same load.
//
//	go run ./scripts/bare -listen 127.0.0.1:8089
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

// reply is what every request gets: an agent's AHT as CloudAgent words it.
var reply = []byte(`{"status":"success","message":{"AgentID":"agent001","AgentName":"Agent 001","AHT":"00:02:37"}}`)

// Header values are built once; net/http only reads them.
var (
	contentType   = []string{"application/json"}
	contentLength = []string{strconv.Itoa(len(reply))}
)

// serveReply drains the body, as any handler that looks at it must, and
// answers with the fixed reply.
func serveReply(w http.ResponseWriter, r *http.Request) {
	if _, err := io.Copy(io.Discard, io.LimitReader(r.Body, 64<<10)); err != nil {
		http.Error(w, "request body could not be read", http.StatusBadRequest)
		return
	}
	h := w.Header()
	h["Content-Type"] = contentType
	h["Content-Length"] = contentLength
	w.WriteHeader(http.StatusOK)
	w.Write(reply)
}

func main() {
	listen := flag.String("listen", "127.0.0.1:8089", "address to serve on")
	flag.Parse()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bare:", err)
		os.Exit(1)
	}
	// The same server timeouts caproxy sets, so both do the same
	// per-connection work.
	srv := &http.Server{
		Handler:           http.HandlerFunc(serveReply),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintln(os.Stderr, "bare:", err)
		os.Exit(1)
	}
}
