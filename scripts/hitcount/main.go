// Command hitcount is the client side of scripts/callgrind-hit.sh: it
// sends exactly -n cached AHT questions over -c keep-alive connections
// (wrk cannot send a fixed count) and exits 1 if any answer was not a
// 200 HIT, so a wrong setup cannot pass for a cheap one.
package main

import (
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
)

func main() {
	url := flag.String("url", "http://127.0.0.1:8080/ca_apis/aht", "caproxy's AHT URL")
	user := flag.String("user", "demo", "userName")
	key := flag.String("apikey", "demo-key", "apiKey header")
	n := flag.Int("n", 1000, "requests to send")
	conns := flag.Int("c", 8, "keep-alive connections")
	flag.Parse()
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: *conns}}
	body := `{"userName":"` + *user + `","agentId":"agent001"}`
	var left, bad atomic.Int64
	left.Store(int64(*n))
	var wg sync.WaitGroup
	for range *conns {
		wg.Go(func() {
			for left.Add(-1) >= 0 {
				req, err := http.NewRequest(http.MethodPost, *url, strings.NewReader(body))
				if err != nil {
					bad.Add(1)
					continue
				}
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("apiKey", *key)
				resp, err := hc.Do(req)
				if err != nil {
					bad.Add(1)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Cache") != "HIT" {
					bad.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if b := bad.Load(); b > 0 {
		fmt.Fprintf(os.Stderr, "hitcount: %d of %d answers were not a 200 HIT\n", b, *n)
		os.Exit(1)
	}
}
