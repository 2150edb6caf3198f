package proxy

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"unicode/utf8"

	"github.com/caproxy/caproxy/credential"
)

// Errors of canonicalJSON: a body caproxy could read differently from
// CloudAgent is refused rather than cached under one meaning and
// forwarded with another.
var (
	errBodyNotJSON    = errors.New("request body is not valid JSON")
	errBodyNotUTF8    = errors.New("request body is not valid UTF-8")
	errBodyDuplicates = errors.New("request body repeats a key (or spells one in two cases)")
)

// canonicalJSON is caproxy's one reading of a route's JSON body, used for
// the account, the cache key and what is forwarded: the value re-encoded
// with object keys sorted, insignificant space dropped, escapes decoded
// (so "\u0061gent1" is agent1 everywhere) and numbers kept as written. It
// also returns a top-level string "userName". An empty body stays empty.
// Invalid UTF-8 (which a decoder may replace) and duplicate keys,
// including keys equal but for case (Go's decoder folds case, Java's does
// not), are refused at every level.
func canonicalJSON(body []byte) (canon []byte, userName string, err error) {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, "", nil
	}
	if !utf8.Valid(body) {
		return nil, "", errBodyNotUTF8
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	v, err := decodeStrict(dec)
	if err != nil {
		return nil, "", err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, "", errBodyNotJSON // trailing data
	}
	if m, ok := v.(map[string]any); ok {
		userName, _ = m["userName"].(string)
	}
	var out bytes.Buffer
	enc := json.NewEncoder(&out)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, "", errBodyNotJSON
	}
	return bytes.TrimSuffix(out.Bytes(), []byte("\n")), userName, nil
}

// decodeStrict decodes one JSON value token by token, refusing duplicate
// (or case-folded duplicate) object keys.
func decodeStrict(dec *json.Decoder) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, errBodyNotJSON
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			m := map[string]any{}
			folded := map[string]struct{}{}
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return nil, errBodyNotJSON
				}
				k, _ := kt.(string)
				f := strings.ToLower(k)
				if _, dup := folded[f]; dup {
					return nil, errBodyDuplicates
				}
				folded[f] = struct{}{}
				if m[k], err = decodeStrict(dec); err != nil {
					return nil, err
				}
			}
			if _, err := dec.Token(); err != nil {
				return nil, errBodyNotJSON
			}
			return m, nil
		case '[':
			a := []any{}
			for dec.More() {
				v, err := decodeStrict(dec)
				if err != nil {
					return nil, err
				}
				a = append(a, v)
			}
			if _, err := dec.Token(); err != nil {
				return nil, errBodyNotJSON
			}
			return a, nil
		}
		return nil, errBodyNotJSON
	default:
		return t, nil // string, json.Number, bool or nil
	}
}

// apiKeyUpstream is the account's apiKey as upstream credentials, for
// routes whose API takes only the apiKey header (AuthAPIKey). An account's
// APIKey is its CloudAgent apiKey in both modes.
func (a *Account) apiKeyUpstream() credential.Upstream { return credential.APIKey(a.APIKey) }
