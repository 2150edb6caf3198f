// Command poll is the client side of `make load SCENARIO=…`: apps polling a
// fixed set of AHT keys at a steady rate, as wallboards do (wrk cannot
// hold a rate). It prints what the clients got: X-Cache and status counts,
// the misses a client waited for, 429s, and the served Age, counted only
// after a warm-up (-warmup, or, with -after-all, once every key has been
// answered 200 at least once). With -late-at, -late more keys (campaigns',
// never asked before) are first asked that far into the run and polled as
// the others; their lines say how long until each got its first answer,
// in windows.
package main

import (
	"flag"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

func main() {
	url := flag.String("url", "http://127.0.0.1:8080/ca_apis/aht", "caproxy's AHT URL")
	user := flag.String("user", "demo-basic", "userName")
	key := flag.String("apikey", "demo-basic-key", "apiKey header")
	keys := flag.Int("keys", 20, "how many agents (agent001…) are polled")
	every := flag.Duration("every", time.Second, "how often each key is polled")
	duration := flag.Duration("duration", 30*time.Second, "how long to poll")
	warmup := flag.Duration("warmup", 6*time.Second, "time not counted at the start")
	afterAll := flag.Bool("after-all", false, "count only after every key was answered 200 once (and after -warmup)")
	lateAt := flag.Duration("late-at", 0, "if set, -late never-seen keys (campaign001…) are first asked this far into the run")
	lateN := flag.Int("late", 1, "how many never-seen keys -late-at asks for")
	window := flag.Duration("window", 6*time.Second, "the budget's window, to state the late key's wait in windows")
	flag.Parse()

	client := &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
	start := time.Now()
	deadline := start.Add(*duration)
	var (
		mu       sync.Mutex
		xcache   = map[string]int{}
		status   = map[int]int{}
		ages     []int
		missWait []time.Duration
		missAt   []string // "agent@offset" of the first counted misses
		answered = map[int]bool{}
		allAt    time.Time
		errs     int
		all429   int // over the whole run
		allReqs  int
	)
	var wg sync.WaitGroup
	var late []lateKey
	if *lateAt > 0 {
		late = make([]lateKey, *lateN)
		for i := range late {
			wg.Go(func() {
				late[i].poll(client, *url, *user, *key, fmt.Sprintf("campaign%03d", i%100+1), start.Add(*lateAt), deadline, *every)
			})
		}
	}
	for i := range *keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := fmt.Sprintf(`{"userName":%q,"agentId":"agent%03d"}`, *user, i%300+1)
			next := start.Add(*every * time.Duration(i) / time.Duration(*keys))
			for next.Before(deadline) {
				time.Sleep(time.Until(next))
				next = next.Add(*every)
				req, _ := http.NewRequest(http.MethodPost, *url, strings.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("apiKey", *key)
				t0 := time.Now()
				resp, err := client.Do(req)
				took := time.Since(t0)
				mu.Lock()
				if err != nil {
					errs++
					mu.Unlock()
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				allReqs++
				if resp.StatusCode == 429 {
					all429++
				}
				if resp.StatusCode == 200 && !answered[i] {
					answered[i] = true
					if len(answered) == *keys {
						allAt = time.Now()
					}
				}
				counting := t0.Sub(start) >= *warmup && (!*afterAll || !allAt.IsZero() && t0.After(allAt))
				if counting {
					status[resp.StatusCode]++
					xc := resp.Header.Get("X-Cache")
					xcache[xc]++
					if resp.StatusCode == 200 {
						if a, err := strconv.Atoi(resp.Header.Get("Age")); err == nil {
							ages = append(ages, a)
						}
					}
					if xc == "MISS" {
						missWait = append(missWait, took)
						if len(missAt) < 10 {
							missAt = append(missAt, fmt.Sprintf("agent%03d@%.2fs", i%300+1, t0.Sub(start).Seconds()))
						}
					}
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()

	total := 0
	for _, n := range status {
		total += n
	}
	from := *warmup
	if *afterAll {
		if allAt.IsZero() {
			fmt.Printf("POLL not every key was answered: %d of %d in %v; over the whole run %d of %d requests got 429\n",
				len(answered), *keys, *duration, all429, allReqs)
			return
		}
		from = max(from, allAt.Sub(start))
	}
	fmt.Printf("POLL counted from %.1fs to %.1fs: %d requests, %d transport errors\n", from.Seconds(), duration.Seconds(), total, errs)
	fmt.Printf("POLL x-cache HIT %d MISS %d STALE %d\n", xcache["HIT"], xcache["MISS"], xcache["STALE"])
	hitRatio := 0.0
	if total > 0 {
		hitRatio = 100 * float64(xcache["HIT"]) / float64(total)
	}
	fmt.Printf("POLL hit ratio %.1f%%; misses a client waited for %d (longest %v); 429s %d\n",
		hitRatio, len(missWait), longest(missWait), status[429])
	if len(missAt) > 0 {
		fmt.Printf("POLL first misses a client waited for: %s\n", strings.Join(missAt, " "))
	}
	sort.Ints(ages)
	fmt.Printf("POLL served Age p50 %ds p99 %ds max %ds\n", pct(ages, 50), pct(ages, 99), pct(ages, 100))
	for i := range late {
		late[i].report(start, *window)
	}
}

// lateKey polls one key first asked mid-run and records how long it
// took to get its first answer.
type lateKey struct {
	name      string
	first     time.Time     // first ask
	firstWait time.Duration // how long that first client waited
	firstCode int           // and what it got
	answered  time.Time     // when a 200 first arrived
	answer    string        // its X-Cache
	refused   int           // 429s before it
	asks      int           // before it, the answering one included
}

func (l *lateKey) poll(client *http.Client, url, user, apiKey, campaign string, from, deadline time.Time, every time.Duration) {
	l.name = campaign
	body := fmt.Sprintf(`{"userName":%q,"campaignName":%q}`, user, campaign)
	for next := from; next.Before(deadline) && l.answered.IsZero(); next = next.Add(every) {
		time.Sleep(time.Until(next))
		req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("apiKey", apiKey)
		t0 := time.Now()
		resp, err := client.Do(req)
		took := time.Since(t0)
		code := 0
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			code = resp.StatusCode
		}
		if l.first.IsZero() {
			l.first, l.firstWait, l.firstCode = t0, took, code
		}
		l.asks++
		switch code {
		case http.StatusOK:
			l.answered, l.answer = time.Now(), resp.Header.Get("X-Cache")
		case http.StatusTooManyRequests:
			l.refused++
		}
	}
}

func (l *lateKey) report(start time.Time, window time.Duration) {
	if l.first.IsZero() {
		fmt.Printf("POLL late key %s never asked (the run ended first)\n", l.name)
		return
	}
	fmt.Printf("POLL late key %s (never seen) first asked at %.1fs: its first client waited %v and got %d; ",
		l.name, l.first.Sub(start).Seconds(), l.firstWait.Round(time.Millisecond), l.firstCode)
	if l.answered.IsZero() {
		fmt.Printf("never answered: %d asks, %d got 429\n", l.asks, l.refused)
		return
	}
	after := l.answered.Sub(l.first)
	fmt.Printf("first answered after %v = %.2f windows (%s, ask %d, %d got 429 before)\n",
		after.Round(time.Millisecond), after.Seconds()/window.Seconds(), l.answer, l.asks, l.refused)
}

func pct(s []int, p int) int {
	if len(s) == 0 {
		return -1
	}
	i := (len(s)*p + 99) / 100
	return s[max(min(i, len(s))-1, 0)]
}

func longest(d []time.Duration) time.Duration {
	var m time.Duration
	for _, x := range d {
		m = max(m, x)
	}
	return m.Round(time.Millisecond)
}
