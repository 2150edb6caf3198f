// Package cleanpath gives every request path one spelling, the one caproxy
// routes on and forwards, so no spelling of a path reaches CloudAgent
// outside its route's budget.
package cleanpath

import (
	"errors"
	"net/http"
	"net/url"
	"strings"

	"github.com/caproxy/caproxy/cloudagent"
)

// ErrUnsafe is a path caproxy will not guess the meaning of.
var ErrUnsafe = errors.New("request path cannot be cleaned safely")

// Canonical returns the one spelling of an escaped request path that
// caproxy routes on and forwards: percent-encoded unreserved characters
// decoded (and other escapes upper-cased), duplicate slashes collapsed, "."
// and ".." segments resolved, and no trailing slash. So /ca_apis/aht/,
// //ca_apis/aht, /ca_apis/./aht and /ca_apis/%61ht all become /ca_apis/aht
// and are counted against AHT's budget, never passed around it.
//
// It refuses (ErrUnsafe) what could mean something else upstream: an
// encoded "/" or "\" (a servlet container may split on it), a ";" (a
// servlet container strips path parameters, so /ca_apis/aht;x=1 is AHT
// there), an escaped control character, a malformed escape, and ".." above
// the root.
//
// A path that needs no change is returned as is, without allocating.
func Canonical(escaped string) (string, error) {
	if escaped == "" {
		return "/", nil
	}
	if escaped[0] != '/' {
		return "", ErrUnsafe
	}
	if isCanonical(escaped) {
		return escaped, nil
	}
	var b strings.Builder
	b.Grow(len(escaped))
	// Decode unreserved escapes first, so %2e is a dot and %2f stays out.
	for i := 0; i < len(escaped); i++ {
		c := escaped[i]
		switch c {
		case ';', '\\':
			return "", ErrUnsafe
		case '%':
			if i+2 >= len(escaped) || !isHex(escaped[i+1]) || !isHex(escaped[i+2]) {
				return "", ErrUnsafe
			}
			d := unhex(escaped[i+1])<<4 | unhex(escaped[i+2])
			switch {
			case isUnreserved(d):
				b.WriteByte(d)
			case d == '/' || d == '\\' || d == ';' || d < 0x20 || d == 0x7f:
				return "", ErrUnsafe
			default:
				b.WriteByte('%')
				b.WriteByte(upperHex[d>>4])
				b.WriteByte(upperHex[d&15])
			}
			i += 2
		default:
			if c < 0x20 || c == 0x7f {
				return "", ErrUnsafe
			}
			b.WriteByte(c)
		}
	}
	// Resolve segments: empty and "." dropped, ".." pops (never above root).
	segs := strings.Split(b.String(), "/")
	out := segs[:0]
	for _, s := range segs {
		switch s {
		case "", ".":
		case "..":
			if len(out) == 0 {
				return "", ErrUnsafe
			}
			out = out[:len(out)-1]
		default:
			out = append(out, s)
		}
	}
	return "/" + strings.Join(out, "/"), nil
}

// isCanonical reports whether p needs no cleaning: no escape, ";", "\",
// control character, empty or dot segment, or trailing slash.
func isCanonical(p string) bool {
	if len(p) > 1 && p[len(p)-1] == '/' {
		return false
	}
	for i := 0; i < len(p); i++ {
		switch c := p[i]; c {
		case '%', ';', '\\':
			return false
		case '/':
			if i+1 < len(p) && (p[i+1] == '/' || p[i+1] == '.') {
				return false // "//", or a segment starting with a dot
			}
		default:
			if c < 0x20 || c == 0x7f {
				return false
			}
		}
	}
	return true
}

// isUnreserved reports RFC 3986's unreserved characters.
func isUnreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	}
	return c - 'a' + 10
}

const upperHex = "0123456789ABCDEF"

// Canonicalize rewrites r's path to its canonical spelling, which the
// router and the reverse proxy then use, or answers 400 and returns false.
func Canonicalize(w http.ResponseWriter, r *http.Request) bool {
	esc := r.URL.EscapedPath() // the client's spelling, or Path as is
	canon, err := Canonical(esc)
	if err != nil {
		cloudagent.WriteError(w, http.StatusBadRequest, err.Error())
		return false
	}
	if canon == esc && r.URL.RawPath == "" {
		return true // the common case: nothing to change
	}
	path, err := url.PathUnescape(canon)
	if err != nil {
		cloudagent.WriteError(w, http.StatusBadRequest, ErrUnsafe.Error())
		return false
	}
	r.URL.Path = path
	r.URL.RawPath = ""
	if path != canon {
		r.URL.RawPath = canon
	}
	return true
}
