package config

import (
	"fmt"
	"strings"
)

// expansion is config text after ${VAR} expansion, with what is needed to
// report problems against the original file without leaking values.
type expansion struct {
	text []byte
	// origLine[i] is the line of the original file that output line i+1
	// came from (values with newlines make several output lines).
	origLine []int
	// taintedLine[i] reports that output line i+1 holds text taken from
	// the environment; such values are never quoted in messages.
	taintedLine []bool
	// envUsed reports that some value came from the environment.
	envUsed  bool
	problems []problem
}

// line maps a line of the expanded text to the original file.
func (e *expansion) line(out int) int {
	if out < 1 || len(e.origLine) == 0 {
		return out
	}
	if out > len(e.origLine) {
		return e.origLine[len(e.origLine)-1]
	}
	return e.origLine[out-1]
}

// tainted reports whether a line of the expanded text holds environment
// text.
func (e *expansion) tainted(out int) bool {
	if out < 1 || out > len(e.taintedLine) {
		return e.envUsed
	}
	return e.taintedLine[out-1]
}

// emit appends b; taint marks it as coming from the environment.
func (e *expansion) emit(b []byte, inLine int, taint bool) {
	for _, c := range b {
		e.text = append(e.text, c)
		if taint {
			e.taintedLine[len(e.taintedLine)-1] = true
		}
		if c == '\n' {
			e.origLine = append(e.origLine, inLine)
			e.taintedLine = append(e.taintedLine, false)
		}
	}
}

// expand replaces ${VAR} and ${VAR:-default} in src, and "$$" by "$".
// Every bad or missing reference is a problem naming the variable, never
// its value.
func expand(src []byte, lookupEnv func(string) (string, bool)) *expansion {
	e := &expansion{
		text:        make([]byte, 0, len(src)),
		origLine:    []int{1},
		taintedLine: []bool{false},
	}
	inLine := 1
	for i := 0; i < len(src); {
		c := src[i]
		switch {
		case c == '\n':
			// The new output line starts at the next input line.
			e.emit(src[i:i+1], inLine+1, false)
			inLine++
			i++
		case c == '$' && i+1 < len(src) && src[i+1] == '$':
			e.emit(src[i:i+1], inLine, false)
			i += 2
		case c == '$' && i+1 < len(src) && src[i+1] == '{':
			end := i + 2
			for end < len(src) && src[end] != '}' && src[end] != '\n' {
				end++
			}
			if end == len(src) || src[end] != '}' {
				e.problems = append(e.problems, problem{inLine, `unterminated "${" (write "$${" for a literal "${")`})
				i = end
				continue
			}
			inner := string(src[i+2 : end])
			i = end + 1
			name, def, hasDef := strings.Cut(inner, ":-")
			if !validVarName(name) {
				e.problems = append(e.problems, problem{inLine, fmt.Sprintf(
					"bad environment reference %q: want ${NAME} or ${NAME:-default} with NAME of letters, digits and _", "${"+inner+"}")})
				continue
			}
			val, ok := lookupEnv(name)
			switch {
			case ok && (val != "" || !hasDef):
				e.envUsed = true
				e.emit([]byte(val), inLine, true)
			case hasDef:
				e.emit([]byte(def), inLine, false)
			default:
				e.problems = append(e.problems, problem{inLine, fmt.Sprintf(
					"environment variable %s is not set (set it, or write ${%s:-default})", name, name)})
			}
		default:
			e.emit(src[i:i+1], inLine, false)
			i++
		}
	}
	return e
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
