package jsonbody

import (
	"bytes"
	"fmt"
	"slices"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// scanner checks one JSON text; i is the offset of the next unread byte.
// It works without recursion and keeps its state in fixed arrays, so a
// hostile body costs neither Go stack nor memory per level, and a flat
// body allocates nothing.
type scanner struct {
	b []byte
	i int

	depth    int
	inObject uint64          // bit d: the container at depth d+1 is an object (MaxDepth is 64)
	keyStart [MaxDepth]int32 // per open object: its first key in keys

	// keys holds the names of the open objects' members, for the
	// repeated-key check when each object closes.
	keys spanStack

	name     []byte // the current top-level member's name, decoded
	valStart int    // and where its value starts
	dup      bool   // a repeated key was seen
	skip     int    // top-level members not to show member: the flat path has
	base     int    // the depth at which value returns: 0 but in skipNested
}

// parse checks the whole body and returns its value.
// member, unless nil, is called for each member of a top-level object:
// a parameter, not a field, so that the closure it usually is stays on
// the caller's stack.
func (s *scanner) parse(member func(name []byte, v Value)) (Value, error) {
	if len(s.b) > maxBody {
		return Value{}, ErrTooLarge
	}
	s.skipSpace()
	if s.i == len(s.b) {
		return Value{}, ErrEmpty
	}
	start := s.i
	if err := s.value(member); err != nil {
		return Value{}, err
	}
	end := s.i
	s.skipSpace()
	if s.i != len(s.b) {
		return Value{}, s.syntaxError("end of input after the top-level value")
	}
	if s.dup {
		return Value{}, ErrDuplicateKey
	}
	return Value{raw: s.b[start:end]}, nil
}

// peek returns the next byte, or 0 (never valid where peek is used) at
// the end.
func (s *scanner) peek() byte {
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

func (s *scanner) skipSpace() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// syntaxError describes what was expected at the current offset.
func (s *scanner) syntaxError(expected string) error {
	if s.i >= len(s.b) {
		return fmt.Errorf("%w: unexpected end of input, expected %s", ErrNotJSON, expected)
	}
	return fmt.Errorf("%w: invalid character %q at offset %d, expected %s", ErrNotJSON, s.b[s.i], s.i, expected)
}

// value checks one JSON value at s.i and moves past it (its depth back to
// s.base).
func (s *scanner) value(member func(name []byte, v Value)) error {
	for {
		// A value is expected at s.i.
		s.skipSpace()
		switch c := s.peek(); {
		case c == '{' || c == '[':
			if s.depth == MaxDepth {
				return ErrTooDeep
			}
			s.i++
			if c == '{' {
				s.inObject |= 1 << s.depth
			} else {
				s.inObject &^= 1 << s.depth
			}
			s.keyStart[s.depth] = int32(s.keys.n)
			s.depth++
			s.skipSpace()
			if c == '{' {
				if s.peek() == '}' {
					s.i++
					s.depth--
					break
				}
				if err := s.objectKey(member != nil); err != nil {
					return err
				}
				continue
			}
			if s.peek() == ']' {
				s.i++
				s.depth--
				break
			}
			continue
		case c == '"':
			if _, _, _, err := s.scanString(); err != nil {
				return err
			}
		case c == 't':
			if err := s.literal("true"); err != nil {
				return err
			}
		case c == 'f':
			if err := s.literal("false"); err != nil {
				return err
			}
		case c == 'n':
			if err := s.literal("null"); err != nil {
				return err
			}
		case c == '-' || isDigit(c):
			if err := s.number(); err != nil {
				return err
			}
		default:
			return s.syntaxError("a value")
		}

		// A value has ended: close containers until one continues.
		for {
			if s.depth == s.base {
				return nil
			}
			top := s.depth - 1
			if s.depth == 1 && s.inObject&1 != 0 && member != nil {
				if s.skip > 0 {
					s.skip--
				} else {
					member(s.name, Value{raw: s.b[s.valStart:s.i]})
				}
			}
			s.skipSpace()
			c := s.peek()
			if s.inObject&(1<<top) != 0 {
				if c == ',' {
					s.i++
					s.skipSpace()
					if err := s.objectKey(member != nil); err != nil {
						return err
					}
					break
				}
				if c != '}' {
					return s.syntaxError("',' or '}' after a field")
				}
				k := int(s.keyStart[top])
				if !s.dup && s.repeated(k) {
					s.dup = true
				}
				s.keys.n = k
			} else {
				if c == ',' {
					s.i++
					break
				}
				if c != ']' {
					return s.syntaxError("',' or ']' after an array element")
				}
			}
			s.i++
			s.depth--
		}
	}
}

// objectKey reads a member's name and the colon after it; decode says
// whether a top-level name is wanted decoded.
func (s *scanner) objectKey(decode bool) error {
	if s.peek() != '"' {
		return s.syntaxError("a field name")
	}
	start := s.i + 1
	raw, plain, ascii, err := s.scanString()
	if err != nil {
		return err
	}
	s.keys.push(span{start: int32(start), end: int32(s.i - 1), escaped: !plain, ascii: ascii})
	if !plain && s.depth == 1 && decode {
		raw = appendUnquoted(nil, raw)
	}
	s.skipSpace()
	if s.peek() != ':' {
		return s.syntaxError("':' after a field name")
	}
	s.i++
	s.skipSpace()
	if s.depth == 1 {
		s.name, s.valStart = raw, s.i
	}
	return nil
}

// repeated says whether two of the keys from first on are equal when
// case is folded as encoding/json and strings.EqualFold fold it (Unicode
// simple folding).
func (s *scanner) repeated(first int) bool {
	n := s.keys.n - first
	if n < 2 {
		return false
	}
	if n <= len(s.keys.fixed) && s.keys.n <= len(s.keys.fixed) {
		// All in the fixed array: index it directly.
		keys := s.keys.fixed[first:s.keys.n]
		for i := 1; i < len(keys); i++ {
			kx := keys[i]
			for _, ky := range keys[:i] {
				if kx.ascii && ky.ascii {
					// The common case: ASCII folding keeps the length.
					if kx.end-kx.start == ky.end-ky.start && bytes.EqualFold(s.b[kx.start:kx.end], s.b[ky.start:ky.end]) {
						return true
					}
					continue
				}
				if s.equalFold(kx, ky) {
					return true
				}
			}
		}
		return false
	}
	if n <= 32 {
		for i := first + 1; i < s.keys.n; i++ {
			kx := s.keys.at(i)
			for j := first; j < i; j++ {
				ky := s.keys.at(j)
				if kx.ascii && ky.ascii {
					// The common case: ASCII folding keeps the length.
					x, y := s.b[kx.start:kx.end], s.b[ky.start:ky.end]
					if len(x) == len(y) && bytes.EqualFold(x, y) {
						return true
					}
					continue
				}
				if s.equalFold(kx, ky) {
					return true
				}
			}
		}
		return false
	}
	// Many keys: compare folded forms sorted, not every pair.
	folded := make([][]byte, n)
	for i := range folded {
		folded[i] = appendFolded(nil, s.keys.at(first+i).name(s.b, nil))
	}
	slices.SortFunc(folded, bytes.Compare)
	for i := 1; i < len(folded); i++ {
		if bytes.Equal(folded[i-1], folded[i]) {
			return true
		}
	}
	return false
}

// equalFold says whether two keys, one with escapes or non-ASCII
// bytes, are equal when case is folded.
func (s *scanner) equalFold(x, y span) bool {
	var bx, by [64]byte
	return bytes.EqualFold(x.name(s.b, bx[:]), y.name(s.b, by[:]))
}

// appendFolded appends k with every rune replaced by the smallest rune of
// its simple folding orbit, so two keys are EqualFold exactly when their
// folded forms are equal.
func appendFolded(dst, k []byte) []byte {
	for i := 0; i < len(k); {
		r, n := utf8.DecodeRune(k[i:])
		for {
			r2 := unicode.SimpleFold(r)
			if r2 <= r {
				r = r2
				break
			}
			r = r2
		}
		dst = utf8.AppendRune(dst, r)
		i += n
	}
	return dst
}

// special marks the bytes that end the fast path of scanString.
var special = func() (t [256]bool) {
	for c := range 0x20 {
		t[c] = true
	}
	for c := 0x80; c < 256; c++ {
		t[c] = true
	}
	t['"'], t['\\'] = true, true
	return t
}()

// scanString checks the string starting at s.i (a '"') and moves past
// it. It returns the bytes between the quotes, and plain if they are
// already the decoded value (no escapes). Invalid UTF-8 is ErrNotUTF8.
func (s *scanner) scanString() (raw []byte, plain, ascii bool, err error) {
	b := s.b
	start := s.i + 1
	j := start
	escaped, high := false, false
	for {
		for j < len(b) && !special[b[j]] {
			j++
		}
		if j >= len(b) {
			s.i = j
			return nil, false, false, s.syntaxError("a closing quote")
		}
		switch c := b[j]; {
		case c == '"':
			s.i = j + 1
			raw = b[start:j]
			if high && !utf8.Valid(raw) {
				return nil, false, false, ErrNotUTF8
			}
			return raw, !escaped, !escaped && !high, nil
		case c == '\\':
			escaped = true
			if j+1 >= len(b) {
				s.i = len(b)
				return nil, false, false, s.syntaxError("an escape character")
			}
			switch b[j+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				j += 2
			case 'u':
				for k := j + 2; k < j+6; k++ {
					if k >= len(b) || !isHex(b[k]) {
						s.i = k
						return nil, false, false, s.syntaxError(`four hex digits after \u`)
					}
				}
				j += 6
			default:
				s.i = j + 1
				return nil, false, false, s.syntaxError("a valid escape character")
			}
		case c < 0x20:
			s.i = j
			return nil, false, false, s.syntaxError("a string character, not a control character")
		default: // c >= 0x80: checked as UTF-8 at the end
			high = true
			j++
		}
	}
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// literal reads the literal word (true, false or null) at s.i.
func (s *scanner) literal(word string) error {
	for k := 0; k < len(word); k++ {
		if s.i >= len(s.b) || s.b[s.i] != word[k] {
			return s.syntaxError("the literal " + word)
		}
		s.i++
	}
	return nil
}

// number reads a JSON number at s.i.
func (s *scanner) number() error {
	b := s.b
	if s.peek() == '-' {
		s.i++
	}
	switch c := s.peek(); {
	case c == '0':
		s.i++
	case '1' <= c && c <= '9':
		for s.i < len(b) && isDigit(b[s.i]) {
			s.i++
		}
	default:
		return s.syntaxError("a digit")
	}
	if s.peek() == '.' {
		s.i++
		if !isDigit(s.peek()) {
			return s.syntaxError("a digit after the decimal point")
		}
		for s.i < len(b) && isDigit(b[s.i]) {
			s.i++
		}
	}
	if c := s.peek(); c == 'e' || c == 'E' {
		s.i++
		if c := s.peek(); c == '+' || c == '-' {
			s.i++
		}
		if !isDigit(s.peek()) {
			return s.syntaxError("a digit in the exponent")
		}
		for s.i < len(b) && isDigit(b[s.i]) {
			s.i++
		}
	}
	return nil
}

// hex4 decodes four hex digits that scanString has checked.
func hex4(s []byte) rune {
	var r rune
	for _, c := range s[:4] {
		switch {
		case c <= '9':
			c -= '0'
		case c >= 'a':
			c -= 'a' - 10
		default:
			c -= 'A' - 10
		}
		r = r<<4 | rune(c)
	}
	return r
}

// appendUnquoted appends the decoded form of raw, the checked contents of
// a JSON string, exactly as encoding/json decodes it: a lone or invalid
// surrogate escape becomes U+FFFD.
func appendUnquoted(dst, raw []byte) []byte {
	for r := 0; r < len(raw); {
		c := raw[r]
		switch {
		case c == '\\':
			e := raw[r+1]
			r += 2
			switch e {
			case 'b':
				dst = append(dst, '\b')
			case 'f':
				dst = append(dst, '\f')
			case 'n':
				dst = append(dst, '\n')
			case 'r':
				dst = append(dst, '\r')
			case 't':
				dst = append(dst, '\t')
			case 'u':
				rr := hex4(raw[r:])
				r += 4
				if utf16.IsSurrogate(rr) {
					// A valid pair takes the next escape too; otherwise
					// this half alone becomes U+FFFD and the next escape,
					// if any, is decoded on its own.
					if r+6 <= len(raw) && raw[r] == '\\' && raw[r+1] == 'u' {
						if dec := utf16.DecodeRune(rr, hex4(raw[r+2:])); dec != utf8.RuneError {
							dst = utf8.AppendRune(dst, dec)
							r += 6
							break
						}
					}
					rr = utf8.RuneError
				}
				dst = utf8.AppendRune(dst, rr)
			default: // '"', '\\', '/'
				dst = append(dst, e)
			}
		default:
			dst = append(dst, c)
			r++
		}
	}
	return dst
}

// The skip functions move over a body Parse has checked, trusting it.

func skipSpace(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// skipString returns the offset just past the string starting at b[i].
func skipString(b []byte, i int) int {
	for i++; ; i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
}

// skipValue returns the offset just past the value starting at b[i].
func skipValue(b []byte, i int) int {
	depth := 0
	for {
		switch b[i] {
		case '"':
			i = skipString(b, i)
		case '{', '[':
			depth++
			i++
			continue
		case '}', ']':
			depth--
			i++
		default:
			if depth > 0 { // space, ',', ':' or part of a scalar
				i++
				continue
			}
			for i < len(b) && !isEnd(b[i]) {
				i++
			}
			return i
		}
		if depth == 0 {
			return i
		}
	}
}

// isEnd says whether c ends a number or literal.
func isEnd(c byte) bool {
	switch c {
	case ',', '}', ']', ' ', '\t', '\n', '\r':
		return true
	}
	return false
}
