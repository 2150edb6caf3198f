package cache

import (
	"bytes"
	"errors"
	"unsafe"

	"github.com/caproxy/caproxy/cloudagent"
	"github.com/caproxy/caproxy/jsonbody"
)

// Errors of ParseRequest. Their texts are meant for the client. A body
// jsonbody refuses for another reason gets jsonbody's error: a key
// repeated elsewhere is jsonbody.ErrDuplicateKey, and invalid UTF-8 or
// nesting deeper than jsonbody.MaxDepth match both ErrInvalidJSON and
// jsonbody's own error (ErrNotUTF8, ErrTooDeep).
var (
	ErrEmptyBody = jsonbody.ErrEmpty
	// ErrInvalidJSON is jsonbody.ErrNotJSON, which syntax errors wrap with
	// where and why.
	ErrInvalidJSON = jsonbody.ErrNotJSON
	ErrNotObject   = errors.New("request body must be a JSON object")

	// ErrFieldCase refuses a field whose name matches userName, agentId or
	// campaignName only when case is ignored: CloudAgent (Java; Jackson
	// reads case-sensitively) and encoding/json (case-insensitive) would
	// read it differently, so caproxy guesses neither.
	ErrFieldCase = errors.New("field names must be spelled userName, agentId and campaignName, case included")
	// ErrFieldRepeated refuses a body naming userName, agentId or
	// campaignName twice: readers disagree on which occurrence (or null)
	// counts.
	ErrFieldRepeated = errors.New("userName, agentId and campaignName may each appear only once")

	ErrUserNameNotString     = errors.New("userName must be a string")
	ErrAgentIDNotString      = errors.New("agentId must be a string")
	ErrCampaignNameNotString = errors.New("campaignName must be a string")
)

// ParseRequest reads the fields of an AHT request body that make its cache
// key: userName, agentId and campaignName. It does not validate the
// request's shape (see cloudagent.AHTRequest.Validate), and the result
// keeps no reference to body, so body may be reused at once.
//
// The body is read by jsonbody.ParseFunc, caproxy's one reader of request
// bodies, so it must be strict JSON (see package jsonbody) and exactly one
// object (surrounding whitespace allowed). Field names match exactly,
// case included; the proxy forwards only the fields read here, so
// upstream answers the question keyed. The three fields must be strings;
// JSON null counts as absent. Other fields, of any type, are ignored.
// Where readers of JSON disagree the body is refused rather than read one
// way: a name that matches one of the three only when case is ignored
// (encoding/json would take it, a Jackson-based CloudAgent would not) is
// ErrFieldCase, and one of the three named twice (which occurrence wins,
// and whether a later null clears an earlier value, depends on the
// reader) is ErrFieldRepeated. Strings are decoded as encoding/json
// decodes them (escapes, surrogate pairs; a lone surrogate escape becomes
// U+FFFD); FuzzParseRequest checks the reading against encoding/json.
//
// Errors, the first that applies: ErrEmptyBody; a syntax error
// (ErrInvalidJSON wrapped with where and why), invalid UTF-8 or too deep
// a nesting (both also ErrInvalidJSON); ErrNotObject; the first of
// ErrFieldCase and ErrFieldRepeated; jsonbody.ErrDuplicateKey for a key
// repeated elsewhere; one of the *NotString errors for the first
// offending field. On error the request returned is empty.
func ParseRequest(body []byte) (cloudagent.AHTRequest, error) {
	// One pass: jsonbody checks the whole body and hands over the
	// top-level members as it meets them.
	var f fields
	_, err := jsonbody.ParseFunc(body, func(name []byte, v jsonbody.Value) { f.add(name, v) })
	switch {
	case err == nil, errors.Is(err, jsonbody.ErrDuplicateKey):
	case errors.Is(err, jsonbody.ErrTooDeep), errors.Is(err, jsonbody.ErrNotUTF8):
		return cloudagent.AHTRequest{}, invalidJSON{err}
	default:
		return cloudagent.AHTRequest{}, err
	}
	if !isObject(body) {
		return cloudagent.AHTRequest{}, ErrNotObject
	}
	return f.result(err)
}

// fields collects the three fields from an object's members.
type fields struct {
	vals             [fieldCampaignName + 1]jsonbody.Value
	typeErr, nameErr error
	seen             [fieldCampaignName + 1]bool
}

func (f *fields) add(name []byte, v jsonbody.Value) {
	k := fieldOf(name)
	switch {
	case k == fieldCase:
		if f.nameErr == nil {
			f.nameErr = ErrFieldCase
		}
		return
	case k == fieldOther:
		return
	case f.seen[k]:
		if f.nameErr == nil {
			f.nameErr = ErrFieldRepeated
		}
	}
	f.seen[k] = true
	f.vals[k] = v
	if kind := v.Kind(); kind != jsonbody.KindString && kind != jsonbody.KindNull && f.typeErr == nil {
		f.typeErr = notStringErrors[k]
	}
}

// result is the request, or the first error: a name error, then parseErr
// (a key repeated elsewhere), then a type error. A field of the wrong
// type is reported last, as encoding/json does: the rest says more.
func (f *fields) result(parseErr error) (cloudagent.AHTRequest, error) {
	for _, err := range []error{f.nameErr, parseErr, f.typeErr} {
		if err != nil {
			return cloudagent.AHTRequest{}, err
		}
	}
	// The three strings share one allocation, the only one ParseRequest
	// makes on a cache hit. Decoding never lengthens a JSON string, so
	// the raw lengths bound the buffer.
	n := 0
	for _, v := range f.vals[fieldUserName:] {
		n += len(v.Raw())
	}
	text := make([]byte, 0, n)
	var end [fieldCampaignName + 1]int
	for k := fieldUserName; k <= fieldCampaignName; k++ {
		text, _ = f.vals[k].AppendText(text)
		end[k] = len(text)
	}
	// text is not written again: share it rather than copy it.
	all := unsafe.String(unsafe.SliceData(text), len(text))
	return cloudagent.AHTRequest{
		UserName:     all[:end[fieldUserName]],
		AgentID:      all[end[fieldUserName]:end[fieldAgentID]],
		CampaignName: all[end[fieldAgentID]:end[fieldCampaignName]],
	}, nil
}

// isObject says whether the body jsonbody has read is an object: its
// first byte after space is '{'.
func isObject(body []byte) bool {
	for _, c := range body {
		switch c {
		case ' ', '\t', '\r', '\n':
			continue
		}
		return c == '{'
	}
	return false
}

// invalidJSON is a jsonbody refusal that ParseRequest's callers also
// know as ErrInvalidJSON: its text is jsonbody's.
type invalidJSON struct{ err error }

func (e invalidJSON) Error() string   { return e.err.Error() }
func (e invalidJSON) Unwrap() []error { return []error{ErrInvalidJSON, e.err} }

// field says which request field a name is.
type field int

const (
	fieldOther field = iota
	fieldUserName
	fieldAgentID
	fieldCampaignName
	fieldCase // one of the three names with another case
)

var notStringErrors = [...]error{
	fieldUserName:     ErrUserNameNotString,
	fieldAgentID:      ErrAgentIDNotString,
	fieldCampaignName: ErrCampaignNameNotString,
}

func fieldOf(name []byte) field {
	switch string(name) { // no allocation: the compiler compares in place
	case "userName":
		return fieldUserName
	case "agentId":
		return fieldAgentID
	case "campaignName":
		return fieldCampaignName
	}
	for _, n := range fieldNames {
		if bytes.EqualFold(name, n) {
			return fieldCase
		}
	}
	return fieldOther
}

// fieldNames are the request's field names, for fieldOf's case check.
var fieldNames = [...][]byte{[]byte("userName"), []byte("agentId"), []byte("campaignName")}
