package proxy

import (
	"errors"

	"github.com/caproxy/caproxy/credential"
	"github.com/caproxy/caproxy/jsonbody"
)

// canonicalJSON is a JSON route's reading of its body, made by the one
// strict reader (jsonbody): the canonical body (the cache key and what is
// forwarded: keys sorted, insignificant space dropped, escapes decoded,
// numbers kept as written) and the top-level string "userName". An empty
// body stays empty. What jsonbody refuses (a repeated key, keys equal but
// for case, invalid UTF-8, nesting deeper than jsonbody.MaxDepth, trailing
// data) is refused: caproxy would read it one way and CloudAgent another.
func canonicalJSON(body []byte) (canon []byte, userName string, err error) {
	doc, err := jsonbody.Parse(body)
	if errors.Is(err, jsonbody.ErrEmpty) {
		return nil, "", nil
	}
	if err != nil {
		return nil, "", err
	}
	if userName, _, err = doc.String("userName"); err != nil {
		userName = "" // not a string: names no account, as before
	}
	return doc.AppendCanonical(nil), userName, nil
}

// apiKeyUpstream is the account's apiKey as upstream credentials, for
// routes whose API takes only the apiKey header (AuthAPIKey). An account's
// APIKey is its CloudAgent apiKey in both modes.
func (a *Account) apiKeyUpstream() credential.Upstream { return credential.APIKey(a.APIKey) }
