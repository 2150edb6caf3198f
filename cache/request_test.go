package cache

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/caproxy/caproxy/cloudagent"
	"github.com/caproxy/caproxy/jsonbody"
)

type req = cloudagent.AHTRequest

var parseCases = []struct {
	name string
	body string
	want req
	err  error // nil: accepted
}{
	// Accepted.
	{"agent", `{"userName":"demo","agentId":"agent1"}`, req{UserName: "demo", AgentID: "agent1"}, nil},
	{"campaign", `{"userName":"demo","campaignName":"Sales"}`, req{UserName: "demo", CampaignName: "Sales"}, nil},
	{"reordered", `{"agentId":"agent1","userName":"demo"}`, req{UserName: "demo", AgentID: "agent1"}, nil},
	{"all three", `{"campaignName":"c","agentId":"a","userName":"u"}`, req{UserName: "u", AgentID: "a", CampaignName: "c"}, nil},
	{"whitespace", " \t\r\n{ \"userName\" :\n\"demo\" ,\t\"agentId\"\r:\"agent1\" }\n ", req{UserName: "demo", AgentID: "agent1"}, nil},
	{"empty object", `{}`, req{}, nil},
	{"empty strings", `{"userName":"","agentId":""}`, req{}, nil},
	{"unknown scalar fields", `{"x":1,"userName":"demo","y":true,"z":false,"w":null,"v":-1.5e+3,"agentId":"a"}`, req{UserName: "demo", AgentID: "a"}, nil},
	{"unknown nested fields", `{"meta":{"a":[1,{"b":"}"},[]],"c":{}},"userName":"demo","list":[[["]"]]],"agentId":"a"}`, req{UserName: "demo", AgentID: "a"}, nil},
	{"quotes and braces in strings", `{"note":"he said \"}\" and {","userName":"de\"mo","agentId":"a}{,:"}`, req{UserName: `de"mo`, AgentID: "a}{,:"}, nil},
	{"escaped key", `{"\u0061gentId":"agent1","userName":"demo"}`, req{UserName: "demo", AgentID: "agent1"}, nil},
	{"escaped value", `{"userName":"demo","agentId":"\u0061gent1"}`, req{UserName: "demo", AgentID: "agent1"}, nil},
	{"simple escapes", `{"userName":"a\"b\\c\/d\be\ff\ng\rh\ti"}`, req{UserName: "a\"b\\c/d\be\ff\ng\rh\ti"}, nil},
	{"surrogate pair", `{"userName":"\ud83d\ude00"}`, req{UserName: "😀"}, nil},
	{"lone high surrogate", `{"userName":"\ud83dx"}`, req{UserName: "\uFFFDx"}, nil},
	{"lone low surrogate", `{"userName":"\ude00"}`, req{UserName: "\uFFFD"}, nil},
	{"high then non-surrogate", `{"userName":"\ud83d\u0041"}`, req{UserName: "\uFFFDA"}, nil},
	{"two highs then low", `{"userName":"\ud83d\ud83d\ude00"}`, req{UserName: "\uFFFD😀"}, nil},
	{"utf8", `{"userName":"दिल्ली","agentId":"é"}`, req{UserName: "दिल्ली", AgentID: "é"}, nil},
	{"null is absent", `{"userName":"demo","agentId":null,"campaignName":"c"}`, req{UserName: "demo", CampaignName: "c"}, nil},
	{"case-folded unknown", `{"userNames":"x","agent_id":"y"}`, req{}, nil},
	{"escape after eight bytes", `{"userName":"demo1234\u0041xyz","agentId":"agent-0001-0002-0003"}`, req{UserName: "demo1234Axyz", AgentID: "agent-0001-0002-0003"}, nil},
	// Longer than ParseRequest's stack buffer (128 bytes), or exactly as long.
	{"long fields", `{"userName":"` + strings.Repeat("u", 100) + `","agentId":"` + strings.Repeat("a", 100) + `","campaignName":null}`, req{UserName: strings.Repeat("u", 100), AgentID: strings.Repeat("a", 100)}, nil},
	{"long escaped field", `{"agentId":"x","userName":"` + strings.Repeat(`\u0041`, 30) + `","campaignName":"c"}`, req{UserName: strings.Repeat("A", 30), AgentID: "x", CampaignName: "c"}, nil},
	{"fields filling the buffer", `{"userName":"` + strings.Repeat("u", 126) + `","agentId":"ab"}`, req{UserName: strings.Repeat("u", 126), AgentID: "ab"}, nil},
	{"deep unknown", `{"x":` + strings.Repeat("[", jsonbody.MaxDepth-1) + strings.Repeat("]", jsonbody.MaxDepth-1) + `,"userName":"d"}`, req{UserName: "d"}, nil},

	// Rejected before looking at fields.
	{"empty", ``, req{}, ErrEmptyBody},
	{"only whitespace", " \n\t ", req{}, ErrEmptyBody},
	{"array", `[{"userName":"demo"}]`, req{}, ErrNotObject},
	{"string", `"userName"`, req{}, ErrNotObject},
	{"number", `42`, req{}, ErrNotObject},
	{"null", `null`, req{}, ErrNotObject},
	{"true", ` true `, req{}, ErrNotObject},
	{"truncated", `{"userName":"demo"`, req{}, ErrInvalidJSON},
	{"truncated string", `{"userName":"demo`, req{}, ErrInvalidJSON},
	{"trailing comma", `{"userName":"demo",}`, req{}, ErrInvalidJSON},
	{"missing colon", `{"userName" "demo"}`, req{}, ErrInvalidJSON},
	{"single quotes", `{'userName':'demo'}`, req{}, ErrInvalidJSON},
	{"unquoted key", `{userName:"demo"}`, req{}, ErrInvalidJSON},
	{"trailing garbage", `{"userName":"demo"}x`, req{}, ErrInvalidJSON},
	{"two objects", `{"userName":"a"}{"userName":"b"}`, req{}, ErrInvalidJSON},
	{"trailing garbage after non-object", `[]]`, req{}, ErrInvalidJSON},
	{"bad escape", `{"userName":"a\x"}`, req{}, ErrInvalidJSON},
	{"short unicode escape", `{"userName":"\u12"}`, req{}, ErrInvalidJSON},
	{"control character", "{\"userName\":\"a\nb\"}", req{}, ErrInvalidJSON},
	{"bad nested", `{"x":[1,2,}],"userName":"d"}`, req{}, ErrInvalidJSON},
	{"bad nested object", `{"x":{"a" 1},"userName":"d"}`, req{}, ErrInvalidJSON},
	{"leading zero", `{"x":01}`, req{}, ErrInvalidJSON},
	{"bare minus", `{"x":-}`, req{}, ErrInvalidJSON},
	{"bad fraction", `{"x":1.}`, req{}, ErrInvalidJSON},
	{"bad exponent", `{"x":1e+}`, req{}, ErrInvalidJSON},
	{"plus sign", `{"x":+1}`, req{}, ErrInvalidJSON},
	{"bad literal", `{"x":nul}`, req{}, ErrInvalidJSON},
	{"bad null in field", `{"agentId":nil}`, req{}, ErrInvalidJSON},
	{"literal prefix", `{"x":truex}`, req{}, ErrInvalidJSON},
	{"nul byte", "{\"userName\":\"d\"}\x00", req{}, ErrInvalidJSON},
	{"byte order mark", "\xef\xbb\xbf{}", req{}, ErrInvalidJSON},
	// Stricter than encoding/json by design (jsonbody): invalid UTF-8,
	// nesting deeper than jsonbody.MaxDepth, any key repeated anywhere.
	{"invalid utf8", "{\"userName\":\"a\xffb\xc3\"}", req{}, jsonbody.ErrNotUTF8},
	{"invalid utf8 is invalid JSON", "{\"userName\":\"a\xffb\xc3\"}", req{}, ErrInvalidJSON},
	{"deeper than jsonbody allows", `{"x":` + strings.Repeat("[", jsonbody.MaxDepth) + strings.Repeat("]", jsonbody.MaxDepth) + `}`, req{}, jsonbody.ErrTooDeep},
	{"deeper than jsonbody allows is invalid JSON", `{"x":` + strings.Repeat("[", jsonbody.MaxDepth) + strings.Repeat("]", jsonbody.MaxDepth) + `}`, req{}, ErrInvalidJSON},
	{"other key repeated", `{"x":1,"userName":"d","x":2}`, req{}, jsonbody.ErrDuplicateKey},
	{"other key repeated but for case", `{"x":1,"userName":"d","X":2}`, req{}, jsonbody.ErrDuplicateKey},
	{"nested key repeated", `{"x":{"a":1,"a":2},"userName":"d"}`, req{}, jsonbody.ErrDuplicateKey},
	{"field error beats other repeated key", `{"x":1,"x":2,"AgentId":"a"}`, req{}, ErrFieldCase},
	{"repeated key beats type error", `{"x":1,"x":2,"agentId":1}`, req{}, jsonbody.ErrDuplicateKey},
	{"not an object beats repeated key", `[{"a":1,"a":2}]`, req{}, ErrNotObject},
	{"too deep", `{"x":` + strings.Repeat("[", 10000) + strings.Repeat("]", 10000) + `}`, req{}, ErrInvalidJSON},
	{"too deep non-object", strings.Repeat("[", 10001) + strings.Repeat("]", 10001), req{}, ErrInvalidJSON},

	// Rejected for a field's type.
	{"number agentId", `{"userName":"demo","agentId":42}`, req{}, ErrAgentIDNotString},
	{"bool userName", `{"userName":true}`, req{}, ErrUserNameNotString},
	{"object campaignName", `{"userName":"d","campaignName":{"name":"c"}}`, req{}, ErrCampaignNameNotString},
	{"array agentId", `{"agentId":["a"]}`, req{}, ErrAgentIDNotString},
	{"first type error wins", `{"campaignName":1,"agentId":2}`, req{}, ErrCampaignNameNotString},
	{"bad type then good duplicate", `{"agentId":1,"agentId":"a"}`, req{}, ErrFieldRepeated},

	// Rejected where readers of JSON disagree.
	{"duplicate", `{"userName":"a","userName":"b","agentId":"x"}`, req{}, ErrFieldRepeated},
	{"duplicate: later null", `{"userName":"demo","agentId":"x","agentId":null}`, req{}, ErrFieldRepeated},
	{"duplicate: later string after null", `{"agentId":null,"agentId":"x"}`, req{}, ErrFieldRepeated},
	{"duplicate escaped", `{"agentId":"x","\u0061gentId":"y"}`, req{}, ErrFieldRepeated},
	{"other case", `{"userName":"demo","AgentId":"x"}`, req{}, ErrFieldCase},
	{"other case only", `{"UserName":"x","AGENTID":"y","username":"z"}`, req{}, ErrFieldCase},
	{"unicode fold", "{\"userName\":\"demo\",\"campaignName\":\"c\",\"agentId\":\"a\",\"u\u017fername\":\"x\"}", req{}, ErrFieldCase},
	{"name error beats type error", `{"agentId":1,"AgentId":"x"}`, req{}, ErrFieldCase},
	{"syntax error beats type error", `{"agentId":1,}`, req{}, ErrInvalidJSON},
}

func TestParseRequest(t *testing.T) {
	for _, tc := range parseCases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseRequest([]byte(tc.body))
			if !errors.Is(err, tc.err) || (tc.err == nil) != (err == nil) {
				t.Fatalf("ParseRequest(%.80q) error = %v, want %v", tc.body, err, tc.err)
			}
			if err == nil && got != tc.want {
				t.Fatalf("ParseRequest(%.80q) = %+v, want %+v", tc.body, got, tc.want)
			}
			if err != nil && got != (req{}) {
				t.Fatalf("ParseRequest(%.80q) returned %+v with error %v", tc.body, got, err)
			}
		})
	}
}

// TestParseRequestAgreesWithEncodingJSON runs the table through the
// encoding/json reference too, so the reference itself is checked.
func TestParseRequestAgreesWithEncodingJSON(t *testing.T) {
	for _, tc := range parseCases {
		t.Run(tc.name, func(t *testing.T) { checkAgreement(t, []byte(tc.body)) })
	}
}

func TestParseRequestErrorMessages(t *testing.T) {
	for _, tc := range []struct{ body, want string }{
		{``, "request body is empty"},
		{`[]`, "request body must be a JSON object"},
		{`{"agentId":42}`, "agentId must be a string"},
		{`{"userName":"demo"} x`, `request body is not valid JSON: invalid character 'x' at offset 20, expected end of input after the top-level value`},
		{`{"userName":"demo"`, `request body is not valid JSON: unexpected end of input, expected ',' or '}' after a field`},
	} {
		_, err := ParseRequest([]byte(tc.body))
		if err == nil || err.Error() != tc.want {
			t.Errorf("ParseRequest(%q) error = %v, want %q", tc.body, err, tc.want)
		}
	}
}

// TestParseRequestDoesNotRetainBody checks that the body buffer may be
// reused (the proxy pools it) without changing a parsed request.
func TestParseRequestDoesNotRetainBody(t *testing.T) {
	body := []byte(`{"userName":"demo","agentId":"agent1"}`)
	r, err := ParseRequest(body)
	if err != nil {
		t.Fatal(err)
	}
	for i := range body {
		body[i] = 'X'
	}
	if r.UserName != "demo" || r.AgentID != "agent1" {
		t.Fatalf("request changed with its body: %+v", r)
	}
}

// parseRequestStd is the reference ParseRequest: encoding/json reads the
// body (json.Unmarshal into cloudagent.AHTRequest, case-insensitive names,
// last occurrence wins, null a no-op), after the refusals ParseRequest adds
// where readers disagree, found on the names as encoding/json decodes them,
// and jsonbody's (invalid UTF-8, depth, keys repeated anywhere), found by
// refusalsStd. It copies none of the scanner's choices, so fuzzing finds
// where the two read a body differently.
func parseRequestStd(body []byte) (req, error) {
	if len(bytes.Trim(body, " \t\r\n")) == 0 {
		return req{}, ErrEmptyBody
	}
	if !json.Valid(body) || !utf8.Valid(body) {
		return req{}, ErrInvalidJSON
	}
	depth, repeated := refusalsStd(body)
	if depth > jsonbody.MaxDepth {
		return req{}, ErrInvalidJSON
	}
	if bytes.TrimLeft(body, " \t\r\n")[0] != '{' {
		return req{}, ErrNotObject
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if _, err := dec.Token(); err != nil { // the '{'
		return req{}, err
	}
	seen := map[string]bool{}
	var nameErr error
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return req{}, err
		}
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return req{}, err
		}
		name := tok.(string)
		for _, field := range []string{"userName", "agentId", "campaignName"} {
			var problem error
			switch {
			case name == field && seen[field]:
				problem = ErrFieldRepeated
			case name == field:
				seen[field] = true
			case strings.EqualFold(name, field):
				problem = ErrFieldCase
			}
			if nameErr == nil {
				nameErr = problem
			}
		}
	}
	if nameErr != nil {
		return req{}, nameErr
	}
	if repeated {
		return req{}, jsonbody.ErrDuplicateKey
	}
	var r req
	if err := json.Unmarshal(body, &r); err != nil {
		var typeErr *json.UnmarshalTypeError
		if !errors.As(err, &typeErr) {
			return req{}, err
		}
		switch typeErr.Field {
		case "userName":
			return req{}, ErrUserNameNotString
		case "agentId":
			return req{}, ErrAgentIDNotString
		case "campaignName":
			return req{}, ErrCampaignNameNotString
		}
		return req{}, err
	}
	return r, nil
}

// refusalsStd reads the valid JSON body with encoding/json's tokens and
// returns its deepest nesting of arrays and objects, and whether any
// object has two keys equal but for case (strings.EqualFold).
func refusalsStd(body []byte) (depth int, repeated bool) {
	dec := json.NewDecoder(bytes.NewReader(body))
	var walk func(d int)
	walk = func(d int) {
		tok, err := dec.Token()
		if err != nil {
			return
		}
		switch tok {
		case json.Delim('{'):
			depth = max(depth, d)
			var keys []string
			for dec.More() {
				kt, _ := dec.Token()
				k, _ := kt.(string)
				for _, o := range keys {
					if strings.EqualFold(o, k) {
						repeated = true
					}
				}
				keys = append(keys, k)
				walk(d + 1)
			}
			dec.Token()
		case json.Delim('['):
			depth = max(depth, d)
			for dec.More() {
				walk(d + 1)
			}
			dec.Token()
		}
	}
	walk(1)
	return depth, repeated
}

// checkAgreement fails t unless ParseRequest and the reference agree on
// body: the same kind of error, or the same request.
func checkAgreement(t *testing.T, body []byte) {
	t.Helper()
	want, wantErr := parseRequestStd(body)
	got, err := ParseRequest(body)
	if errorKind(err) != errorKind(wantErr) {
		t.Fatalf("ParseRequest(%q): error %v, encoding/json says %v", body, err, wantErr)
	}
	if err == nil && got != want {
		t.Fatalf("ParseRequest(%q) = %+v, encoding/json says %+v", body, got, want)
	}
}

func errorKind(err error) error {
	for _, e := range []error{jsonbody.ErrDuplicateKey, ErrEmptyBody, ErrInvalidJSON, ErrNotObject, ErrFieldCase, ErrFieldRepeated, ErrUserNameNotString, ErrAgentIDNotString, ErrCampaignNameNotString} {
		if errors.Is(err, e) {
			return e
		}
	}
	return err
}

func FuzzParseRequest(f *testing.F) {
	for _, tc := range parseCases {
		if len(tc.body) < 1000 {
			f.Add([]byte(tc.body))
		}
	}
	for _, s := range []string{
		`{"userName":"\ud800\udc00\udbff\udfff","agentId":"\uDFFF\uD800"}`,
		`{"a":[true,false,null,0,-0,1.25E-7,"x",{"b":{}}],"campaignName":"\t"}`,
		"{\"agentId\":\"\xed\xa0\x80\",\"userName\":\"\xf4\x90\x80\x80\"}",
		`{"\u0075serName":"\"","\"":"userName"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		checkAgreement(t, body)
	})
}

var benchBodies = []struct{ name, body string }{
	{"agent", `{"userName":"demo","agentId":"agent1"}`},
	{"aht", `{"userName":"demo","agentId":"agent001"}`},
	{"campaign_extra", `{"campaignName":"Outbound Sales","userName":"demo","source":{"app":"wallboard","tags":["a","b"]},"v":2}`},
}

func BenchmarkParseRequest(b *testing.B) {
	for _, bb := range benchBodies {
		body := []byte(bb.body)
		b.Run("scanner/"+bb.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				if _, err := ParseRequest(body); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("encoding_json/"+bb.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				var r req
				if err := json.Unmarshal(body, &r); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
