package proxy

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
)

func TestCanonicalJSON(t *testing.T) {
	for in, want := range map[string]string{
		``:                ``,
		"  \n":            ``,
		`{"b":1,"a":"x"}`: `{"a":"x","b":1}`,
		` { "userName" : "d\u0065mo" , "n":1.50 }`: `{"n":1.50,"userName":"demo"}`,
		`{"a":{"d":[1,{"c":null,"b":true}]}}`:      `{"a":{"d":[1,{"b":true,"c":null}]}}`,
		`{"x":"<&>"}`:                              `{"x":"<&>"}`,
		`[1,2]`:                                    `[1,2]`,
	} {
		got, _, err := canonicalJSON([]byte(in))
		if err != nil || string(got) != want {
			t.Errorf("canonicalJSON(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, user, _ := canonicalJSON([]byte(`{"userName":"d\u0065mo"}`)); user != "demo" {
		t.Errorf("userName = %q", user)
	}
	for _, in := range []string{
		`{"a":1,"a":2}`, `{"userName":"a","USERNAME":"b"}`, `{"a":{"b":1,"b":2}}`,
		`{"a":1} x`, `{"a":1}{}`, `{"a":}`, "{\"a\":\"\xff\"}", `{"a":1`,
	} {
		if got, _, err := canonicalJSON([]byte(in)); err == nil {
			t.Errorf("canonicalJSON(%q) = %q, want refused", in, got)
		}
	}
}

// FuzzCanonicalJSON checks caproxy's one reading of a route body against
// encoding/json: whatever it accepts, encoding/json accepts and reads the
// same (so the key and the forwarded body mean what the client sent), its
// output is its own fixed point, and it never accepts invalid JSON.
func FuzzCanonicalJSON(f *testing.F) {
	for _, s := range []string{
		`{"fromDate":"2026-09-21 00:00:00","toDate":"2026-09-21 23:59:59","userName":"x"}`,
		`{"a":[1,2,{"b":null}],"c":1e3}`, `{"u":"\u0061\ud83d\ude00"}`, `{"a":1,"A":2}`, `[]`, `"s"`, `1.0`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		canon, _, err := canonicalJSON(body)
		if err != nil {
			return
		}
		if len(bytes.TrimSpace(body)) == 0 {
			if len(canon) != 0 {
				t.Fatalf("empty body became %q", canon)
			}
			return
		}
		if !json.Valid(body) {
			t.Fatalf("accepted invalid JSON %q", body)
		}
		var a, b any
		da := json.NewDecoder(bytes.NewReader(body))
		da.UseNumber()
		db := json.NewDecoder(bytes.NewReader(canon))
		db.UseNumber()
		if da.Decode(&a) != nil || db.Decode(&b) != nil || !reflect.DeepEqual(a, b) {
			t.Fatalf("%q canonicalised to %q, which reads differently", body, canon)
		}
		again, _, err := canonicalJSON(canon)
		if err != nil || !bytes.Equal(again, canon) {
			t.Fatalf("not a fixed point: %q -> %q (%v)", canon, again, err)
		}
	})
}
