package cache

// The hand-written scanner ParseRequest used before jsonbody (commit
// 7a9d3c4), kept only as a benchmark baseline: the cache-hit path must
// not get slower than it was. It is not the reading caproxy uses (it
// allows invalid UTF-8, repeated keys and deep nesting).

import (
	"bytes"
	"fmt"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/caproxy/caproxy/cloudagent"
)

const oldMaxDepth = 10000

func oldParseRequest(body []byte) (cloudagent.AHTRequest, error) {
	var r cloudagent.AHTRequest
	p := oldParser{b: body}
	p.skipSpace()
	if p.i == len(body) {
		return r, ErrEmptyBody
	}
	if body[p.i] != '{' {
		if err := p.skipValue(0); err != nil {
			return r, err
		}
		if err := p.end(); err != nil {
			return r, err
		}
		return r, ErrNotObject
	}
	p.i++
	// A field of the wrong type is reported only if the body is valid
	// JSON, as encoding/json does: a syntax error says more.
	var typeErr, nameErr error
	var seen [fieldCampaignName + 1]bool
	p.skipSpace()
	if p.peek() == '}' {
		p.i++
	} else {
		for {
			if p.peek() != '"' {
				return r, p.syntaxError("a field name")
			}
			f, err := p.fieldName()
			if err != nil {
				return r, err
			}
			p.skipSpace()
			if p.peek() != ':' {
				return r, p.syntaxError("':' after a field name")
			}
			p.i++
			p.skipSpace()
			switch {
			case f == oldFieldCase:
				f = fieldOther
				if nameErr == nil {
					nameErr = ErrFieldCase
				}
			case f != fieldOther && seen[f]:
				if nameErr == nil {
					nameErr = ErrFieldRepeated
				}
			}
			if f != fieldOther {
				seen[f] = true
			}
			if f == fieldOther {
				if err := p.skipValue(1); err != nil {
					return r, err
				}
			} else {
				var s string
				switch p.peek() {
				case '"':
					if s, err = p.stringValue(); err != nil {
						return r, err
					}
				case 'n':
					if err := p.literal("null"); err != nil {
						return r, err
					}
				default:
					if err := p.skipValue(1); err != nil {
						return r, err
					}
					if typeErr == nil {
						typeErr = notStringErrors[f]
					}
				}
				switch f {
				case fieldUserName:
					r.UserName = s
				case fieldAgentID:
					r.AgentID = s
				case fieldCampaignName:
					r.CampaignName = s
				}
			}
			p.skipSpace()
			if c := p.peek(); c == ',' {
				p.i++
				p.skipSpace()
				continue
			} else if c == '}' {
				p.i++
				break
			}
			return r, p.syntaxError("',' or '}' after a field")
		}
	}
	if err := p.end(); err != nil {
		return r, err
	}
	if nameErr != nil {
		return r, nameErr
	}
	return r, typeErr
}

// oldParser scans one JSON text; i is the offset of the next unread byte.
type oldParser struct {
	b []byte
	i int
}

// peek returns the next byte, or 0 (never valid where peek is used) at the
// end.
func (p *oldParser) peek() byte {
	if p.i < len(p.b) {
		return p.b[p.i]
	}
	return 0
}

func (p *oldParser) skipSpace() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

// end checks that only whitespace follows.
func (p *oldParser) end() error {
	p.skipSpace()
	if p.i != len(p.b) {
		return p.syntaxError("end of input after the top-level value")
	}
	return nil
}

// syntaxError describes what was expected at the current offset.
func (p *oldParser) syntaxError(expected string) error {
	if p.i >= len(p.b) {
		return fmt.Errorf("%w: unexpected end of input, expected %s", ErrInvalidJSON, expected)
	}
	return fmt.Errorf("%w: invalid character %q at offset %d, expected %s", ErrInvalidJSON, p.b[p.i], p.i, expected)
}

// fieldName reads a quoted field name and says which field it is.
func (p *oldParser) fieldName() (field, error) {
	raw, plain, err := p.scanString()
	if err != nil {
		return fieldOther, err
	}
	if plain {
		return oldFieldOf(raw), nil
	}
	var buf [32]byte
	return oldFieldOf(oldAppendUnquoted(buf[:0], raw)), nil
}

// stringValue reads a quoted string and returns it decoded.
func (p *oldParser) stringValue() (string, error) {
	raw, plain, err := p.scanString()
	if err != nil {
		return "", err
	}
	if plain {
		return string(raw), nil
	}
	return string(oldAppendUnquoted(make([]byte, 0, len(raw)), raw)), nil
}

// oldSpecial marks the bytes that end the fast path of scanString.
var oldSpecial = func() (t [256]bool) {
	for c := range 0x20 {
		t[c] = true
	}
	for c := 0x80; c < 256; c++ {
		t[c] = true
	}
	t['"'], t['\\'] = true, true
	return t
}()

// scanString checks the string starting at p.i (a '"') and moves past it.
// It returns the bytes between the quotes, and plain if they are already
// the decoded value (no escapes, valid UTF-8).
func (p *oldParser) scanString() (raw []byte, plain bool, err error) {
	b := p.b
	start := p.i + 1
	j := start
	escaped, high := false, false
	for {
		for j < len(b) && !oldSpecial[b[j]] {
			j++
		}
		if j >= len(b) {
			p.i = j
			return nil, false, p.syntaxError("a closing quote")
		}
		switch c := b[j]; {
		case c == '"':
			p.i = j + 1
			raw = b[start:j]
			return raw, !escaped && (!high || utf8.Valid(raw)), nil
		case c == '\\':
			escaped = true
			if j+1 >= len(b) {
				p.i = len(b)
				return nil, false, p.syntaxError("an escape character")
			}
			switch b[j+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				j += 2
			case 'u':
				for k := j + 2; k < j+6; k++ {
					if k >= len(b) || !oldIsHex(b[k]) {
						p.i = k
						return nil, false, p.syntaxError(`four hex digits after \u`)
					}
				}
				j += 6
			default:
				p.i = j + 1
				return nil, false, p.syntaxError("a valid escape character")
			}
		case c < 0x20:
			p.i = j
			return nil, false, p.syntaxError("a string character, not a control character")
		default: // c >= 0x80: checked as UTF-8 at the end
			high = true
			j++
		}
	}
}

func oldIsHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// oldHex4 decodes four hex digits that scanString has checked.
func oldHex4(s []byte) rune {
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

// oldAppendUnquoted appends the decoded form of raw, the checked contents of
// a JSON string, exactly as encoding/json decodes it: a lone or invalid
// surrogate and each byte of invalid UTF-8 become U+FFFD.
func oldAppendUnquoted(dst, raw []byte) []byte {
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
				rr := oldHex4(raw[r:])
				r += 4
				if utf16.IsSurrogate(rr) {
					// A valid pair takes the next escape too; otherwise
					// this half alone becomes U+FFFD and the next escape,
					// if any, is decoded on its own.
					if r+6 <= len(raw) && raw[r] == '\\' && raw[r+1] == 'u' {
						if dec := utf16.DecodeRune(rr, oldHex4(raw[r+2:])); dec != utf8.RuneError {
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
		case c < utf8.RuneSelf:
			dst = append(dst, c)
			r++
		default:
			rr, size := utf8.DecodeRune(raw[r:])
			dst = utf8.AppendRune(dst, rr)
			r += size
		}
	}
	return dst
}

// literal reads the literal word (true, false or null) at p.i.
func (p *oldParser) literal(word string) error {
	for k := 0; k < len(word); k++ {
		if p.i >= len(p.b) || p.b[p.i] != word[k] {
			return p.syntaxError("the literal " + word)
		}
		p.i++
	}
	return nil
}

// number reads a JSON number at p.i.
func (p *oldParser) number() error {
	b := p.b
	if p.peek() == '-' {
		p.i++
	}
	switch c := p.peek(); {
	case c == '0':
		p.i++
	case '1' <= c && c <= '9':
		for p.i < len(b) && oldIsDigit(b[p.i]) {
			p.i++
		}
	default:
		return p.syntaxError("a digit")
	}
	if p.peek() == '.' {
		p.i++
		if !oldIsDigit(p.peek()) {
			return p.syntaxError("a digit after the decimal point")
		}
		for p.i < len(b) && oldIsDigit(b[p.i]) {
			p.i++
		}
	}
	if c := p.peek(); c == 'e' || c == 'E' {
		p.i++
		if c := p.peek(); c == '+' || c == '-' {
			p.i++
		}
		if !oldIsDigit(p.peek()) {
			return p.syntaxError("a digit in the exponent")
		}
		for p.i < len(b) && oldIsDigit(b[p.i]) {
			p.i++
		}
	}
	return nil
}

func oldIsDigit(c byte) bool { return '0' <= c && c <= '9' }

// skipValue checks and moves past one JSON value of any kind at p.i, which
// sits inside depth containers. It works without recursion, keeping a
// stack of the containers it is in, so hostile nesting costs no Go stack.
func (p *oldParser) skipValue(depth int) error {
	var small [64]bool
	inObject := small[:0] // per open container: object (true) or array
	for {
		// A value is expected at p.i.
		p.skipSpace()
		switch c := p.peek(); {
		case c == '{' || c == '[':
			if depth+len(inObject)+1 > oldMaxDepth {
				return p.syntaxError("nesting no deeper than 10000")
			}
			p.i++
			inObject = append(inObject, c == '{')
			p.skipSpace()
			if c == '{' {
				if p.peek() == '}' {
					p.i++
					inObject = inObject[:len(inObject)-1]
					break
				}
				if err := p.objectKey(); err != nil {
					return err
				}
				continue
			}
			if p.peek() == ']' {
				p.i++
				inObject = inObject[:len(inObject)-1]
				break
			}
			continue
		case c == '"':
			if _, _, err := p.scanString(); err != nil {
				return err
			}
		case c == 't':
			if err := p.literal("true"); err != nil {
				return err
			}
		case c == 'f':
			if err := p.literal("false"); err != nil {
				return err
			}
		case c == 'n':
			if err := p.literal("null"); err != nil {
				return err
			}
		case c == '-' || oldIsDigit(c):
			if err := p.number(); err != nil {
				return err
			}
		default:
			return p.syntaxError("a value")
		}

		// A value has ended: close containers until one continues.
		for {
			if len(inObject) == 0 {
				return nil
			}
			p.skipSpace()
			c := p.peek()
			if inObject[len(inObject)-1] {
				if c == ',' {
					p.i++
					p.skipSpace()
					if err := p.objectKey(); err != nil {
						return err
					}
					break
				}
				if c != '}' {
					return p.syntaxError("',' or '}' in an object")
				}
			} else {
				if c == ',' {
					p.i++
					break
				}
				if c != ']' {
					return p.syntaxError("',' or ']' in an array")
				}
			}
			p.i++
			inObject = inObject[:len(inObject)-1]
		}
	}
}

// objectKey reads a field name and the colon after it.
func (p *oldParser) objectKey() error {
	if p.peek() != '"' {
		return p.syntaxError("a field name")
	}
	if _, _, err := p.scanString(); err != nil {
		return err
	}
	p.skipSpace()
	if p.peek() != ':' {
		return p.syntaxError("':' after a field name")
	}
	p.i++
	return nil
}

// oldFieldCase is oldFieldOf's answer for one of the three names in
// another case.
const oldFieldCase = fieldCampaignName + 1

func oldFieldOf(name []byte) field {
	switch string(name) {
	case "userName":
		return fieldUserName
	case "agentId":
		return fieldAgentID
	case "campaignName":
		return fieldCampaignName
	}
	for _, n := range fieldNames {
		if bytes.EqualFold(name, n) {
			return oldFieldCase
		}
	}
	return fieldOther
}
