package jsonbody

import (
	"encoding/binary"
	"math/bits"
	"unicode/utf8"
)

// The flat path: most request bodies (AHT's on the cache-hit path above
// all) are one object of a few members whose names are ASCII without
// escapes and whose values are mostly strings, numbers or literals.
// scanFlat checks such a body in one tight pass, with no per-level state,
// and compares its few names pairwise in place; an array or object value
// is left to the general scanner, for that value only. Anything else (an
// escape, a non-ASCII name, more than flatMax members, any error) makes it
// give up without a word, and the general scanner reads the body from the
// start, so errors and their texts come from one place only; it only
// skips calling ParseFunc's member for the members already shown.

// flatMax is how many members the flat path takes.
const flatMax = 16

// keySpan locates a member's name: b[k0:k1], between the quotes.
type keySpan struct{ k0, k1 int32 }

// scanFlat reads b if it is a flat object as above, noting its names in
// keys, and returns the number of members and where the object starts and
// ends; ok is false if b is anything else. member, unless nil, is called
// for each member as soon as its value is read, before the rest is
// checked, as ParseFunc allows: when the flat path gives up, n says how
// many members it has shown.
func scanFlat(b []byte, keys *[flatMax]keySpan, member func(name []byte, v Value)) (n, start, end int, ok bool) {
	if len(b) > maxBody {
		return n, 0, 0, false
	}
	i := skipSpaceFast(b, 0)
	if i >= len(b) || b[i] != '{' {
		return n, 0, 0, false
	}
	start = i
	i = skipSpaceFast(b, i+1)
	if i < len(b) && b[i] == '}' {
		i++
		end = i
		return 0, start, end, skipSpaceFast(b, i) == len(b)
	}
	for {
		// A name: ASCII, no escapes, no control characters.
		if i >= len(b) || b[i] != '"' || n == flatMax {
			return n, 0, 0, false
		}
		i++
		k0 := i
		i = plainEnd(b, i)
		if i >= len(b) || b[i] != '"' {
			return n, 0, 0, false
		}
		k1 := i
		i = skipSpaceFast(b, i+1)
		if i >= len(b) || b[i] != ':' {
			return n, 0, 0, false
		}
		i = skipSpaceFast(b, i+1)
		if i >= len(b) {
			return n, 0, 0, false
		}
		v0 := i
		switch c := b[i]; {
		case c == '"':
			// A string without escapes; non-ASCII must be UTF-8.
			i++
			high := false
			for {
				i = plainEnd(b, i)
				if i >= len(b) || b[i] < 0x80 {
					break
				}
				high = true
				i++
			}
			if i >= len(b) || b[i] != '"' {
				return n, 0, 0, false
			}
			if high && !utf8.Valid(b[v0+1:i]) {
				return n, 0, 0, false
			}
			i++
		case c == '-' || isDigit(c):
			if i, ok = scanNumber(b, i); !ok {
				return n, 0, 0, false
			}
		case c == 't':
			if i, ok = scanWord(b, i, "true"); !ok {
				return n, 0, 0, false
			}
		case c == 'f':
			if i, ok = scanWord(b, i, "false"); !ok {
				return n, 0, 0, false
			}
		case c == 'n':
			if i, ok = scanWord(b, i, "null"); !ok {
				return n, 0, 0, false
			}
		case c == '[' || c == '{':
			if i, ok = skipNested(b, i); !ok {
				return n, 0, 0, false
			}
		default: // not JSON
			return n, 0, 0, false
		}
		keys[n] = keySpan{int32(k0), int32(k1)}
		n++
		if member != nil {
			member(b[k0:k1], Value{raw: b[v0:i]})
		}
		i = skipSpaceFast(b, i)
		if i >= len(b) {
			return n, 0, 0, false
		}
		if b[i] == ',' {
			i = skipSpaceFast(b, i+1)
			continue
		}
		if b[i] != '}' {
			return n, 0, 0, false
		}
		i++
		end = i
		return n, start, end, skipSpaceFast(b, i) == len(b)
	}
}

// skipNested reads the array or object at b[i], a member's value, with
// the general scanner, and returns the offset just past it. ok is false
// if the value is refused for any reason (a repeated key included): the
// general scanner, reading the body again from the start, says why.
//
//go:noinline
func skipNested(b []byte, i int) (int, bool) {
	// Depth 1 is the flat object's: nesting is counted as in a full read.
	s := scanner{b: b, i: i, depth: 1, base: 1}
	if err := s.value(nil); err != nil || s.dup {
		return i, false
	}
	return s.i, true
}

// flatRepeated says whether two of the names in keys are equal when ASCII
// case is folded; all are ASCII, so that is encoding/json's folding too.
func flatRepeated(b []byte, keys []keySpan) bool {
	for x := 1; x < len(keys); x++ {
		kx := b[keys[x].k0:keys[x].k1]
		for _, y := range keys[:x] {
			ky := b[y.k0:y.k1]
			if len(kx) == len(ky) && equalFoldASCII(kx, ky) {
				return true
			}
		}
	}
	return false
}

// equalFoldASCII compares two ASCII strings of the same length, case
// folded.
func equalFoldASCII(x, y []byte) bool {
	y = y[:len(x)]
	for i, c := range x {
		d := y[i]
		if c == d {
			continue
		}
		if c|0x20 != d|0x20 || c|0x20 < 'a' || c|0x20 > 'z' {
			return false
		}
	}
	return true
}

// plainASCII marks the bytes a string holds as they are: printable ASCII
// but the quote and the backslash.
var plainASCII = func() (t [256]bool) {
	for c := 0x20; c < 0x80; c++ {
		t[c] = true
	}
	t['"'], t['\\'] = false, false
	return t
}()

// skipSpaceFast is skipSpace, inlined where no space follows, as in
// the bodies most clients send.
func skipSpaceFast(b []byte, i int) int {
	if i < len(b) && b[i] > ' ' {
		return i
	}
	return skipSpace(b, i)
}

// plainEnd returns the offset of the first byte from b[i] on that is not
// plainASCII, or len(b). It looks at eight bytes at a time.
func plainEnd(b []byte, i int) int {
	for ; i+8 <= len(b); i += 8 {
		if m := stopBits(binary.LittleEndian.Uint64(b[i:])); m != 0 {
			return i + bits.TrailingZeros64(m)/8
		}
	}
	for i < len(b) && plainASCII[b[i]] {
		i++
	}
	return i
}

// stopBits sets the high bit of each byte of x (little-endian) that is
// not plainASCII: a quote, a backslash, under 0x20 or over 0x7f. Bytes
// above the lowest such byte may be marked wrongly (a borrow carries
// up), so only the lowest mark is exact, which is all plainEnd reads.
func stopBits(x uint64) uint64 {
	const ones = 0x0101010101010101
	q := x ^ (ones * '"')
	bs := x ^ (ones * '\\')
	// A byte of q or bs is 0, or of x under 0x20, exactly where the
	// subtraction first borrows from it, setting its high bit.
	return ((q - ones) | (bs - ones) | (x - ones*0x20) | x) & (ones * 0x80)
}

// scanWord reads the literal word at b[i].
func scanWord(b []byte, i int, word string) (int, bool) {
	if len(b)-i < len(word) || string(b[i:i+len(word)]) != word {
		return i, false
	}
	return i + len(word), true
}

// scanNumber reads a JSON number at b[i].
func scanNumber(b []byte, i int) (int, bool) {
	if b[i] == '-' {
		i++
	}
	switch {
	case i >= len(b):
		return i, false
	case b[i] == '0':
		i++
	case '1' <= b[i] && b[i] <= '9':
		i = skipDigits(b, i)
	default:
		return i, false
	}
	if i < len(b) && b[i] == '.' {
		i++
		if i >= len(b) || !isDigit(b[i]) {
			return i, false
		}
		i = skipDigits(b, i)
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i >= len(b) || !isDigit(b[i]) {
			return i, false
		}
		i = skipDigits(b, i)
	}
	return i, true
}

func skipDigits(b []byte, i int) int {
	for i < len(b) && isDigit(b[i]) {
		i++
	}
	return i
}
