package jsonbody

import (
	"bytes"
	"unicode/utf8"
)

// AppendCanonical appends d's canonical form to dst and returns it: the
// value re-encoded with object keys sorted (bytewise, as decoded) at
// every level, insignificant space dropped, string escapes decoded and
// strings re-encoded as encoding/json encodes them without HTML escaping
// (so "\u0061" is "a", and only '"', '\\', control characters and
// U+2028/U+2029 are escaped), and numbers kept as written. Two bodies
// that any JSON reader reads alike have one canonical form, which is what
// caproxy keys its cache on and forwards. The zero Doc appends nothing.
func (d Doc) AppendCanonical(dst []byte) []byte {
	if d.v.Kind() == KindNone {
		return dst
	}
	var c canonical
	dst, _ = c.value(dst, d.v.raw, 0)
	return dst
}

// canonical holds the scratch of AppendCanonical: the members of the
// objects being written, outer objects' below inner ones'.
type canonical struct {
	members spanStack
}

// value appends the canonical form of the checked value at b[i:] and
// returns the offset just past it. Parse has bounded the nesting, so the
// recursion is at most MaxDepth deep.
func (c *canonical) value(dst, b []byte, i int) ([]byte, int) {
	switch b[i] {
	case '"':
		end := skipString(b, i)
		s := b[i+1 : end-1]
		if hasBackslash(s) {
			var buf [128]byte
			s = appendUnquoted(buf[:0], s)
		}
		return appendQuoted(dst, s), end
	case '[':
		dst = append(dst, '[')
		i = skipSpace(b, i+1)
		if b[i] == ']' {
			return append(dst, ']'), i + 1
		}
		for {
			dst, i = c.value(dst, b, i)
			i = skipSpace(b, i)
			if b[i] == ']' {
				return append(dst, ']'), i + 1
			}
			dst = append(dst, ',')
			i = skipSpace(b, i+1)
		}
	case '{':
		first := c.members.n
		i = skipSpace(b, i+1)
		for b[i] != '}' {
			end := skipString(b, i)
			m := span{start: int32(i + 1), end: int32(end - 1), escaped: hasBackslash(b[i+1 : end-1])}
			i = skipSpace(b, end)
			i = skipSpace(b, i+1) // past ':'
			m.val = int32(i)
			c.members.push(m)
			i = skipSpace(b, skipValue(b, i))
			if b[i] == ',' {
				i = skipSpace(b, i+1)
			}
		}
		c.members.sortFrom(first, func(x, y span) int {
			if !x.escaped && !y.escaped {
				return bytes.Compare(b[x.start:x.end], b[y.start:y.end])
			}
			var bx, by [64]byte
			return bytes.Compare(x.name(b, bx[:]), y.name(b, by[:]))
		})
		dst = append(dst, '{')
		var buf [64]byte
		for k := first; k < c.members.n; k++ {
			if k > first {
				dst = append(dst, ',')
			}
			m := c.members.at(k)
			dst = appendQuoted(dst, m.name(b, buf[:]))
			dst = append(dst, ':')
			dst, _ = c.value(dst, b, int(m.val))
		}
		c.members.n = first
		return append(dst, '}'), i + 1
	}
	// A number or literal, kept as written.
	end := i
	for end < len(b) && !isEnd(b[end]) {
		end++
	}
	return append(dst, b[i:end]...), end
}

// appendQuoted appends the decoded (valid UTF-8) string s quoted as
// encoding/json quotes it with HTML escaping off.
func appendQuoted(dst, s []byte) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	start, i := 0, 0
	for i < len(s) {
		b := s[i]
		if b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '\\', '"':
				dst = append(dst, '\\', b)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hex[b>>4], hex[b&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRune(s[i:])
		if r == '\u2028' || r == '\u2029' {
			// As encoding/json: a JavaScript reader ends a line there.
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hex[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:i]...)
	return append(dst, '"')
}
