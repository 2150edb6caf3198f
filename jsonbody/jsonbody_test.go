package jsonbody

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"unicode/utf8"
)

var parseCases = []struct {
	name, body string
	err        error  // nil: accepted
	canon      string // the canonical form, if accepted
}{
	{"flat", `{"userName":"demo","agentId":"agent001"}`, nil, `{"agentId":"agent001","userName":"demo"}`},
	{"space dropped", " \t\r\n{ \"b\" : [ 1 , 2 ] ,\n\"a\":{ } }\n", nil, `{"a":{},"b":[1,2]}`},
	{"nested sorted", `{"a":{"d":[1,{"c":null,"b":true}]}}`, nil, `{"a":{"d":[1,{"b":true,"c":null}]}}`},
	{"numbers as written", `{"n":1.50,"m":-0,"e":1E+02}`, nil, `{"e":1E+02,"m":-0,"n":1.50}`},
	{"escapes decoded", `{"\u0075serName":"d\u0065mo","s":"\/\"\\\b\f\n\r\t\u0001"}`, nil, `{"s":"/\"\\\b\f\n\r\t\u0001","userName":"demo"}`},
	{"html kept", `{"x":"<&>"}`, nil, `{"x":"<&>"}`},
	{"line separators escaped", "{\"x\":\"a\u2028b\\u2029\"}", nil, `{"x":"a\u2028b\u2029"}`},
	{"surrogates", `["\ud83d\ude00","\ud83dx","\ude00"]`, nil, "[\"😀\",\"\uFFFDx\",\"\uFFFD\"]"},
	{"keys sorted as decoded", `{"b":1,"\u0061":2,"B ":3,"é":4}`, nil, `{"B ":3,"a":2,"b":1,"é":4}`},
	{"escaped backslash key", `{"\\":1,"\\u0061":2}`, nil, `{"\\":1,"\\u0061":2}`},
	{"array", `[1,"x",null,true,false,[],{}]`, nil, `[1,"x",null,true,false,[],{}]`},
	{"scalar", ` "s" `, nil, `"s"`},
	{"number", `-1.5e-3`, nil, `-1.5e-3`},
	{"same key in two objects", `{"a":{"a":1},"b":{"a":2}}`, nil, `{"a":{"a":1},"b":{"a":2}}`},
	{"at max depth", strings.Repeat("[", MaxDepth) + strings.Repeat("]", MaxDepth), nil, strings.Repeat("[", MaxDepth) + strings.Repeat("]", MaxDepth)},
	{"many keys", manyKeys(100, ""), nil, ""},

	{"empty", ``, ErrEmpty, ""},
	{"space", " \n\t\r", ErrEmpty, ""},
	{"trailing data", `{"a":1} x`, ErrNotJSON, ""},
	{"two values", `{"a":1}{}`, ErrNotJSON, ""},
	{"missing value", `{"a":}`, ErrNotJSON, ""},
	{"truncated", `{"a":1`, ErrNotJSON, ""},
	{"trailing comma", `[1,]`, ErrNotJSON, ""},
	{"leading zero", `01`, ErrNotJSON, ""},
	{"bad literal", `nul`, ErrNotJSON, ""},
	{"control character", "\"a\nb\"", ErrNotJSON, ""},
	{"bad escape", `"\x"`, ErrNotJSON, ""},
	{"byte order mark", "\xef\xbb\xbf{}", ErrNotJSON, ""},
	{"invalid utf8 value", "{\"a\":\"\xff\"}", ErrNotUTF8, ""},
	{"invalid utf8 key", "{\"\xc3\":1}", ErrNotUTF8, ""},
	{"surrogate bytes", "\"\xed\xa0\x80\"", ErrNotUTF8, ""},
	{"repeated key", `{"a":1,"a":2}`, ErrDuplicateKey, ""},
	{"empty key repeated", `{"":1,"":2}`, ErrDuplicateKey, ""},
	{"empty key", `{"":1,"a":2}`, nil, `{"":1,"a":2}`},
	{"repeated key nested", `[{"a":{"b":1,"b":2}}]`, ErrDuplicateKey, ""},
	{"repeated key escaped", `{"a":1,"\u0061":2}`, ErrDuplicateKey, ""},
	{"keys equal but for case", `{"userName":"a","USERNAME":"b"}`, ErrDuplicateKey, ""},
	{"keys equal but for unicode case", "{\"s\":1,\"\u017f\":2}", ErrDuplicateKey, ""},
	{"kelvin", "{\"k\":1,\"\u212a\":2}", ErrDuplicateKey, ""},
	{"repeated among many", manyKeys(100, "key50"), ErrDuplicateKey, ""},
	{"repeated among many folded", manyKeys(100, "KEY07"), ErrDuplicateKey, ""},
	{"syntax error beats repeated key", `{"a":1,"a":2,}`, ErrNotJSON, ""},
	{"too deep", strings.Repeat("[", MaxDepth+1) + strings.Repeat("]", MaxDepth+1), ErrTooDeep, ""},
	{"too deep objects", strings.Repeat(`{"a":`, MaxDepth+1) + "1" + strings.Repeat("}", MaxDepth+1), ErrTooDeep, ""},
}

// manyKeys is an object of n keys key0…, plus extra if not empty.
func manyKeys(n int, extra string) string {
	var b strings.Builder
	b.WriteString("{")
	for i := range n {
		b.WriteString(`"key` + string(rune('0'+i/10)) + string(rune('0'+i%10)) + `":1,`)
	}
	if extra != "" {
		b.WriteString(`"` + extra + `":2,`)
	}
	b.WriteString(`"z":0}`)
	return b.String()
}

func TestParse(t *testing.T) {
	for _, tc := range parseCases {
		t.Run(tc.name, func(t *testing.T) {
			d, err := Parse([]byte(tc.body))
			if !errors.Is(err, tc.err) || (err == nil) != (tc.err == nil) {
				t.Fatalf("Parse(%.80q) error = %v, want %v", tc.body, err, tc.err)
			}
			if err != nil {
				if d.Value().Raw() != nil {
					t.Fatalf("Parse(%.80q) returned %+v with error %v", tc.body, d, err)
				}
				return
			}
			if tc.canon == "" {
				return
			}
			if got := d.AppendCanonical(nil); string(got) != tc.canon {
				t.Fatalf("AppendCanonical(%.80q) = %q, want %q", tc.body, got, tc.canon)
			}
		})
	}
}

// TestParseAgreesWithReference runs the table through the reference too,
// so the reference itself is checked.
func TestParseAgreesWithReference(t *testing.T) {
	for _, tc := range parseCases {
		t.Run(tc.name, func(t *testing.T) { checkParse(t, []byte(tc.body)) })
	}
}

func TestErrorTexts(t *testing.T) {
	for _, tc := range []struct{ body, want string }{
		{``, "request body is empty"},
		{`{"a":1,"A":2}`, "request body repeats a key (or spells one in two cases)"},
		{"\"\xff\"", "request body is not valid UTF-8"},
		{strings.Repeat("[", 65), "request body nests arrays and objects deeper than 64 levels"},
		{`{"a":1} x`, `request body is not valid JSON: invalid character 'x' at offset 8, expected end of input after the top-level value`},
		{`[1`, `request body is not valid JSON: unexpected end of input, expected ',' or ']' after an array element`},
	} {
		if _, err := Parse([]byte(tc.body)); err == nil || err.Error() != tc.want {
			t.Errorf("Parse(%q) error = %v, want %q", tc.body, err, tc.want)
		}
	}
}

func TestDocFields(t *testing.T) {
	d, err := Parse([]byte(` { "userName" : "d\u0065mo", "n":null, "x":[1,{"userName":"inner"}], "num":1 , "\u0061gentId":"a1"}`))
	if err != nil {
		t.Fatal(err)
	}
	if !d.IsObject() {
		t.Fatal("object not seen as one")
	}
	for _, tc := range []struct {
		name string
		v    string
		ok   bool
		err  error
	}{
		{"userName", "demo", true, nil},
		{"agentId", "a1", true, nil},
		{"n", "", false, nil},
		{"missing", "", false, nil},
		{"USERNAME", "", false, nil},
		{"num", "", false, ErrNotString},
		{"x", "", false, ErrNotString},
	} {
		v, ok, err := d.String(tc.name)
		if v != tc.v || ok != tc.ok || !errors.Is(err, tc.err) || (err == nil) != (tc.err == nil) {
			t.Errorf("String(%q) = %q, %v, %v; want %q, %v, %v", tc.name, v, ok, err, tc.v, tc.ok, tc.err)
		}
	}
	if _, ok, err := (Doc{}).String("userName"); ok || err != nil {
		t.Errorf("zero Doc has a field")
	}
	if got := (Doc{}).AppendCanonical([]byte("x")); string(got) != "x" {
		t.Errorf("zero Doc appended %q", got)
	}
	if (Doc{}).IsObject() {
		t.Errorf("zero Doc is an object")
	}
	arr, _ := Parse([]byte(`[{"userName":"x"}]`))
	if _, ok, _ := arr.String("userName"); ok || arr.IsObject() {
		t.Errorf("an array has fields")
	}
}

func TestParseFuncMembers(t *testing.T) {
	var got []string
	_, err := ParseFunc([]byte(`{"a":1,"b":{"c":[2]},"\u0064":"x","e":null}`), func(name []byte, v Value) {
		got = append(got, string(name)+"="+string(v.Raw()))
	})
	want := []string{"a=1", `b={"c":[2]}`, `d="x"`, "e=null"}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("members %q, %v; want %q", got, err, want)
	}
}

// TestDeepNestingIsCheap sends the body that took the old route reader
// to gigabytes: it must be refused with ErrTooDeep and allocate a fixed
// handful, not something per level.
func TestDeepNestingIsCheap(t *testing.T) {
	for _, body := range [][]byte{
		[]byte(strings.Repeat("[", 32000)),
		[]byte(`{"fromDate":"2026-09-21 00:00:00","x":` + strings.Repeat("[", 32000) + strings.Repeat("]", 32000) + `}`),
	} {
		var err error
		allocs := testing.AllocsPerRun(20, func() { _, err = Parse(body) })
		if !errors.Is(err, ErrTooDeep) {
			t.Fatalf("error = %v, want ErrTooDeep", err)
		}
		if allocs > 1 {
			t.Fatalf("%v allocations refusing 32000 levels", allocs)
		}
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		for range 100 {
			Parse(body)
		}
		runtime.ReadMemStats(&after)
		if per := (after.TotalAlloc - before.TotalAlloc) / 100; per > 256 {
			t.Fatalf("%d bytes allocated per refusal", per)
		}
	}
}

func TestFlatParseAllocatesNothing(t *testing.T) {
	body := []byte(`{"fromDate":"2026-09-21 00:00:00","toDate":"2026-09-21 23:59:59","userName":"demo","agentId":"agent001","campaignName":"Sales","skill":"x","n":[1,2]}`)
	dst := make([]byte, 0, 512)
	allocs := testing.AllocsPerRun(100, func() {
		d, err := Parse(body)
		if err != nil {
			t.Fatal(err)
		}
		dst = d.AppendCanonical(dst[:0])
		if _, ok, _ := d.String("userName"); !ok {
			t.Fatal("no userName")
		}
	})
	if allocs > 1 { // the string String returns
		t.Fatalf("%v allocations for a flat body", allocs)
	}
}

// trickle is a body that sends its bytes, then records the size of the
// buffer it is next asked to fill, then ends.
type trickle struct {
	data    []byte
	asked   int
	sentAll bool
}

func (b *trickle) Read(p []byte) (int, error) {
	if !b.sentAll {
		b.sentAll = true
		return copy(p, b.data), nil
	}
	b.asked = len(p)
	return 0, io.EOF
}

func (b *trickle) Close() error { return nil }

// TestReadGrowsAsBytesArrive declares 64 KiB and sends 10 bytes: Read
// must wait for them in a small buffer, not one of the declared size.
func TestReadGrowsAsBytesArrive(t *testing.T) {
	const declared = 64 << 10
	newReq := func(body *trickle) *http.Request {
		r := httptest.NewRequest(http.MethodPost, "/", nil)
		r.Body, r.ContentLength = body, declared
		return r
	}
	body := &trickle{data: []byte(`{"a":"12"}`)}
	got, err := Read(httptest.NewRecorder(), newReq(body), declared)
	if err != nil || string(got) != `{"a":"12"}` {
		t.Fatalf("Read = %q, %v", got, err)
	}
	if body.asked+len(got) > startSize {
		t.Fatalf("after 10 bytes Read waited with a %d-byte buffer", body.asked+len(got))
	}
	Release(got)

	w := httptest.NewRecorder()
	r := newReq(body)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range 100 {
		body.sentAll = false
		b, _ := Read(w, r, declared)
		Release(b)
	}
	runtime.ReadMemStats(&after)
	// The request and trickle are the test's own; Read adds a limiting
	// reader and at most a small buffer, never the declared 64 KiB.
	if per := (after.TotalAlloc - before.TotalAlloc) / 100; per > 2*startSize+1024 {
		t.Fatalf("%d bytes allocated per read of 10 bytes declared as 64 KiB", per)
	}
}

func TestReadLimits(t *testing.T) {
	big := strings.Repeat("x", 3000)
	for _, tc := range []struct {
		name     string
		body     string
		declared int64 // -1: unknown (chunked)
		limit    int64
		tooLarge bool
	}{
		{"declared over", "x", 101, 100, true},
		{"actual over, unknown length", big, -1, 100, true},
		{"actual over by one", big[:101], -1, 100, true},
		{"exactly the limit", big[:100], -1, 100, false},
		{"grows past the start buffer", big, -1, 5000, false},
		{"declared, grows", big, int64(len(big)), 5000, false},
		{"empty", "", 0, 100, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(tc.body))
			r.ContentLength = tc.declared
			got, err := Read(httptest.NewRecorder(), r, tc.limit)
			var mbe *http.MaxBytesError
			if tc.tooLarge {
				if !errors.As(err, &mbe) || mbe.Limit != tc.limit {
					t.Fatalf("Read error = %v, want *http.MaxBytesError{%d}", err, tc.limit)
				}
				return
			}
			if err != nil || string(got) != tc.body {
				t.Fatalf("Read = %d bytes, %v; want %d bytes", len(got), err, len(tc.body))
			}
			Release(got)
		})
	}
}

// TestReadOverLoopback reads real requests: a body over the limit gets
// a MaxBytesError and the connection is closed after the answer.
func TestReadOverLoopback(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := Read(w, r, 1000)
		if err != nil {
			w.WriteHeader(http.StatusRequestEntityTooLarge)
			return
		}
		d, err := Parse(b)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Write(d.AppendCanonical(nil))
		Release(b)
	}))
	defer srv.Close()
	for _, tc := range []struct {
		body string
		code int
		want string
	}{
		{`{"b":1, "a":"\u0078"}`, 200, `{"a":"x","b":1}`},
		{`[` + strings.Repeat(`1,`, 600) + `1]`, 413, ""},
		{`{"a":1,"A":2}`, 400, ErrDuplicateKey.Error() + "\n"},
	} {
		// io.MultiReader hides the length: the body goes chunked.
		resp, err := http.Post(srv.URL, "application/json", io.MultiReader(strings.NewReader(tc.body)))
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.code || (tc.want != "" && string(got) != tc.want) {
			t.Errorf("POST %.40q: %d %q, want %d %q", tc.body, resp.StatusCode, got, tc.code, tc.want)
		}
	}
}

// refParse is the reference reader: encoding/json's Decoder token by
// token, with repeated keys found by strings.EqualFold over every pair,
// the depth counted, and the canonical form made by encoding/json's
// encoder (map keys sorted, no HTML escaping, json.Number as written).
// It copies none of the scanner's choices.
func refParse(body []byte) (canon []byte, depth int, err error) {
	if len(bytes.Trim(body, " \t\r\n")) == 0 {
		return nil, 0, ErrEmpty
	}
	if !json.Valid(body) {
		return nil, 0, ErrNotJSON
	}
	if !utf8.Valid(body) {
		return nil, 0, ErrNotUTF8
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	dup := false
	var decode func(d int) any
	decode = func(d int) any {
		tok, _ := dec.Token()
		if _, ok := tok.(json.Delim); ok {
			depth = max(depth, d)
		}
		switch tok {
		case json.Delim('{'):
			m := map[string]any{}
			var keys []string
			for dec.More() {
				kt, _ := dec.Token()
				k := kt.(string)
				for _, o := range keys {
					if strings.EqualFold(o, k) {
						dup = true
					}
				}
				keys = append(keys, k)
				m[k] = decode(d + 1)
			}
			dec.Token()
			return m
		case json.Delim('['):
			a := []any{}
			for dec.More() {
				a = append(a, decode(d+1))
			}
			dec.Token()
			return a
		}
		return tok
	}
	v := decode(1)
	if depth > MaxDepth {
		return nil, depth, ErrTooDeep
	}
	if dup {
		return nil, depth, ErrDuplicateKey
	}
	var out bytes.Buffer
	enc := json.NewEncoder(&out)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, depth, err
	}
	return bytes.TrimSuffix(out.Bytes(), []byte("\n")), depth, nil
}

// checkParse fails t unless Parse and the reference agree on body: the
// same refusal, or the same canonical form, which reads back as the same
// value and is its own canonical form.
func checkParse(t *testing.T, body []byte) {
	t.Helper()
	want, _, wantErr := refParse(body)
	d, err := Parse(body)
	if errorClass(err) != errorClass(wantErr) {
		t.Fatalf("Parse(%.200q): error %v, reference says %v", body, err, wantErr)
	}
	if err != nil {
		return
	}
	got := d.AppendCanonical(nil)
	if !bytes.Equal(got, want) {
		t.Fatalf("Parse(%.200q): canonical %q, reference %q", body, got, want)
	}
	var a, b any
	da := json.NewDecoder(bytes.NewReader(body))
	da.UseNumber()
	db := json.NewDecoder(bytes.NewReader(got))
	db.UseNumber()
	if da.Decode(&a) != nil || db.Decode(&b) != nil || !reflect.DeepEqual(a, b) {
		t.Fatalf("%q canonicalised to %q, which reads differently", body, got)
	}
	d2, err := Parse(got)
	if err != nil || !bytes.Equal(d2.AppendCanonical(nil), got) {
		t.Fatalf("canonical form %q is not its own canonical form (%v)", got, err)
	}
	// Every top-level field reads through String as encoding/json reads it.
	m, isObject := a.(map[string]any)
	if isObject != d.IsObject() {
		t.Fatalf("%q: IsObject %v", body, d.IsObject())
	}
	for k, want := range m {
		v, ok, err := d.String(k)
		switch want := want.(type) {
		case string:
			if !ok || err != nil || v != want {
				t.Fatalf("%q: String(%q) = %q, %v, %v; want %q", body, k, v, ok, err, want)
			}
		case nil:
			if ok || err != nil {
				t.Fatalf("%q: String(%q) of null = %q, %v, %v", body, k, v, ok, err)
			}
		default:
			if ok || !errors.Is(err, ErrNotString) {
				t.Fatalf("%q: String(%q) of %v = %q, %v, %v", body, k, want, v, ok, err)
			}
		}
	}
}

// errorClass groups Parse's errors for comparison with the reference:
// a body broken in two ways (say invalid UTF-8 and then a syntax error)
// may be refused for either, whichever the reader meets first.
func errorClass(err error) string {
	switch {
	case err == nil:
		return "accepted"
	case errors.Is(err, ErrEmpty):
		return "empty"
	case errors.Is(err, ErrDuplicateKey):
		return "repeated key"
	case errors.Is(err, ErrNotJSON), errors.Is(err, ErrNotUTF8), errors.Is(err, ErrTooDeep):
		return "malformed"
	}
	return err.Error()
}

func FuzzParse(f *testing.F) {
	for _, tc := range parseCases {
		if len(tc.body) < 1000 {
			f.Add([]byte(tc.body))
		}
	}
	for _, s := range []string{
		`{"fromDate":"2026-09-21 00:00:00","toDate":"2026-09-21 23:59:59","userName":"x"}`,
		`{"a":[1,2,{"b":null}],"c":1e3}`, `{"u":"\u0061\ud83d\ude00"}`, `[]`, `"s"`, `1.0`,
		`{"\ud800\udc00":1,"\uDFFF\uD800":2}`, "{\"\u212a\":[{\"K\":0}]}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) { checkParse(t, body) })
}

var cdrBody = []byte(`{"userName":"demo","fromDate":"2026-09-21 00:00:00","toDate":"2026-09-21 23:59:59","campaignName":"Outbound Sales","agentId":"agent001","skill":"billing","callType":"outbound","limit":500,"offset":0,"status":["answered","missed"]}`)

func BenchmarkParse(b *testing.B) {
	for _, bb := range []struct {
		name string
		body []byte
	}{
		{"aht", []byte(`{"userName":"demo","agentId":"agent001"}`)},
		{"cdr", cdrBody},
	} {
		b.Run(bb.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(bb.body)))
			for b.Loop() {
				if _, err := Parse(bb.body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkParseCanonical(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(cdrBody)))
	dst := make([]byte, 0, 512)
	for b.Loop() {
		d, err := Parse(cdrBody)
		if err != nil {
			b.Fatal(err)
		}
		dst = d.AppendCanonical(dst[:0])
	}
}

// BenchmarkParseCanonicalEncodingJSON is the reader this package
// replaces on routes, for comparison.
func BenchmarkParseCanonicalEncodingJSON(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(cdrBody)))
	for b.Loop() {
		if _, _, err := refParse(cdrBody); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRead(b *testing.B) {
	w := httptest.NewRecorder()
	rd := bytes.NewReader(cdrBody)
	r := httptest.NewRequest(http.MethodPost, "/", nil)
	b.ReportAllocs()
	b.SetBytes(int64(len(cdrBody)))
	for b.Loop() {
		rd.Reset(cdrBody)
		r.Body, r.ContentLength = io.NopCloser(rd), int64(len(cdrBody))
		body, err := Read(w, r, 64<<10)
		if err != nil {
			b.Fatal(err)
		}
		Release(body)
	}
}
