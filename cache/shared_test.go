package cache

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/caproxy/caproxy/internal/fakeclock"
	"github.com/caproxy/caproxy/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// sharedT0 is where the fake clocks of these tests start.
var sharedT0 = time.Date(2026, 11, 28, 4, 0, 0, 0, time.UTC)

const sharedTestPrefix = "test:cache:"

var sharedOK = []byte(`{"status":"success","message":{"AgentID":"agent1","AgentName":"Asha","AHT":"00:02:37"}}`)

// newRedisClient starts a redis-server for t and returns a client on it,
// closed when t ends.
func newRedisClient(t testing.TB) *redis.Client {
	t.Helper()
	return newClientOn(t, redistest.Start(t))
}

// newClientOn returns another client on addr, as a second replica has.
func newClientOn(t testing.TB, addr string) *redis.Client {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

// sharedEntry is an entry fetched at at, fresh for fresh, then stale for
// stale.
func sharedEntry(at time.Time, fresh, stale time.Duration, body string) *Entry {
	return &Entry{
		Body: []byte(body), Status: 200, ContentType: "application/json",
		Fetched: at, FreshUntil: at.Add(fresh), StaleUntil: at.Add(fresh + stale),
	}
}

// sameEntry reports how got differs from want, or "" if it does not.
func sameEntry(got, want *Entry) string {
	switch {
	case got == nil:
		return "nil entry"
	case !bytes.Equal(got.Body, want.Body):
		return fmt.Sprintf("body %q, want %q", got.Body, want.Body)
	case got.Status != want.Status:
		return fmt.Sprintf("status %d, want %d", got.Status, want.Status)
	case got.ContentType != want.ContentType:
		return fmt.Sprintf("content type %q, want %q", got.ContentType, want.ContentType)
	case !got.Fetched.Equal(want.Fetched):
		return fmt.Sprintf("fetched %v, want %v", got.Fetched, want.Fetched)
	case !got.FreshUntil.Equal(want.FreshUntil):
		return fmt.Sprintf("fresh until %v, want %v", got.FreshUntil, want.FreshUntil)
	case !got.StaleUntil.Equal(want.StaleUntil):
		return fmt.Sprintf("stale until %v, want %v", got.StaleUntil, want.StaleUntil)
	}
	return ""
}

func allBytes() string {
	b := make([]byte, 0, 512)
	for i := range 512 {
		b = append(b, byte(i))
	}
	return string(b)
}

// roundTripCases are entries that must come back from the shared level as
// they went in.
func roundTripCases(t0 time.Time) []struct {
	name string
	e    *Entry
} {
	bin := sharedEntry(t0, time.Minute, time.Hour, "\xca\x01"+allBytes())
	bin.ContentType = "application/octet-stream"
	noCT := sharedEntry(t0, time.Minute, time.Hour, "plain")
	noCT.ContentType = ""
	negative := sharedEntry(t0, 5*time.Second, 0, `{"status":"error","message":"agentId is Invalid"}`)
	empty := sharedEntry(t0, time.Minute, 0, "")
	nilBody := sharedEntry(t0, time.Minute, 0, "")
	nilBody.Body = nil
	odd := sharedEntry(t0.Add(123456789*time.Nanosecond), 1500*time.Millisecond, 7*time.Nanosecond, "x")
	odd.Status, odd.ContentType = 999, "text/plain; charset=utf-8"
	preEpoch := sharedEntry(time.Date(1960, 1, 1, 0, 0, 0, 1, time.UTC), time.Minute, 0, "old")
	preEpoch.FreshUntil, preEpoch.StaleUntil = t0.Add(time.Minute), t0.Add(time.Hour)
	big := sharedEntry(t0, time.Minute, time.Hour, string(bytes.Repeat([]byte("0123456789abcdef"), 1<<16)))
	return []struct {
		name string
		e    *Entry
	}{
		{"success", sharedEntry(t0, 30*time.Second, 10*time.Minute, string(sharedOK))},
		{"binary body", bin},
		{"empty content type", noCT},
		{"negative entry", negative},
		{"empty body", empty},
		{"nil body", nilBody},
		{"odd times and status", odd},
		{"fetched before 1970", preEpoch},
		{"1 MiB body", big},
	}
}

func TestEntryEncodingRoundTrip(t *testing.T) {
	for _, tc := range roundTripCases(sharedT0) {
		t.Run(tc.name, func(t *testing.T) {
			enc := encodeEntry(nil, tc.e)
			if len(enc)-len(tc.e.Body)-len(tc.e.ContentType) > 40 {
				t.Errorf("header of %d bytes", len(enc)-len(tc.e.Body)-len(tc.e.ContentType))
			}
			got, err := decodeEntry(enc)
			if err != nil {
				t.Fatal(err)
			}
			if diff := sameEntry(got, tc.e); diff != "" {
				t.Fatal(diff)
			}
		})
	}
}

func TestRedisSharedRoundTrip(t *testing.T) {
	rdb := newRedisClient(t)
	clk := fakeclock.New(sharedT0)
	s := NewRedisShared(rdb, sharedTestPrefix, WithSharedClock(clk.Now))
	ctx := t.Context()
	for i, tc := range roundTripCases(sharedT0) {
		t.Run(tc.name, func(t *testing.T) {
			key := KeyFor("demo", KindAgent, "agent"+strconv.Itoa(i))
			if err := s.Set(ctx, key, tc.e); err != nil {
				t.Fatal(err)
			}
			got, ok, err := s.Get(ctx, key)
			if err != nil || !ok {
				t.Fatalf("Get = %v, %v", ok, err)
			}
			if diff := sameEntry(got, tc.e); diff != "" {
				t.Fatal(diff)
			}
			// The key is the prefix and the cache key, and lives in Redis
			// exactly until StaleUntil on the writer's clock.
			pttl, err := rdb.PTTL(ctx, sharedTestPrefix+key).Result()
			if err != nil {
				t.Fatal(err)
			}
			want := tc.e.StaleUntil.Sub(sharedT0)
			if pttl > want.Round(time.Millisecond)+time.Millisecond || pttl < want-time.Second {
				t.Fatalf("PTTL %v, want about %v", pttl, want)
			}
		})
	}
	if n, err := rdb.DBSize(ctx).Result(); err != nil || n != int64(len(roundTripCases(sharedT0))) {
		t.Fatalf("DBSIZE = %d, %v", n, err)
	}
}

func TestRedisSharedLifetimes(t *testing.T) {
	rdb := newRedisClient(t)
	ctx := t.Context()
	key := KeyFor("demo", KindCampaign, "Sales")

	t.Run("Redis drops the entry at StaleUntil", func(t *testing.T) {
		s := NewRedisShared(rdb, sharedTestPrefix) // the real clock
		e := sharedEntry(time.Now(), 100*time.Millisecond, 200*time.Millisecond, string(sharedOK))
		if err := s.Set(ctx, key, e); err != nil {
			t.Fatal(err)
		}
		if pttl := rdb.PTTL(ctx, sharedTestPrefix+key).Val(); pttl <= 0 || pttl > 300*time.Millisecond {
			t.Fatalf("PTTL %v, want in (0, 300ms]", pttl)
		}
		if _, ok, err := s.Get(ctx, key); !ok || err != nil {
			t.Fatalf("Get before StaleUntil = %v, %v", ok, err)
		}
		time.Sleep(time.Until(e.StaleUntil))
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			if n := rdb.Exists(ctx, sharedTestPrefix+key).Val(); n == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("key still in Redis 5 s after StaleUntil")
			}
		}
		if _, ok, err := s.Get(ctx, key); ok || err != nil {
			t.Fatalf("Get after StaleUntil = %v, %v", ok, err)
		}
	})

	t.Run("a dead entry is not written", func(t *testing.T) {
		clk := fakeclock.New(sharedT0)
		s := NewRedisShared(rdb, sharedTestPrefix, WithSharedClock(clk.Now))
		for _, e := range []*Entry{
			sharedEntry(sharedT0.Add(-time.Hour), time.Minute, time.Minute, "old"),
			sharedEntry(sharedT0, 0, 0, "not stored"), // as Store returns what it did not store
		} {
			if err := s.Set(ctx, key, e); err != nil {
				t.Fatal(err)
			}
			if n := rdb.Exists(ctx, sharedTestPrefix+key).Val(); n != 0 {
				t.Fatalf("dead entry %+v written", e)
			}
		}
	})

	t.Run("a reader whose clock is ahead sees a miss", func(t *testing.T) {
		writer := NewRedisShared(rdb, sharedTestPrefix, WithSharedClock(fakeclock.New(sharedT0).Now))
		readerClock := fakeclock.New(sharedT0)
		reader := NewRedisShared(rdb, sharedTestPrefix, WithSharedClock(readerClock.Now))
		if err := writer.Set(ctx, key, sharedEntry(sharedT0, time.Minute, time.Minute, string(sharedOK))); err != nil {
			t.Fatal(err)
		}
		steps := []struct {
			at time.Duration
			ok bool
		}{
			{2*time.Minute - time.Nanosecond, true},
			{2 * time.Minute, false},
		}
		for _, st := range steps {
			readerClock.Set(sharedT0.Add(st.at))
			if _, ok, err := reader.Get(ctx, key); ok != st.ok || err != nil {
				t.Fatalf("at +%v: Get = %v, %v; want %v", st.at, ok, err, st.ok)
			}
		}
	})
}

func TestRedisSharedRefuses(t *testing.T) {
	rdb := newRedisClient(t)
	s := NewRedisShared(rdb, sharedTestPrefix)
	bad := sharedEntry(time.Now(), time.Minute, 0, "x")
	bad.Status = 0
	huge := sharedEntry(time.Now(), time.Minute, 0, "x")
	huge.Status = 1000
	for name, e := range map[string]*Entry{"nil": nil, "status 0": bad, "status 1000": huge} {
		if err := s.Set(t.Context(), "k", e); err == nil {
			t.Errorf("%s: Set accepted it", name)
		}
	}
	if n := rdb.DBSize(t.Context()).Val(); n != 0 {
		t.Fatalf("%d keys written", n)
	}
}

func TestRedisSharedCorruptValues(t *testing.T) {
	rdb := newRedisClient(t)
	s := NewRedisShared(rdb, sharedTestPrefix)
	ctx := t.Context()
	valid := encodeEntry(nil, sharedEntry(time.Now(), time.Minute, time.Hour, "body"))
	withByte := func(i int, c byte) string {
		b := bytes.Clone(valid)
		b[i] = c
		return string(b)
	}
	// header encodes a header by hand: status, the nanoseconds of every
	// time, and the content type's length.
	header := func(status int64, nsec, ctLen uint64) string {
		b := binary.AppendVarint([]byte{0xca, 0x01}, status)
		for range 3 {
			b = binary.AppendUvarint(binary.AppendVarint(b, time.Now().Unix()+60), nsec)
		}
		return string(binary.AppendUvarint(b, ctLen))
	}
	if _, err := decodeEntry([]byte(header(200, 0, 0) + "body")); err != nil {
		t.Fatalf("header() is wrong: %v", err)
	}
	cases := []struct{ name, value string }{
		{"empty", ""},
		{"JSON", string(sharedOK)},
		{"magic only", "\xca"},
		{"newer format", withByte(1, 2)},
		{"wrong magic", withByte(0, '{')},
		{"status 0", header(0, 0, 0) + "body"},
		{"status 1000", header(1000, 0, 0) + "body"},
		{"negative status", header(-200, 0, 0) + "body"},
		{"nanoseconds out of range", header(200, uint64(time.Second), 0) + "body"},
		{"overlong varint", "\xca\x01" + string(bytes.Repeat([]byte{0xff}, 11))},
		{"content type past the end", header(200, 0, 6) + "short"},
	}
	// Every cut before the body.
	for n := 2; n < len(valid)-len("body"); n++ {
		cases = append(cases, struct{ name, value string }{"cut at " + strconv.Itoa(n), string(valid[:n])})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := rdb.Set(ctx, sharedTestPrefix+"k", tc.value, time.Minute).Err(); err != nil {
				t.Fatal(err)
			}
			e, ok, err := s.Get(ctx, "k")
			if e != nil || ok || !errors.Is(err, ErrCorruptEntry) {
				t.Fatalf("Get = %v, %v, %v; want a miss and ErrCorruptEntry", e, ok, err)
			}
		})
	}
	if got := s.Corrupt(); got != int64(len(cases)) {
		t.Errorf("Corrupt() = %d, want %d", got, len(cases))
	}

	// A key of another type is a miss with Redis's error, not ErrCorruptEntry.
	rdb.Del(ctx, sharedTestPrefix+"k")
	rdb.RPush(ctx, sharedTestPrefix+"k", "a list")
	if e, ok, err := s.Get(ctx, "k"); e != nil || ok || err == nil || errors.Is(err, ErrCorruptEntry) {
		t.Fatalf("Get of a list = %v, %v, %v", e, ok, err)
	}
}

// FuzzDecodeEntry checks that no value crashes decodeEntry, and that what
// it reads encodes back to the same entry.
func FuzzDecodeEntry(f *testing.F) {
	for _, tc := range roundTripCases(sharedT0)[:8] {
		f.Add(encodeEntry(nil, tc.e))
	}
	f.Add([]byte("\xca\x01"))
	f.Add([]byte(`{"status":"success"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := decodeEntry(b)
		if err != nil {
			if e != nil || !errors.Is(err, ErrCorruptEntry) {
				t.Fatalf("decodeEntry = %v, %v", e, err)
			}
			return
		}
		again, err := decodeEntry(encodeEntry(nil, e))
		if err != nil {
			t.Fatal(err)
		}
		if diff := sameEntry(again, e); diff != "" {
			t.Fatal(diff)
		}
	})
}

func TestEscapeGlob(t *testing.T) {
	cases := []struct{ in, want string }{
		{"", ""},
		{"4:demo|", "4:demo|"},
		{"a*b?c[d]e\\f", `a\*b\?c\[d\]e\\f`},
		{"^-!", "^-!"},
	}
	for _, tc := range cases {
		if got := escapeGlob(tc.in); got != tc.want {
			t.Errorf("escapeGlob(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// purgeAccounts are account names that glob patterns or careless prefixes
// would confuse.
var purgeAccounts = []string{
	"demo", "demo2", "dem", "de*", "de?o", "d[e]mo", "[demo]", "d[a-z]mo",
	"d\\emo", "*", "?", "[", "]", "\\", "", "4:demo", "demo|agent", "demo|",
	"ünï", "x:y",
}

func TestRedisSharedPurgeAccount(t *testing.T) {
	rdb := newRedisClient(t)
	ctx := t.Context()
	// A prefix with glob characters of its own.
	const prefix = "t*[st]?:"
	s := NewRedisShared(rdb, prefix)
	e := sharedEntry(time.Now(), time.Hour, time.Hour, string(sharedOK))
	// Keys that are not the shared cache's, some of which unescaped
	// patterns would match.
	foreign := []string{
		"tXs!:" + KeyFor("demo", KindAgent, "a"),
		"caproxy:budget:demo",
		"t*[st]?" + KeyFor("demo", KindAgent, "a"),
		"4:demo|agent|a",
	}
	for _, k := range foreign {
		rdb.Set(ctx, k, "not ours", 0)
	}
	fill := func(t *testing.T) {
		t.Helper()
		for _, acc := range purgeAccounts {
			for _, k := range []string{KeyFor(acc, KindAgent, "a*"), KeyFor(acc, KindCampaign, "c")} {
				if err := s.Set(ctx, k, e); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	for _, acc := range purgeAccounts {
		t.Run(strconv.Quote(acc), func(t *testing.T) {
			fill(t)
			n, err := s.PurgeAccount(ctx, acc)
			if err != nil || n != 2 {
				t.Fatalf("PurgeAccount = %d, %v; want 2", n, err)
			}
			for _, other := range purgeAccounts {
				_, ok, err := s.Get(ctx, KeyFor(other, KindAgent, "a*"))
				if err != nil {
					t.Fatal(err)
				}
				if ok != (other != acc) {
					t.Errorf("after purging %q, %q present = %v", acc, other, ok)
				}
			}
			if n, _ := s.PurgeAccount(ctx, acc); n != 0 {
				t.Errorf("second PurgeAccount removed %d", n)
			}
		})
	}
	for _, k := range foreign {
		if rdb.Exists(ctx, k).Val() != 1 {
			t.Errorf("foreign key %q purged", k)
		}
	}
}

// TestRedisSharedPurgeMany checks purges of more keys than one SCAN page.
func TestRedisSharedPurgeMany(t *testing.T) {
	rdb := newRedisClient(t)
	ctx := t.Context()
	s := NewRedisShared(rdb, "")
	if s.Prefix() != DefaultSharedPrefix {
		t.Fatalf("Prefix() = %q, want the default", s.Prefix())
	}
	enc := encodeEntry(nil, sharedEntry(time.Now(), time.Hour, 0, string(sharedOK)))
	const perAccount = 2500
	p := rdb.Pipeline()
	for _, acc := range []string{"demo", "demo2"} {
		for i := range perAccount {
			p.Set(ctx, DefaultSharedPrefix+KeyFor(acc, KindAgent, strconv.Itoa(i)), enc, time.Hour)
		}
	}
	p.Set(ctx, "caproxy:budget:demo", "x", 0)
	if _, err := p.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	if n, err := s.PurgeAccount(ctx, "demo"); err != nil || n != perAccount {
		t.Fatalf("PurgeAccount = %d, %v; want %d", n, err, perAccount)
	}
	if n, err := s.Purge(ctx); err != nil || n != perAccount {
		t.Fatalf("Purge = %d, %v; want %d", n, err, perAccount)
	}
	if n := rdb.DBSize(ctx).Val(); n != 1 {
		t.Fatalf("%d keys left, want only the budget's", n)
	}
	if n, err := s.Purge(ctx); err != nil || n != 0 {
		t.Fatalf("Purge of nothing = %d, %v", n, err)
	}
}

func TestRedisSharedPurgeAndRemove(t *testing.T) {
	rdb := newRedisClient(t)
	ctx := t.Context()
	s := NewRedisShared(rdb, sharedTestPrefix)
	other := NewRedisShared(rdb, "other:")
	e := sharedEntry(time.Now(), time.Hour, 0, string(sharedOK))
	keys := []string{KeyFor("demo", KindAgent, "a"), KeyFor("demo", KindCampaign, "c"), KeyFor("demo2", KindAgent, "a")}
	for _, k := range keys {
		if err := s.Set(ctx, k, e); err != nil {
			t.Fatal(err)
		}
		if err := other.Set(ctx, k, e); err != nil {
			t.Fatal(err)
		}
	}

	steps := []struct {
		name   string
		key    string
		wantOK bool
	}{
		{"present", keys[0], true},
		{"already removed", keys[0], false},
		{"never there", KeyFor("nobody", KindAgent, "a"), false},
	}
	for _, st := range steps {
		if ok, err := s.Remove(ctx, st.key); ok != st.wantOK || err != nil {
			t.Fatalf("Remove %s = %v, %v; want %v", st.name, ok, err, st.wantOK)
		}
	}
	if _, ok, _ := s.Get(ctx, keys[1]); !ok {
		t.Fatal("Remove took another key")
	}

	if n, err := s.Purge(ctx); err != nil || n != 2 {
		t.Fatalf("Purge = %d, %v; want 2", n, err)
	}
	for _, k := range keys {
		if _, ok, _ := s.Get(ctx, k); ok {
			t.Errorf("%q survived Purge", k)
		}
		if _, ok, _ := other.Get(ctx, k); !ok {
			t.Errorf("Purge took %q under another prefix", k)
		}
	}
}

func TestRedisSharedErrors(t *testing.T) {
	rdb := newRedisClient(t)
	s := NewRedisShared(rdb, sharedTestPrefix)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	e := sharedEntry(time.Now(), time.Hour, 0, "x")
	if _, ok, err := s.Get(ctx, "k"); ok || err == nil {
		t.Errorf("Get on a cancelled context = %v, %v", ok, err)
	}
	if err := s.Set(ctx, "k", e); err == nil {
		t.Error("Set on a cancelled context succeeded")
	}
	if _, err := s.Purge(ctx); err == nil {
		t.Error("Purge on a cancelled context succeeded")
	}

	// A server that is gone is an error, never a panic or a hang.
	down := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialerRetries: 1, DialerRetryTimeout: time.Millisecond})
	defer down.Close()
	s = NewRedisShared(down, sharedTestPrefix)
	if _, ok, err := s.Get(t.Context(), "k"); ok || err == nil || errors.Is(err, ErrCorruptEntry) {
		t.Errorf("Get from no server = %v, %v", ok, err)
	}
	if _, err := s.PurgeAccount(t.Context(), "demo"); err == nil {
		t.Error("PurgeAccount on no server succeeded")
	}
	if _, err := s.Remove(t.Context(), "k"); err == nil {
		t.Error("Remove on no server succeeded")
	}
}

// TestTwoReplicas runs the flow two proxy replicas follow: each has its
// own Cache and its own Redis client; what one fetches, the other serves
// from the shared level without asking upstream, with the same times.
func TestTwoReplicas(t *testing.T) {
	addr := redistest.Start(t)
	clk := fakeclock.New(sharedT0)
	type replica struct {
		local  *Cache
		shared *RedisShared
	}
	newReplica := func() replica {
		return replica{
			local:  New(Options{TTL: 30 * time.Second, StaleTTL: 10 * time.Minute, NegativeTTL: 5 * time.Second, Now: clk.Now}),
			shared: NewRedisShared(newClientOn(t, addr), sharedTestPrefix, WithSharedClock(clk.Now)),
		}
	}
	a, b := newReplica(), newReplica()
	ctx := t.Context()
	key := KeyFor("demo", KindAgent, "agent1")

	// A fetches, stores locally and shares.
	e, stored := a.local.Store(key, sharedOK, 200, "application/json")
	if !stored {
		t.Fatal("not stored")
	}
	if err := a.shared.Set(ctx, key, e); err != nil {
		t.Fatal(err)
	}

	// B misses locally, finds it shared and takes it in.
	clk.Advance(10 * time.Second)
	if _, ok := b.local.Get(key); ok {
		t.Fatal("B has it before asking")
	}
	got, ok, err := b.shared.Get(ctx, key)
	if err != nil || !ok {
		t.Fatalf("B's shared Get = %v, %v", ok, err)
	}
	if !b.local.Put(key, got) {
		t.Fatal("B's Put refused it")
	}
	hit, ok := b.local.Get(key)
	if !ok || !hit.Fresh(clk.Now()) || hit.Age(clk.Now()) != 10 {
		t.Fatalf("B's hit = %+v, %v", hit, ok)
	}
	if diff := sameEntry(hit, e); diff != "" {
		t.Fatal(diff)
	}

	// B purges the account; A's next local miss finds nothing shared.
	if n, err := b.shared.PurgeAccount(ctx, "demo"); err != nil || n != 1 {
		t.Fatalf("PurgeAccount = %d, %v", n, err)
	}
	a.local.Remove(key)
	if _, ok, err := a.shared.Get(ctx, key); ok || err != nil {
		t.Fatalf("A's shared Get after B's purge = %v, %v", ok, err)
	}
}

func BenchmarkRedisSharedGet(b *testing.B) {
	rdb := newRedisClient(b)
	ctx := b.Context()
	for _, size := range []int{len(sharedOK), 4 << 10, 64 << 10} {
		s := NewRedisShared(rdb, sharedTestPrefix)
		key := KeyFor("demo", KindAgent, "agent"+strconv.Itoa(size))
		body := bytes.Repeat([]byte("x"), size)
		if err := s.Set(ctx, key, sharedEntry(time.Now(), time.Hour, time.Hour, string(body))); err != nil {
			b.Fatal(err)
		}
		get := func() {
			if _, ok, err := s.Get(ctx, key); !ok || err != nil {
				b.Fatalf("Get = %v, %v", ok, err)
			}
		}
		b.Run(fmt.Sprintf("body=%d", size), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				get()
			}
		})
		b.Run(fmt.Sprintf("body=%d/parallel", size), func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					get()
				}
			})
		})
	}
}

func BenchmarkEntryCodec(b *testing.B) {
	e := sharedEntry(time.Now(), time.Hour, time.Hour, string(sharedOK))
	buf := make([]byte, 0, 256)
	b.Run("encode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			buf = encodeEntry(buf[:0], e)
		}
	})
	enc := encodeEntry(nil, e)
	b.Run("decode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := decodeEntry(enc); err != nil {
				b.Fatal(err)
			}
		}
	})
}
