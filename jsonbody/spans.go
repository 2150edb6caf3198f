package jsonbody

import "slices"

// span locates one object member in the body: its name's raw contents
// b[start:end] (between the quotes), whether the name has escapes, and
// where its value starts. Offsets, not slices, so that the scratch that
// holds spans has no pointers and can stay on the goroutine's stack.
type span struct {
	start, end int32
	val        int32
	escaped    bool
	ascii      bool // no escapes and no byte over 0x7f: folding keeps its length
}

// spanStack holds the members of the objects being read, outer objects'
// below inner ones'. The first len(fixed) live in the struct itself (a
// flat body allocates nothing); more spill to the heap.
type spanStack struct {
	n     int
	fixed [16]span
	more  []span
}

func (st *spanStack) push(x span) {
	if st.n < len(st.fixed) {
		st.fixed[st.n] = x
	} else {
		st.more = append(st.more[:st.n-len(st.fixed)], x)
	}
	st.n++
}

func (st *spanStack) at(k int) span {
	if k < len(st.fixed) {
		return st.fixed[k]
	}
	return st.more[k-len(st.fixed)]
}

// sortFrom sorts the spans from first on with cmp.
func (st *spanStack) sortFrom(first int, cmp func(x, y span) int) {
	if st.n <= len(st.fixed) {
		slices.SortFunc(st.fixed[first:st.n], cmp)
		return
	}
	seg := make([]span, 0, st.n-first)
	for k := first; k < st.n; k++ {
		seg = append(seg, st.at(k))
	}
	slices.SortFunc(seg, cmp)
	for k, x := range seg {
		if j := first + k; j < len(st.fixed) {
			st.fixed[j] = x
		} else {
			st.more[j-len(st.fixed)] = x
		}
	}
}

// name returns x's name decoded, in buf if it has escapes.
func (x span) name(b, buf []byte) []byte {
	raw := b[x.start:x.end]
	if !x.escaped {
		return raw
	}
	return appendUnquoted(buf[:0], raw)
}
