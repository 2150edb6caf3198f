package config

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// expansion is the config text with every ${VAR}, ${VAR:-default} and "$$"
// replaced by a placeholder, and what each placeholder stands for. The YAML
// is parsed with the placeholders in place and they are substituted inside
// the parsed scalars only, so a value from the environment can never change
// the structure of the file: "abc #x" stays "abc #x" (not "abc" and a
// comment), and a value with a newline and "key: value" stays one string.
type expansion struct {
	// text is the source with placeholders; it has the source's lines.
	text []byte
	// placeholder matches one placeholder; submatch 1 is its index in refs.
	placeholder *regexp.Regexp
	prefix      string
	refs        []reference
	// problems are malformed references, reported wherever they are.
	problems []problem
}

// reference is what one placeholder stands for.
type reference struct {
	value   string
	fromEnv bool
	line    int
	// unset is the problem of a ${VAR} whose VAR is unset; it is reported
	// only if the reference lands in a value (not in a comment).
	unset string
}

// expand scans src for ${VAR}, ${VAR:-default} and "$$" and replaces each
// by a placeholder that is a plain YAML word in any context. Every
// malformed reference is a problem naming it, never a value.
func expand(src []byte, lookupEnv func(string) (string, bool)) *expansion {
	// A prefix that does not occur in src, so no text of the file can be
	// taken for a placeholder.
	prefix := "zzcaproxyenv"
	for n := 0; strings.Contains(string(src), prefix); n++ {
		prefix = "zzcaproxyenv" + strconv.Itoa(n) + "q"
	}
	e := &expansion{
		text:        make([]byte, 0, len(src)),
		prefix:      prefix,
		placeholder: regexp.MustCompile(regexp.QuoteMeta(prefix) + `([0-9]+)z`),
	}
	add := func(r reference) {
		e.text = append(e.text, fmt.Sprintf("%s%dz", prefix, len(e.refs))...)
		e.refs = append(e.refs, r)
	}
	line := 1
	for i := 0; i < len(src); {
		c := src[i]
		switch {
		case c == '\n':
			e.text = append(e.text, c)
			line++
			i++
		case c == '$' && i+1 < len(src) && src[i+1] == '$':
			add(reference{value: "$", line: line})
			i += 2
		case c == '$' && i+1 < len(src) && src[i+1] == '{':
			end := i + 2
			for end < len(src) && src[end] != '}' && src[end] != '\n' {
				end++
			}
			if end == len(src) || src[end] != '}' {
				e.problems = append(e.problems, problem{line, `unterminated "${" (write "$${" for a literal "${")`})
				i = end
				continue
			}
			inner := string(src[i+2 : end])
			i = end + 1
			name, def, hasDef := strings.Cut(inner, ":-")
			if !validVarName(name) {
				e.problems = append(e.problems, problem{line, fmt.Sprintf(
					"bad environment reference %q: want ${NAME} or ${NAME:-default} with NAME of letters, digits and _", "${"+inner+"}")})
				continue
			}
			val, ok := lookupEnv(name)
			switch {
			case ok && (val != "" || !hasDef):
				add(reference{value: val, fromEnv: true, line: line})
			case hasDef:
				add(reference{value: def, line: line})
			default:
				add(reference{line: line, unset: fmt.Sprintf(
					"environment variable %s is not set (set it, or write ${%s:-default})", name, name)})
			}
		default:
			e.text = append(e.text, c)
			i++
		}
	}
	return e
}

// substitute replaces the placeholders in every scalar of the tree under n
// (keys included) by their values. It records the nodes holding text from
// the environment in tainted, a container being tainted when anything in it
// is, and returns the problems of unset variables that were used.
func (e *expansion) substitute(n *yaml.Node, tainted map[*yaml.Node]bool) (ps []problem) {
	if n == nil || len(e.refs) == 0 {
		return nil
	}
	switch n.Kind {
	case yaml.DocumentNode, yaml.MappingNode, yaml.SequenceNode:
		for _, c := range n.Content {
			ps = append(ps, e.substitute(c, tainted)...)
			if tainted[c] {
				tainted[n] = true
			}
		}
	case yaml.ScalarNode:
		if !strings.Contains(n.Value, e.prefix) {
			return nil
		}
		n.Value = e.placeholder.ReplaceAllStringFunc(n.Value, func(m string) string {
			idx, _ := strconv.Atoi(e.placeholder.FindStringSubmatch(m)[1])
			r := e.refs[idx]
			if r.unset != "" {
				ps = append(ps, problem{r.line, r.unset})
			}
			if r.fromEnv {
				tainted[n] = true
			}
			return r.value
		})
		// A plain (unquoted) scalar is typed by what it now holds, as if
		// it had been written so: empty is null (the key keeps its
		// default), "50" a number, "true" a boolean. Quoted and block
		// scalars stay strings.
		if n.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle|yaml.LiteralStyle|yaml.FoldedStyle|yaml.TaggedStyle) == 0 {
			switch n.Value {
			case "", "~", "null", "Null", "NULL":
				n.Tag = "!!null"
			default:
				n.Tag = ""
			}
		}
	}
	return ps
}

// validVarName reports whether s is a shell-style variable name.
func validVarName(s string) bool {
	if s == "" {
		return false
	}
	for i, c := range s {
		switch {
		case c == '_', 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
		case '0' <= c && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}
