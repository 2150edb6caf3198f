package daemon

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/caproxy/caproxy/cloudagent"
	"github.com/caproxy/caproxy/cloudagent/sim"
	"github.com/caproxy/caproxy/config"
	"github.com/caproxy/caproxy/internal/syncbuf"
	"github.com/caproxy/caproxy/limit"
)

// spendOne takes one call of the demo account's budget through st, so the
// file has something to lose.
func spendOne(t *testing.T, st *state) {
	t.Helper()
	b := limit.NewBudget(st.budget, 5, time.Minute)
	if ok, _, err := b.Take(context.Background(), "demo"); !ok || err != nil {
		t.Fatalf("Take = %v, %v", ok, err)
	}
}

// remaining is the demo account's free budget in st.
func remaining(t *testing.T, st *state) int64 {
	t.Helper()
	s, err := limit.NewBudget(st.budget, 5, time.Minute).State(context.Background(), "demo")
	if err != nil {
		t.Fatal(err)
	}
	return s.Remaining
}

// TestStateKeepsBudget checks the round trip through the file and its
// mode: owner only, also when the file existed with a wider one.
func TestStateKeepsBudget(t *testing.T) {
	dir := t.TempDir()
	logs := &syncbuf.Buffer{}
	st, err := openState(filepath.Join(dir, StateFile), "builtin:sim", nil, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	spendOne(t, st)
	st.Close()
	path := filepath.Join(dir, StateFile)
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file mode %v (%v), want 0600", fi.Mode().Perm(), err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	st, err = openState(filepath.Join(dir, StateFile), "builtin:sim", nil, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if r := remaining(t, st); r != 4 {
		t.Fatalf("after reopening: %d of 5 free, want 4", r)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("reopened state file mode %v (%v), want 0600", fi.Mode().Perm(), err)
	}
}

// TestStateSetAside writes files caproxy cannot use where its state file
// goes: each is set aside (renamed, its bytes kept) with a log line naming
// both files, and caproxy starts on a fresh, working file.
func TestStateSetAside(t *testing.T) {
	// A valid state file with a call in it, to damage.
	good := filepath.Join(t.TempDir(), StateFile)
	{
		st, err := openState(good, "builtin:sim", nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			t.Fatal(err)
		}
		spendOne(t, st)
		st.Close()
	}
	goodBytes, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	foreign := func(t *testing.T, path string) {
		db, err := bolt.Open(path, 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		db.Update(func(tx *bolt.Tx) error {
			b, err := tx.CreateBucket([]byte("someone-else"))
			if err != nil {
				return err
			}
			return b.Put([]byte("k"), []byte("v"))
		})
	}
	tests := []struct {
		name  string
		write func(t *testing.T, path string)
	}{
		{"garbage", func(t *testing.T, path string) {
			os.WriteFile(path, []byte(strings.Repeat("not a bolt file\n", 1000)), 0o600)
		}},
		{"truncated", func(t *testing.T, path string) {
			os.WriteFile(path, goodBytes[:len(goodBytes)/2], 0o600)
		}},
		{"damaged page", func(t *testing.T, path string) {
			b := append([]byte(nil), goodBytes...)
			for i := 3 * 4096; i < min(len(b), 5*4096); i++ {
				b[i] ^= 0xA5
			}
			os.WriteFile(path, b, 0o600)
		}},
		{"another program's bolt file", foreign},
		{"unknown format", func(t *testing.T, path string) {
			os.WriteFile(path, goodBytes, 0o600)
			db, err := bolt.Open(path, 0o600, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			db.Update(func(tx *bolt.Tx) error { return tx.Bucket(stateMetaBucket).Put(stateFormatKey, []byte("99")) })
		}},
		{"malformed budget entry", func(t *testing.T, path string) {
			os.WriteFile(path, goodBytes, 0o600)
			db, err := bolt.Open(path, 0o600, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			db.Update(func(tx *bolt.Tx) error {
				b, err := tx.Bucket(limit.BoltRoot("builtin:sim")).CreateBucketIfNotExists([]byte("budget:x"))
				if err != nil {
					return err
				}
				return b.Put([]byte("?"), []byte("?"))
			})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, StateFile)
			tt.write(t, path)
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			logs := &syncbuf.Buffer{}
			st, err := openState(filepath.Join(dir, StateFile), "builtin:sim", nil, slog.New(slog.NewTextHandler(logs, nil)))
			if err != nil {
				t.Fatalf("openState on a bad file: %v; want it set aside and a fresh start", err)
			}
			defer st.Close()
			if r := remaining(t, st); r != 5 {
				t.Fatalf("fresh state: %d of 5 free", r)
			}
			spendOne(t, st)

			aside, _ := filepath.Glob(path + ".bad-*")
			if len(aside) != 1 {
				t.Fatalf("files set aside: %q, want one", aside)
			}
			if got, _ := os.ReadFile(aside[0]); string(got) != string(want) {
				t.Errorf("the file set aside is not the bad file")
			}
			if line := logs.String(); !strings.Contains(line, "set aside") || !strings.Contains(line, aside[0]) {
				t.Errorf("log does not say the file was set aside and where:\n%s", line)
			}
		})
	}
}

// TestStateLocked checks that a state file in use by another caproxy is a
// clear error at start, not a wait forever and not a second writer.
func TestStateLocked(t *testing.T) {
	dir := t.TempDir()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := openState(filepath.Join(dir, StateFile), "builtin:sim", nil, logger)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	// bbolt's lock is flock(2), held per open file: a second open in this
	// process is refused as another process's would be.
	_, err = openState(filepath.Join(dir, StateFile), "builtin:sim", nil, logger)
	if err == nil || !strings.Contains(err.Error(), "locked by another process") {
		t.Fatalf("second openState = %v, want a locked error", err)
	}
	if aside, _ := filepath.Glob(filepath.Join(dir, StateFile) + ".bad-*"); len(aside) != 0 {
		t.Fatalf("a locked file was set aside: %q", aside)
	}
}

// TestCheckState checks what -check says of state.dir.
func TestCheckState(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o600)
	cfg := func(stateDir, redis string) *config.Config {
		return &config.Config{State: config.State{Dir: stateDir}, Redis: config.Redis{URL: redis}}
	}
	for _, tt := range []struct {
		name string
		cfg  *config.Config
		ok   bool
	}{
		{"writable directory", cfg(dir, ""), true},
		{"off", cfg("", ""), true},
		{"missing directory", cfg(filepath.Join(dir, "missing"), ""), false},
		{"a file", cfg(file, ""), false},
		{"missing directory, redis holds state", cfg(filepath.Join(dir, "missing"), "redis://127.0.0.1:1"), true},
	} {
		if err := CheckState(tt.cfg); (err == nil) != tt.ok {
			t.Errorf("%s: CheckState = %v, want ok %v", tt.name, err, tt.ok)
		}
	}
	if os.Geteuid() != 0 { // root writes anywhere
		ro := filepath.Join(dir, "ro")
		os.Mkdir(ro, 0o500)
		if err := CheckState(cfg(ro, "")); err == nil || !strings.Contains(err.Error(), "not writable") {
			t.Errorf("read-only directory: CheckState = %v, want not writable", err)
		}
	}
}

// TestDaemonRestartKeepsToken builds a daemon on a state directory twice
// in front of one simulator: the second run serves its miss with the first
// run's token, and its budget counts the first run's calls.
func TestDaemonRestartKeepsToken(t *testing.T) {
	s := sim.New(sim.Options{})
	srv := httptest.NewServer(s)
	defer srv.Close()
	dir := t.TempDir()
	cfg, err := config.Parse([]byte(`
upstream: {url: "`+srv.URL+`", timeout: 5s}
accounts: [{user_name: demo, api_key: demo-key, auth: token}]
limit: {upstream_per_minute: 3}
state: {dir: "`+dir+`"}
`), nil)
	if err != nil {
		t.Fatal(err)
	}
	// miss asks for agent's AHT (a miss the first time, a hit after).
	miss := func(d *Daemon, agent string) int {
		px := httptest.NewServer(d.Handler())
		defer px.Close()
		req, _ := http.NewRequest(http.MethodPost, px.URL+cloudagent.PathAHT, strings.NewReader(`{"userName":"demo","agentId":"`+agent+`"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set(cloudagent.HeaderAPIKey, "demo-key")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for run, agents := range [][]string{{"agent001", "agent002"}, {"agent003", "agent004"}} {
		d, err := New(context.Background(), cfg, Options{Log: io.Discard})
		if err != nil {
			t.Fatal(err)
		}
		codes := []int{miss(d, agents[0]), miss(d, agents[1])}
		if run == 0 {
			// Cache hits never write the file.
			before, err := os.Stat(filepath.Join(dir, StateFile))
			if err != nil {
				t.Fatal(err)
			}
			for range 20 {
				if code := miss(d, agents[0]); code != http.StatusOK {
					t.Fatalf("hit: %d", code)
				}
			}
			after, _ := os.Stat(filepath.Join(dir, StateFile))
			if !after.ModTime().Equal(before.ModTime()) || after.Size() != before.Size() {
				t.Fatalf("20 cache hits wrote the state file (modified %v, then %v)", before.ModTime(), after.ModTime())
			}
		}
		d.Close()
		want := []int{http.StatusOK, http.StatusOK}
		if run == 1 {
			want[1] = http.StatusTooManyRequests // 3 a minute, 2 spent before the restart
		}
		if codes[0] != want[0] || codes[1] != want[1] {
			t.Fatalf("run %d: misses answered %v, want %v", run+1, codes, want)
		}
	}
	if st := s.Stats(); st.TokenGenerations != 1 || st.AHTAdmitted != 3 {
		t.Fatalf("two runs: %d token generations, %d AHT calls; want 1 and 3", st.TokenGenerations, st.AHTAdmitted)
	}
}
