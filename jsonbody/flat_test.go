package jsonbody

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
)

// TestPlainEnd checks the eight-bytes-at-a-time scan against the byte
// table, with every byte value at every position of a word and random
// mixes (borrows between bytes are where such tricks go wrong).
func TestPlainEnd(t *testing.T) {
	slow := func(b []byte, i int) int {
		for i < len(b) && plainASCII[b[i]] {
			i++
		}
		return i
	}
	check := func(b []byte) {
		t.Helper()
		for i := 0; i <= len(b); i++ {
			if got, want := plainEnd(b, i), slow(b, i); got != want {
				t.Fatalf("plainEnd(%q, %d) = %d, want %d", b, i, got, want)
			}
		}
	}
	for c := range 256 {
		for pos := range 10 {
			b := []byte("abcdefghijklmnop")
			b[pos] = byte(c)
			check(b)
			b[pos+1] = byte(c) // two in a row: a borrow into a stop byte
			check(b)
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	interesting := []byte{'"', '\\', 0, 1, 0x1f, 0x20, 0x21, 0x22, 0x23, 0x5b, 0x5c, 0x5d, 0x7f, 0x80, 0xff, 'a'}
	b := make([]byte, 24)
	for range 20000 {
		for k := range b {
			b[k] = interesting[rng.IntN(len(interesting))]
		}
		check(b)
	}
}

func TestHasBackslash(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	interesting := []byte{'\\', '\\' - 1, '\\' + 1, 0, 0xff, 0x80, 'a', '"'}
	for range 20000 {
		b := make([]byte, rng.IntN(20))
		for k := range b {
			b[k] = interesting[rng.IntN(len(interesting))]
		}
		if got, want := hasBackslash(b), bytes.IndexByte(b, '\\') >= 0; got != want {
			t.Fatalf("hasBackslash(%q) = %v", b, got)
		}
	}
}

// TestParseFuncMembersOnce: where the flat path gives up part way, the
// general scanner goes on, and member sees each member exactly once, in
// order.
func TestParseFuncMembersOnce(t *testing.T) {
	var many strings.Builder
	var manyWant []string
	many.WriteString("{")
	for i := range flatMax + 2 {
		k := fmt.Sprintf("k%02d", i)
		fmt.Fprintf(&many, "%q:%d,", k, i)
		manyWant = append(manyWant, fmt.Sprintf("%s=%d", k, i))
	}
	many.WriteString(`"z":"end"}`)
	manyWant = append(manyWant, `z="end"`)
	for _, tc := range []struct {
		body string
		want []string
		err  error
	}{
		{`{"a":1,"b":"x","c":[1],"d":2}`, []string{"a=1", `b="x"`, "c=[1]", "d=2"}, nil},
		{`{"a":1,"\u0062":2,"c":3}`, []string{"a=1", "b=2", "c=3"}, nil},
		{`{"a":1,"b":"\u00e9","c":3}`, []string{"a=1", `b="\u00e9"`, "c=3"}, nil},
		{`{"a":1,"A":{},"c":3}`, []string{"a=1", "A={}", "c=3"}, ErrDuplicateKey},
		{`{"a":1,"b":2} x`, []string{"a=1", "b=2"}, ErrNotJSON},
		{many.String(), manyWant, nil},
	} {
		var got []string
		_, err := ParseFunc([]byte(tc.body), func(name []byte, v Value) {
			got = append(got, string(name)+"="+string(v.Raw()))
		})
		if !errors.Is(err, tc.err) || (err == nil) != (tc.err == nil) || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParseFunc(%q): members %q, %v; want %q, %v", tc.body, got, err, tc.want, tc.err)
		}
	}
}
