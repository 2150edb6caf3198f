package cache

import (
	"bytes"
	"encoding/binary"
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
	_, err := jsonbody.ParseFunc(body, func(name []byte, v jsonbody.Value) {
		// Written out here, not in a method, to save a call per member.
		k := exactField(name)
		if k == fieldOther {
			f.addOther(name)
			return
		}
		if f.seen[k] && f.nameErr == nil {
			f.nameErr = ErrFieldRepeated
		}
		f.seen[k] = true
		f.span[k] = [2]int32{}
		switch v.Kind() {
		case jsonbody.KindString:
			f.decode(k, v)
		case jsonbody.KindNull:
		default:
			if f.typeErr == nil {
				f.typeErr = notStringErrors[k]
			}
		}
	})
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
	return f.result(body, err)
}

// fields collects the three fields from an object's members, as
// ParseRequest's callback meets them. Their decoded text goes straight
// into text, on the stack: fields holds no pointer into body, so the
// callback's writes need no write barrier, and the result is made in
// one allocation at the end.
type fields struct {
	text             [128]byte
	n                int                             // text[:n] is used
	span             [fieldCampaignName + 1][2]int32 // each field's text[from:to]
	long             bool                            // a field did not fit in text
	seen             [fieldCampaignName + 1]bool
	typeErr, nameErr error
}

// decode appends the string v to f.text.
func (f *fields) decode(k field, v jsonbody.Value) {
	raw := v.Raw()
	raw = raw[1 : len(raw)-1]
	// Decoding never lengthens a JSON string: if the raw text fits, the
	// decoded one does.
	if len(raw) > len(f.text)-f.n {
		f.long = true
		return
	}
	// Most strings have no escapes, and are short: copied here, eight
	// bytes at a time (cheaper than a call to copy), until a backslash,
	// if any, says to decode.
	dst := f.text[f.n:][:len(raw)]
	n := len(raw)
	i := 0
	const ones = 0x0101010101010101
	for ; i+8 <= len(raw); i += 8 {
		x := binary.LittleEndian.Uint64(raw[i:])
		// A byte of y is 0 exactly where the subtraction first borrows
		// from it, setting its high bit.
		if y := x ^ (ones * '\\'); (y-ones)&^y&(ones*0x80) != 0 {
			break
		}
		binary.LittleEndian.PutUint64(dst[i:], x)
	}
	for ; i < len(raw); i++ {
		if raw[i] == '\\' {
			text, _ := v.AppendText(dst[:0])
			n = len(text)
			break
		}
		dst[i] = raw[i]
	}
	f.span[k] = [2]int32{int32(f.n), int32(f.n + n)}
	f.n += n
}

// addOther takes a member that is none of the three: it is refused if
// its name is one of them in another case.
func (f *fields) addOther(name []byte) {
	if foldsToField(name) && f.nameErr == nil {
		f.nameErr = ErrFieldCase
	}
}

// result is the request, or the first error: a name error, then parseErr
// (a key repeated elsewhere), then a type error. A field of the wrong
// type is reported last, as encoding/json does: the rest says more.
func (f *fields) result(body []byte, parseErr error) (cloudagent.AHTRequest, error) {
	switch {
	case f.nameErr != nil:
		return cloudagent.AHTRequest{}, f.nameErr
	case parseErr != nil:
		return cloudagent.AHTRequest{}, parseErr
	case f.typeErr != nil:
		return cloudagent.AHTRequest{}, f.typeErr
	case f.long:
		return readLong(body), nil
	case f.n == 0:
		return cloudagent.AHTRequest{}, nil
	}
	// The three strings share one allocation, the only one ParseRequest
	// makes on a cache hit.
	all := string(f.text[:f.n])
	u, a, c := f.span[fieldUserName], f.span[fieldAgentID], f.span[fieldCampaignName]
	return cloudagent.AHTRequest{
		UserName:     all[u[0]:u[1]],
		AgentID:      all[a[0]:a[1]],
		CampaignName: all[c[0]:c[1]],
	}, nil
}

// readLong reads the three fields of a body ParseRequest has accepted
// whose fields are too long for fields.text, again: rare enough that a
// second pass costs nothing that matters.
func readLong(body []byte) cloudagent.AHTRequest {
	var vals [fieldCampaignName + 1]jsonbody.Value
	jsonbody.ParseFunc(body, func(name []byte, v jsonbody.Value) {
		if k := exactField(name); k != fieldOther {
			vals[k] = v
		}
	})
	// One allocation for the three; decoding never lengthens a string,
	// so the raw lengths bound it.
	n := 0
	for _, v := range vals {
		n += len(v.Raw())
	}
	text := make([]byte, 0, n)
	text, _ = vals[fieldUserName].AppendText(text)
	endUser := len(text)
	text, _ = vals[fieldAgentID].AppendText(text)
	endAgent := len(text)
	text, _ = vals[fieldCampaignName].AppendText(text)
	// text is not written again: share it rather than copy it.
	all := unsafe.String(unsafe.SliceData(text), len(text))
	return cloudagent.AHTRequest{
		UserName:     all[:endUser],
		AgentID:      all[endUser:endAgent],
		CampaignName: all[endAgent:],
	}
}

// exactField says which of the three a name is, case included, or
// fieldOther.
func exactField(name []byte) field {
	switch string(name) { // no allocation: the compiler compares in place
	case "userName":
		return fieldUserName
	case "agentId":
		return fieldAgentID
	case "campaignName":
		return fieldCampaignName
	}
	return fieldOther
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
)

var notStringErrors = [...]error{
	fieldUserName:     ErrUserNameNotString,
	fieldAgentID:      ErrAgentIDNotString,
	fieldCampaignName: ErrCampaignNameNotString,
}

// foldsToField says whether a name other than the three matches one of
// them when case is ignored.
func foldsToField(name []byte) bool {
	// Each rune of a name that folds to a field name matches one ASCII
	// letter, and is at least one byte: a shorter name cannot.
	if len(name) < len("agentId") {
		return false
	}
	for _, n := range fieldNames {
		if bytes.EqualFold(name, n) {
			return true
		}
	}
	return false
}

// fieldNames are the request's field names, for fieldOf's case check.
var fieldNames = [...][]byte{[]byte("userName"), []byte("agentId"), []byte("campaignName")}
