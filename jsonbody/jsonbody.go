// Package jsonbody is caproxy's one reader of request bodies: it reads a
// body off the wire without trusting its declared length (Read) and parses
// it as exactly one strict JSON value (Parse), the same way on every path,
// so that the account, the cache key and what is forwarded all come from a
// single reading that no other JSON reader could take differently.
//
// Strict means: invalid UTF-8, a key repeated in any object (also when the
// two are equal only when case is folded, as encoding/json folds it, while
// Java's Jackson does not), nesting deeper than MaxDepth and anything after
// the value are refused. Each refusal is an exported error whose text is
// meant for the client.
package jsonbody

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// MaxDepth is the deepest nesting of arrays and objects Parse accepts; the
// top-level container is at depth 1. CloudAgent's request bodies are flat
// objects, so 64 is far beyond any real client and keeps a hostile body's
// cost to a small fixed stack.
const MaxDepth = 64

// maxBody is the longest body Parse reads: its offsets are int32.
const maxBody = 1<<31 - 1

// Errors of Parse. Their texts are meant for the client; a syntax error
// wraps ErrNotJSON with where and why.
var (
	ErrEmpty        = errors.New("request body is empty")
	ErrNotJSON      = errors.New("request body is not valid JSON")
	ErrNotUTF8      = errors.New("request body is not valid UTF-8")
	ErrDuplicateKey = errors.New("request body repeats a key (or spells one in two cases)")
	ErrTooDeep      = fmt.Errorf("request body nests arrays and objects deeper than %d levels", MaxDepth)
	// ErrTooLarge refuses a body over 2 GiB, which Parse's offsets
	// (32 bits, to keep its scratch small) cannot address; Read's limit
	// keeps real bodies far below.
	ErrTooLarge = errors.New("request body is too large")
	// ErrNotString is wrapped by Doc.String, with the field's name, for a
	// field that is neither a string nor null.
	ErrNotString = errors.New("request body field must be a string")
)

// Kind is the kind of a JSON value.
type Kind uint8

// The kinds of JSON values. KindNone is the kind of no value (the zero
// Value or Doc).
const (
	KindNone Kind = iota
	KindNull
	KindBool
	KindNumber
	KindString
	KindArray
	KindObject
)

func kindOf(c byte) Kind {
	switch c {
	case 'n':
		return KindNull
	case 't', 'f':
		return KindBool
	case '"':
		return KindString
	case '[':
		return KindArray
	case '{':
		return KindObject
	}
	return KindNumber
}

// Value is one JSON value inside a parsed body, as Parse has checked it.
// It refers to the body's bytes. The zero Value is no value (KindNone).
type Value struct {
	raw []byte
}

// Kind says what kind of value v is.
func (v Value) Kind() Kind {
	if len(v.raw) == 0 {
		return KindNone
	}
	return kindOf(v.raw[0])
}

// Raw returns v's JSON text as it was written (no surrounding space). It
// is part of the body: do not modify it.
func (v Value) Raw() []byte { return v.raw }

// Text returns the decoded string if v is a JSON string. Escapes are
// decoded as encoding/json decodes them (a lone surrogate escape becomes
// U+FFFD).
func (v Value) Text() (s string, ok bool) {
	if v.Kind() != KindString {
		return "", false
	}
	raw := v.raw[1 : len(v.raw)-1]
	if !hasBackslash(raw) {
		return string(raw), true
	}
	return string(appendUnquoted(make([]byte, 0, len(raw)), raw)), true
}

// AppendText appends the decoded string to dst if v is a JSON string,
// as Text decodes it, and says whether it is; otherwise dst is returned
// as is. It lets a reader of several fields make one allocation for all.
func (v Value) AppendText(dst []byte) ([]byte, bool) {
	if v.Kind() != KindString {
		return dst, false
	}
	raw := v.raw[1 : len(v.raw)-1]
	if !hasBackslash(raw) {
		return append(dst, raw...), true
	}
	return appendUnquoted(dst, raw), true
}

// Doc is one body Parse has accepted. It refers to the body's bytes, which
// must not change while the Doc is in use.
//
// The zero Doc is the empty body (what Parse returns with ErrEmpty): it is
// not an object, has no fields, and its canonical form is empty, so a
// route that allows an empty body can use it as is.
type Doc struct {
	v Value
}

// Parse reads body as exactly one JSON value, surrounded by optional
// space, and refuses it unless it is strict JSON (see the package doc).
// The errors are ErrEmpty (nothing but space), ErrTooLarge (over 2 GiB),
// a syntax error wrapping ErrNotJSON, ErrNotUTF8, ErrTooDeep, and else
// ErrDuplicateKey: a syntax error is reported before a repeated key
// found earlier, as it says more. On error the Doc is zero.
//
// Parse allocates nothing for a body whose keys have no escapes and whose
// objects together have at most 16 keys open at a time (the cache-hit
// path of AHT runs it); more cost an allocation now and then.
func Parse(body []byte) (Doc, error) {
	return ParseFunc(body, nil)
}

// ParseFunc is Parse, and if the body is an object, it also calls member,
// unless nil, for each of the object's top-level members in order: name
// decoded, v its value. name is valid only during the call. member is
// called before a later syntax error or a repeated key is found, so its
// caller uses what it saw only if the error is nil or ErrDuplicateKey.
// This lets one pass serve a reader of a few fields (cache.ParseRequest).
func ParseFunc(body []byte, member func(name []byte, v Value)) (Doc, error) {
	var keys [flatMax]keySpan
	n, start, end, ok := scanFlat(body, &keys, member)
	if !ok {
		// The flat path has shown member its first n members, which
		// the general scanner reads alike: it skips them.
		return parseFull(body, member, n)
	}
	if flatRepeated(body, keys[:n]) {
		return Doc{}, ErrDuplicateKey
	}
	return Doc{v: Value{raw: body[start:end]}}, nil
}

// parseFull is ParseFunc for any body, member seeing all but the first
// skip top-level members: the general scanner, whose state is larger,
// kept out of the flat path's frame.
//
//go:noinline
func parseFull(body []byte, member func(name []byte, v Value), skip int) (Doc, error) {
	s := scanner{b: body, skip: skip}
	v, err := s.parse(member)
	if err != nil {
		return Doc{}, err
	}
	return Doc{v: v}, nil
}

// IsObject says whether d is a JSON object.
func (d Doc) IsObject() bool { return d.v.Kind() == KindObject }

// Value returns the whole body's value.
func (d Doc) Value() Value { return d.v }

// Field returns the value of d's top-level field named exactly name (case
// included), and whether there is one. Parse has refused repeated names,
// so there is at most one.
func (d Doc) Field(name string) (Value, bool) {
	if !d.IsObject() {
		return Value{}, false
	}
	b := d.v.raw
	i := 1
	for {
		i = skipSpace(b, i)
		if b[i] == '}' {
			return Value{}, false
		}
		kEnd := skipString(b, i)
		key := b[i+1 : kEnd-1]
		i = skipSpace(b, kEnd)
		i = skipSpace(b, i+1) // past ':'
		vEnd := skipValue(b, i)
		if keyEquals(key, name) {
			return Value{raw: b[i:vEnd]}, true
		}
		i = skipSpace(b, vEnd)
		if b[i] == ',' {
			i++
		}
	}
}

// String returns the top-level field named exactly name (case included)
// as a string. A missing field and JSON null are absent (ok false, err
// nil); any other non-string value is an error wrapping ErrNotString.
func (d Doc) String(name string) (v string, ok bool, err error) {
	f, _ := d.Field(name)
	switch f.Kind() {
	case KindString:
		s, _ := f.Text()
		return s, true, nil
	case KindNone, KindNull:
		return "", false, nil
	}
	return "", false, fmt.Errorf("%w: %s", ErrNotString, name)
}

// keyEquals says whether the raw (checked) key decodes to name.
func keyEquals(raw []byte, name string) bool {
	if !hasBackslash(raw) {
		return string(raw) == name
	}
	var buf [64]byte
	return string(appendUnquoted(buf[:0], raw)) == name
}

func hasBackslash(b []byte) bool {
	// Eight bytes at a time: a byte of x is 0 exactly where the
	// subtraction first borrows from it (see stopBits).
	const ones = 0x0101010101010101
	for len(b) >= 8 {
		x := binary.LittleEndian.Uint64(b) ^ (ones * '\\')
		if (x-ones)&^x&(ones*0x80) != 0 {
			return true
		}
		b = b[8:]
	}
	for _, c := range b {
		if c == '\\' {
			return true
		}
	}
	return false
}
