package credential

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caproxy/caproxy/cloudagent"
	"github.com/caproxy/caproxy/cloudagent/sim"
	"github.com/caproxy/caproxy/internal/fakeclock"
	"github.com/caproxy/caproxy/internal/syncbuf"
	"github.com/caproxy/caproxy/limit"
)

// newClock returns the one clock a test gives the simulator, the guard and
// the TokenSource, so token lifetimes and windows are stepped, never slept.
func newClock() *fakeclock.Clock {
	return fakeclock.New(time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC))
}

// env is a simulator on loopback plus a TokenSource for its "demo" account,
// all on one fake clock.
type env struct {
	clk  *fakeclock.Clock
	sim  *sim.Server
	srv  *httptest.Server
	ts   *TokenSource
	logs *syncbuf.Buffer
}

const (
	demoUser = "demo"
	demoKey  = "demo-key-S3CRET-0123456789"
)

// newEnv starts the simulator behind wrap (nil: none) with the demo account
// and returns a TokenSource for it with a guard of perHour generations.
func newEnv(t *testing.T, perHour int64, wrap func(http.Handler) http.Handler) *env {
	t.Helper()
	e := &env{clk: newClock(), logs: &syncbuf.Buffer{}}
	e.sim = sim.New(sim.Options{
		Accounts: []sim.Account{
			{UserName: demoUser, APIKey: demoKey, Auth: sim.AuthToken},
			{UserName: "basic", APIKey: "basic-key-S3CRET", Auth: sim.AuthAPIKey},
		},
		Now: e.clk.Now,
	})
	var h http.Handler = e.sim
	if wrap != nil {
		h = wrap(h)
	}
	e.srv = httptest.NewServer(h)
	t.Cleanup(e.srv.Close)
	u, err := url.Parse(e.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	store := &limit.MemoryStore{Now: e.clk.Now}
	e.ts = &TokenSource{
		UserName: demoUser,
		APIKey:   demoKey,
		Endpoint: u,
		Client:   e.srv.Client(),
		Guard:    limit.NewBudget(store, perHour, time.Hour, limit.WithPrefix("tokengen:"), limit.WithClock(e.clk)),
		Now:      e.clk.Now,
		Logger:   slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	return e
}

// gens is how many tokens the simulator generated.
func (e *env) gens() int64 { return e.sim.Stats().TokenGenerations }

// apply calls Apply and returns the handle and the bearer token it set.
func (e *env) apply(t *testing.T) (handle, token string) {
	t.Helper()
	h := http.Header{}
	handle, err := e.ts.Apply(context.Background(), h)
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	token, ok := strings.CutPrefix(h.Get("Authorization"), "Bearer ")
	if !ok || token == "" {
		t.Fatalf("Apply set Authorization %q", h.Get("Authorization"))
	}
	return handle, token
}

// aht calls the simulator's AHT API with header h and returns its error
// message, or "" on success.
func (e *env) aht(t *testing.T, user string, h http.Header) string {
	return simAHT(t, e.srv, user, h)
}

// simAHT calls srv's AHT API as user with header h and returns its error
// message, or "" on success.
func simAHT(t *testing.T, srv *httptest.Server, user string, h http.Header) string {
	t.Helper()
	body, _ := json.Marshal(cloudagent.AHTRequest{UserName: user, AgentID: "ravi"})
	req, _ := http.NewRequest(http.MethodPost, srv.URL+cloudagent.PathAHT, bytes.NewReader(body))
	for k, v := range h {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if cloudagent.IsSuccess(b) {
		return ""
	}
	msg, ok := cloudagent.ErrorMessage(b)
	if !ok {
		t.Fatalf("AHT answered %d %s", resp.StatusCode, b)
	}
	return msg
}

func (e *env) ahtWithToken(t *testing.T, token string) string {
	t.Helper()
	return e.aht(t, demoUser, http.Header{"Authorization": {"Bearer " + token}})
}

// assertNoSecrets fails if s holds the key or any of the tokens.
func assertNoSecrets(t *testing.T, what, s string, secrets ...string) {
	t.Helper()
	for _, sec := range append(secrets, demoKey) {
		if sec != "" && strings.Contains(s, sec) {
			t.Errorf("%s reveals a secret: %q", what, s)
		}
	}
}

func TestApplyConcurrentCallersShareOneGeneration(t *testing.T) {
	e := newEnv(t, 10, nil)
	if !e.ts.Ready() {
		t.Fatal("Ready before the first generation = false, want true")
	}
	const n = 1000
	type result struct {
		handle, auth string
		err          error
	}
	results := make([]result, n)
	var start, wg sync.WaitGroup
	start.Add(1)
	for i := range n {
		wg.Go(func() {
			start.Wait()
			h := http.Header{}
			handle, err := e.ts.Apply(context.Background(), h)
			results[i] = result{handle, h.Get("Authorization"), err}
		})
	}
	start.Done()
	wg.Wait()

	if g := e.gens(); g != 1 {
		t.Fatalf("upstream generations = %d, want 1", g)
	}
	first := results[0]
	for i, r := range results {
		if r.err != nil {
			t.Fatalf("Apply %d: %v", i, r.err)
		}
		if r.handle != first.handle || r.auth != first.auth {
			t.Fatalf("Apply %d got handle %q, Apply 0 got %q: callers got different tokens", i, r.handle, first.handle)
		}
	}
	if msg := e.aht(t, demoUser, http.Header{"Authorization": {first.auth}}); msg != "" {
		t.Fatalf("simulator refused the token: %q", msg)
	}
	if g := e.ts.Generations(); g != 1 {
		t.Errorf("Generations() = %d, want 1", g)
	}
}

func TestProactiveRefresh(t *testing.T) {
	e := newEnv(t, 10, nil)
	t0 := e.clk.Now()
	h1, tok1 := e.apply(t)

	e.clk.Set(t0.Add(30 * time.Minute))
	h, tok := e.apply(t)
	if h != h1 || tok != tok1 || e.gens() != 1 {
		t.Fatalf("at 30 min: token changed or generated again (generations %d)", e.gens())
	}

	e.clk.Set(t0.Add(54 * time.Minute))
	h2, tok2 := e.apply(t)
	if h2 == h1 || tok2 == tok1 {
		t.Fatal("at 54 min: token not refreshed")
	}
	if g := e.gens(); g != 2 {
		t.Fatalf("upstream generations = %d, want 2", g)
	}
	if msg := e.ahtWithToken(t, tok1); msg != cloudagent.MsgTokenExpired {
		t.Errorf("old token at the simulator: %q, want %q", msg, cloudagent.MsgTokenExpired)
	}
	if msg := e.ahtWithToken(t, tok2); msg != "" {
		t.Errorf("new token refused by the simulator: %q", msg)
	}
	// The new token lives from its own generation.
	e.clk.Set(t0.Add(54*time.Minute + 45*time.Minute))
	if h, _ := e.apply(t); h != h2 || e.gens() != 2 {
		t.Errorf("45 min into the new token: regenerated (generations %d)", e.gens())
	}
}

func TestFailedRefreshKeepsCurrentToken(t *testing.T) {
	// One generation allowed: the refresh at 54 min is refused by the guard.
	e := newEnv(t, 1, nil)
	t0 := e.clk.Now()
	h1, tok1 := e.apply(t)

	e.clk.Set(t0.Add(54 * time.Minute))
	h, tok := e.apply(t)
	if h != h1 || tok != tok1 {
		t.Fatal("failed refresh replaced the token")
	}
	if msg := e.ahtWithToken(t, tok); msg != "" {
		t.Fatalf("kept token refused by the simulator: %q", msg)
	}
	if !e.ts.Ready() {
		t.Error("Ready with a usable token = false")
	}
	// Retries wait for the guard; meanwhile the token still serves.
	e.clk.Set(t0.Add(59 * time.Minute))
	if h, _ := e.apply(t); h != h1 {
		t.Fatal("token changed at 59 min")
	}
	if e.gens() != 1 || e.sim.Stats().TokenRejected != 0 {
		t.Fatalf("upstream saw %d generations, %d refusals; want 1, 0", e.gens(), e.sim.Stats().TokenRejected)
	}

	// The guard frees at exactly one hour after the first generation, when
	// the token expires: the next Apply generates again.
	e.clk.Set(t0.Add(60 * time.Minute))
	h2, _ := e.apply(t)
	if h2 == h1 || e.gens() != 2 {
		t.Fatalf("after expiry: handle %q (old %q), generations %d", h2, h1, e.gens())
	}
	if e.ts.Failures() == 0 {
		t.Error("Failures() = 0 after a refused refresh")
	}
}

func TestRejectRegeneratesOnce(t *testing.T) {
	e := newEnv(t, 10, nil)
	h1, tok1 := e.apply(t)
	// The token worked: its refusal now is a token that ended, replaced at
	// once (a fresh token's refusal pauses generation instead).
	e.ts.Accept(h1)

	const n = 50
	handles := make([]string, n)
	errs := make([]error, n)
	var start, wg sync.WaitGroup
	start.Add(1)
	for i := range n {
		wg.Go(func() {
			start.Wait()
			e.ts.Reject(h1)
			handles[i], errs[i] = e.ts.Apply(context.Background(), http.Header{})
		})
	}
	start.Done()
	wg.Wait()

	if g := e.gens(); g != 2 {
		t.Fatalf("upstream generations = %d, want 2", g)
	}
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("Apply %d: %v", i, errs[i])
		}
		if handles[i] == h1 || handles[i] != handles[0] {
			t.Fatalf("Apply %d after Reject got handle %q (old %q, first %q)", i, handles[i], h1, handles[0])
		}
	}

	// A stale handle changes nothing.
	e.ts.Reject(h1)
	e.ts.Reject("")
	e.ts.Reject("no such handle")
	h, tok := e.apply(t)
	if h != handles[0] || e.gens() != 2 {
		t.Fatalf("stale Reject caused a regeneration (generations %d)", e.gens())
	}
	if msg := e.ahtWithToken(t, tok); msg != "" {
		t.Errorf("current token refused: %q", msg)
	}
	if msg := e.ahtWithToken(t, tok1); msg != cloudagent.MsgTokenExpired {
		t.Errorf("rejected token at the simulator: %q, want %q", msg, cloudagent.MsgTokenExpired)
	}
}

func TestHourlyGenerationLimit(t *testing.T) {
	e := newEnv(t, 10, nil)
	t0 := e.clk.Now()
	for i := range 10 {
		h, _ := e.apply(t)
		e.ts.Accept(h) // a working token: replaced at once when refused
		e.ts.Reject(h)
		if i < 9 {
			e.clk.Advance(time.Minute)
		}
	}
	if g := e.gens(); g != 10 {
		t.Fatalf("upstream generations = %d, want 10", g)
	}

	for range 3 {
		_, err := e.ts.Apply(context.Background(), http.Header{})
		if !errors.Is(err, ErrGenerationLimit) {
			t.Fatalf("Apply with the guard spent: %v, want ErrGenerationLimit", err)
		}
		var le *GenerationLimitError
		if !errors.As(err, &le) || !le.NextFree.Equal(t0.Add(time.Hour)) || le.UserName != demoUser {
			t.Fatalf("error %#v: want NextFree %v for %q", err, t0.Add(time.Hour), demoUser)
		}
		assertNoSecrets(t, "limit error", err.Error())
		e.clk.Advance(time.Minute)
	}
	if st := e.sim.Stats(); st.TokenGenerations != 10 || st.TokenRejected != 0 {
		t.Fatalf("upstream saw %d generations and %d refused requests, want 10 and 0", st.TokenGenerations, st.TokenRejected)
	}
	if e.ts.Ready() {
		t.Error("Ready with no token and the guard spent = true")
	}
	logs := e.logs.String()
	if !strings.Contains(logs, "hourly generation limit") || !strings.Contains(logs, "account="+demoUser) || !strings.Contains(logs, "next_allowed=") {
		t.Errorf("no warning naming the account and the next allowed time in logs:\n%s", logs)
	}

	e.clk.Set(t0.Add(time.Hour))
	if !e.ts.Ready() {
		t.Error("Ready once the guard freed = false")
	}
	_, tok := e.apply(t)
	if g := e.gens(); g != 11 {
		t.Fatalf("upstream generations = %d, want 11", g)
	}
	if msg := e.ahtWithToken(t, tok); msg != "" {
		t.Errorf("token after the window refused: %q", msg)
	}
	assertNoSecrets(t, "logs", e.logs.String(), tok)
}

func TestWrongAPIKey(t *testing.T) {
	e := newEnv(t, 10, nil)
	const wrongKey = "wrong-key-S3CRET-9876543210"
	e.ts.APIKey = wrongKey
	_, err := e.ts.Apply(context.Background(), http.Header{})
	if err == nil {
		t.Fatal("Apply with a wrong key succeeded")
	}
	var ue *UpstreamError
	if !errors.As(err, &ue) || ue.Message != cloudagent.MsgTokenInvalidCredentials {
		t.Fatalf("error %v: want an UpstreamError with %q", err, cloudagent.MsgTokenInvalidCredentials)
	}
	if !strings.Contains(err.Error(), cloudagent.MsgTokenInvalidCredentials) {
		t.Errorf("error %q does not carry the upstream message", err)
	}
	assertNoSecrets(t, "error", err.Error(), wrongKey)
	assertNoSecrets(t, "error %#v", fmt.Sprintf("%#v", err), wrongKey)

	// During the backoff the failure is returned without another attempt.
	if _, err2 := e.ts.Apply(context.Background(), http.Header{}); err2 != err {
		t.Errorf("second Apply: %v, want the same failure", err2)
	}
	if st := e.sim.Stats(); st.TokenRejected != 1 {
		t.Errorf("upstream saw %d token requests, want 1", st.TokenRejected)
	}
	if e.ts.Ready() {
		t.Error("Ready right after a failure = true")
	}
	e.clk.Advance(minRetry)
	if !e.ts.Ready() {
		t.Error("Ready after the backoff = false")
	}
	if _, err := e.ts.Apply(context.Background(), http.Header{}); err == nil {
		t.Error("retry with the wrong key succeeded")
	}
	if st := e.sim.Stats(); st.TokenRejected != 2 || e.ts.Failures() != 2 {
		t.Errorf("after the backoff: %d upstream requests, %d failures; want 2, 2", st.TokenRejected, e.ts.Failures())
	}
	assertNoSecrets(t, "logs", e.logs.String(), wrongKey)
	if !strings.Contains(e.logs.String(), cloudagent.MsgTokenInvalidCredentials) {
		t.Errorf("logs do not say why generation failed:\n%s", e.logs.String())
	}
}

func TestUnreachableUpstream(t *testing.T) {
	e := newEnv(t, 10, nil)
	e.srv.Close()
	_, err := e.ts.Apply(context.Background(), http.Header{})
	if err == nil || errors.Is(err, ErrGenerationLimit) {
		t.Fatalf("Apply with the upstream down: %v", err)
	}
	assertNoSecrets(t, "error", err.Error())
}

// TestWaiterLeavesGenerationGoesOn holds the generation at the simulator's
// door to show that a waiter whose context ends returns at once while the
// generation completes for the others, and that an already-ended context
// never starts a generation.
func TestWaiterLeavesGenerationGoesOn(t *testing.T) {
	arrived := make(chan struct{}, 1)
	release := make(chan struct{})
	e := newEnv(t, 10, func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == cloudagent.PathGenerateToken {
				arrived <- struct{}{}
				<-release
			}
			next.ServeHTTP(w, r)
		})
	})
	releaseOnce := sync.OnceFunc(func() { close(release) })
	t.Cleanup(releaseOnce) // runs before the server closes, should the test fail early

	done, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := e.ts.Apply(done, http.Header{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Apply with an ended context: %v, want context.Canceled", err)
	}
	select {
	case <-arrived:
		t.Fatal("an ended context started a generation")
	default:
	}

	ctx1, cancel1 := context.WithCancel(context.Background())
	err1 := make(chan error, 1)
	go func() {
		_, err := e.ts.Apply(ctx1, http.Header{})
		err1 <- err
	}()
	<-arrived // the generation is in flight
	cancel1()
	if err := <-err1; !errors.Is(err, context.Canceled) {
		t.Fatalf("leaving waiter: %v, want context.Canceled", err)
	}

	type res struct {
		handle string
		err    error
	}
	res2 := make(chan res, 1)
	go func() {
		h, err := e.ts.Apply(context.Background(), http.Header{})
		res2 <- res{h, err}
	}()
	releaseOnce()
	r := <-res2
	if r.err != nil || r.handle == "" {
		t.Fatalf("remaining waiter: %q, %v", r.handle, r.err)
	}
	if g := e.gens(); g != 1 {
		t.Fatalf("upstream generations = %d, want 1", g)
	}
}

func TestDefaultGuard(t *testing.T) {
	e := newEnv(t, 10, nil)
	e.ts.Guard = nil // the private default: 10 per hour on the Now clock
	for range DefaultGenerationsPerHour {
		h, _ := e.apply(t)
		e.ts.Accept(h) // a working token: replaced at once when refused
		e.ts.Reject(h)
	}
	if _, err := e.ts.Apply(context.Background(), http.Header{}); !errors.Is(err, ErrGenerationLimit) {
		t.Fatalf("11th generation within the hour: %v, want ErrGenerationLimit", err)
	}
	if g := e.gens(); g != DefaultGenerationsPerHour {
		t.Fatalf("upstream generations = %d", g)
	}
	e.clk.Advance(time.Hour)
	e.apply(t)
}

func TestAPIKeyUpstream(t *testing.T) {
	e := newEnv(t, 10, nil)
	var u Upstream = APIKey("basic-key-S3CRET")
	h := http.Header{}
	handle, err := u.Apply(context.Background(), h)
	if err != nil || handle != "" {
		t.Fatalf("Apply: %q, %v", handle, err)
	}
	if msg := e.aht(t, "basic", h); msg != "" {
		t.Fatalf("simulator refused the apiKey: %q", msg)
	}
	u.Reject(handle) // a no-op, must not panic
	if msg := e.aht(t, "basic", h); msg != "" {
		t.Fatalf("after Reject: %q", msg)
	}
	if _, err := APIKey("").Apply(context.Background(), http.Header{}); !errors.Is(err, ErrNoAPIKey) {
		t.Errorf("empty key: %v, want ErrNoAPIKey", err)
	}
}

func TestSecretsNeverFormatted(t *testing.T) {
	e := newEnv(t, 10, nil)
	_, tok := e.apply(t)
	key := APIKey(demoKey)

	var out bytes.Buffer
	for _, v := range []any{key, e.ts} {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x"} {
			fmt.Fprintf(&out, verb+"\n", v)
		}
		fmt.Fprintln(&out, v)
	}
	for _, h := range []slog.Handler{slog.NewTextHandler(&out, nil), slog.NewJSONHandler(&out, nil)} {
		slog.New(h).Info("values", "key", key, "source", e.ts, "any", any(key))
	}
	s := out.String()
	assertNoSecrets(t, "formatted values", s, tok)
	if !strings.Contains(s, demoUser) {
		t.Errorf("formatted TokenSource does not name its account:\n%s", s)
	}
	assertNoSecrets(t, "logs", e.logs.String(), tok)
}

func TestCheckKey(t *testing.T) {
	for _, c := range []struct {
		got, want string
		ok        bool
	}{
		{"demo-key", "demo-key", true},
		{"demo-kez", "demo-key", false},
		{"demo-key-longer", "demo-key", false},
		{"demo", "demo-key", false},
		{"", "demo-key", false},
		{"demo-key", "", false},
		{"", "", false}, // an account without a key opens for nobody
	} {
		if got := CheckKey(c.got, c.want); got != c.ok {
			t.Errorf("CheckKey(%q, %q) = %v, want %v", c.got, c.want, got, c.ok)
		}
	}
}

// TestRedirectNeverCarriesTheAPIKey: an upstream answering generateToken
// with a redirect to another host gets no second request, so the apiKey
// never reaches that host, and the generation fails with a clear error.
func TestRedirectNeverCarriesTheAPIKey(t *testing.T) {
	var mu sync.Mutex
	var keysSeen []string
	var other *httptest.Server
	e := newEnv(t, 10, func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == cloudagent.PathGenerateToken {
				http.Redirect(w, r, other.URL+r.URL.Path, http.StatusTemporaryRedirect)
				return
			}
			next.ServeHTTP(w, r)
		})
	})
	// The other host answers as CloudAgent would, so following the
	// redirect would even "work".
	other = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		keysSeen = append(keysSeen, r.Header.Get(cloudagent.HeaderAPIKey))
		mu.Unlock()
		e.sim.ServeHTTP(w, r)
	}))
	t.Cleanup(other.Close)

	_, err := e.ts.Apply(context.Background(), http.Header{})
	var ue *UpstreamError
	if !errors.As(err, &ue) || ue.StatusCode != http.StatusTemporaryRedirect || !strings.Contains(ue.Message, "redirect refused") {
		t.Errorf("Apply: %v; want an *UpstreamError saying the redirect was refused", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(keysSeen) != 0 {
		t.Errorf("the other host got %d requests (apiKey sent: %v)", len(keysSeen), keysSeen[0] != "")
	}
}
