// Command bodyprobe measures what request bodies cost a running caproxy
// before authentication (issue "One request pipeline"): MODE idle opens
// 8,000 connections that declare a 64 KiB body on GET fetchCDRDetails and
// send one byte (idlesmall: declare 10 bytes); MODE deep sends 256 x 20
// unauthenticated bodies of 32,000 nested "[" while timing cache hits. It
// reports the process's RSS (from /proc), its Go heap in use (from the
// admin port's /metrics) and hit latencies. It needs the shipped config's
// demo account (apiKey demo-key) and a file descriptor limit above 8,000.
//
//	go run ./scripts/bodyprobe 127.0.0.1:8080 127.0.0.1:9090 PID idle|idlesmall|deep
package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

func rss(pid string) int {
	b, _ := os.ReadFile("/proc/" + pid + "/status")
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			f := strings.Fields(l)
			n, _ := strconv.Atoi(f[1])
			return n / 1024
		}
	}
	return -1
}

var adminAddr string

func heap() int {
	resp, err := http.Get("http://" + adminAddr + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "go_memstats_heap_inuse_bytes ") {
			f, _ := strconv.ParseFloat(strings.Fields(l)[1], 64)
			return int(f / (1 << 20))
		}
	}
	return -1
}

func hits(addr string, n int) (p50, max time.Duration) {
	var ds []time.Duration
	for i := 0; i < n; i++ {
		ds = append(ds, hit(addr))
		time.Sleep(5 * time.Millisecond)
	}
	for i := range ds {
		for j := i + 1; j < len(ds); j++ {
			if ds[j] < ds[i] {
				ds[i], ds[j] = ds[j], ds[i]
			}
		}
	}
	return ds[len(ds)/2], ds[len(ds)-1]
}

// hitClient times hits over a connection of its own, kept alive, so a hit
// does not wait for a connection the flood's clients hold.
var hitClient = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}

func hit(addr string) time.Duration {
	t := time.Now()
	req, _ := http.NewRequest("POST", "http://"+addr+"/ca_apis/aht", strings.NewReader(`{"userName":"demo","agentId":"agent001"}`))
	req.Header.Set("apiKey", "demo-key")
	req.Header.Set("Content-Type", "application/json")
	resp, err := hitClient.Do(req)
	if err != nil {
		return -1
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return time.Since(t)
}

func main() {
	if len(os.Args) != 5 {
		fmt.Fprintln(os.Stderr, "usage: bodyprobe ADDR ADMIN_ADDR PID idle|idlesmall|deep")
		os.Exit(2)
	}
	addr, pid, mode := os.Args[1], os.Args[3], os.Args[4]
	adminAddr = os.Args[2]
	hit(addr)
	fmt.Println("idle rss MiB", rss(pid), "hit", hit(addr))
	switch mode {
	case "idle", "idlesmall":
		declared := 65536
		if mode == "idlesmall" {
			declared = 10
		}
		var conns []net.Conn
		for i := 0; i < 8000; i++ {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				fmt.Println("dial", i, err)
				break
			}
			fmt.Fprintf(c, "GET /ca_reports/fetchCDRDetails HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n{", declared)
			conns = append(conns, c)
		}
		time.Sleep(3 * time.Second)
		p50, mx := hits(addr, 40)
		fmt.Println("8000 idle conns declaring", declared, "bytes: rss MiB", rss(pid), "heap inuse MiB", heap(), "hit p50", p50, "max", mx)
		for _, c := range conns {
			c.Close()
		}
	case "deep":
		body := bytes.Repeat([]byte("["), 32000)
		var wg sync.WaitGroup
		peak := 0
		stop := make(chan struct{})
		go func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if r := rss(pid); r > peak {
					peak = r
				}
				time.Sleep(5 * time.Millisecond)
			}
		}()
		var worst time.Duration
		var mu sync.Mutex
		for i := 0; i < 256; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := 0; j < 20; j++ {
					req, _ := http.NewRequest("GET", "http://"+addr+"/ca_reports/fetchCDRDetails", bytes.NewReader(body))
					req.Header.Set("Content-Type", "application/json")
					resp, err := http.DefaultClient.Do(req)
					if err == nil {
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
					}
				}
			}()
		}
		var all []time.Duration
		for k := 0; k < 60; k++ {
			d := hit(addr)
			mu.Lock()
			if d > worst {
				worst = d
			}
			all = append(all, d)
			mu.Unlock()
			time.Sleep(10 * time.Millisecond)
		}
		for i := range all {
			for j := i + 1; j < len(all); j++ {
				if all[j] < all[i] {
					all[i], all[j] = all[j], all[i]
				}
			}
		}
		fmt.Println("hits meanwhile p50", all[len(all)/2], "p90", all[len(all)*9/10])
		wg.Wait()
		close(stop)
		fmt.Println("256x20 deep bodies (32000 '['): peak rss MiB", peak, "worst hit meanwhile", worst)
	}
}
