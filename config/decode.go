package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// decoder decodes the expanded YAML into a Config strictly, by walking the
// YAML node tree against the Config's yaml tags. Walking the tree ourselves
// (rather than yaml.v3's KnownFields) lets every problem name its full key
// path and line, lets all problems be reported at once, and lets values from
// the environment stay out of messages.
type decoder struct {
	exp      *expansion
	problems []problem
	// envNodes are the YAML nodes holding text from the environment
	// (containers included); such values are never quoted in messages.
	envNodes map[*yaml.Node]bool
	fatal    bool // the YAML could not be parsed; skip validation
	// lines and tainted record, per key path ("cache.ttl", "accounts[0]"),
	// the original line and whether the value came from the environment.
	lines   map[string]int
	tainted map[string]bool
}

var (
	durationType = reflect.TypeOf(time.Duration(0))
	accountType  = reflect.TypeOf(Account{})
	yamlLineRe   = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)
)

func (d *decoder) add(outLine int, format string, args ...any) {
	d.problems = append(d.problems, problem{outLine, fmt.Sprintf(format, args...)})
}

// decodeDocument parses the single YAML document, substitutes the
// environment references inside its scalars and decodes it into cfg.
func (d *decoder) decodeDocument(cfg *Config) {
	if d.envNodes == nil {
		d.envNodes = map[*yaml.Node]bool{}
	}
	dec := yaml.NewDecoder(bytes.NewReader(d.exp.text))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return // empty file: defaults only; validation asks for accounts
		}
		d.syntaxError(err)
		return
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		d.add(extra.Line, "only one YAML document is allowed")
		d.fatal = true
		return
	} else if !errors.Is(err, io.EOF) {
		d.syntaxError(err)
		return
	}
	if ps := d.exp.substitute(&doc, d.envNodes); len(ps) > 0 {
		d.problems = append(d.problems, ps...)
		d.fatal = true
		return
	}
	root := &doc
	if root.Kind == yaml.DocumentNode {
		if len(root.Content) == 0 {
			return
		}
		root = root.Content[0]
	}
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return // only comments
	}
	if root.Kind != yaml.MappingNode {
		d.fatal = true // nothing was decoded; validating would only add noise
	}
	d.value(root, reflect.ValueOf(cfg).Elem(), "")
}

// syntaxError records a YAML parse error. The parser only ever sees the
// file's own text (environment values are substituted after parsing), so
// no value from the environment can be in its message.
func (d *decoder) syntaxError(err error) {
	d.fatal = true
	msg := err.Error()
	line := 0
	if m := yamlLineRe.FindStringSubmatch(msg); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = m[2]
	} else {
		msg = strings.TrimPrefix(msg, "yaml: ")
	}
	msg = d.exp.placeholder.ReplaceAllString(msg, "${…}")
	d.problems = append(d.problems, problem{line, "invalid YAML: " + msg})
}

// where describes a key path for messages about unknown keys.
func where(path string) string {
	if path == "" {
		return "at top level"
	}
	return "in " + path
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// kindName names what a node holds, for "expected X, got Y" messages.
func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	return "a single value"
}

// value decodes node n into v, the field at key path.
func (d *decoder) value(n *yaml.Node, v reflect.Value, path string) {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if path != "" && d.envNodes[n] {
		d.tainted[path] = true
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // "key:" with no value keeps the default
	}
	switch {
	case v.Type() == durationType:
		if n.Kind != yaml.ScalarNode {
			d.add(n.Line, "%s: expected a duration such as 30s or 10m, got %s", path, kindName(n))
			return
		}
		dur, err := time.ParseDuration(n.Value)
		if err != nil {
			d.add(n.Line, "%s: invalid duration%s: want a Go duration such as 30s, 10m or 1h30m",
				path, d.quote(n, n.Value))
			return
		}
		v.SetInt(int64(dur))
	case v.Kind() == reflect.String:
		if n.Kind != yaml.ScalarNode {
			d.add(n.Line, "%s: expected a single value, got %s", path, kindName(n))
			return
		}
		v.SetString(n.Value)
	case v.Kind() == reflect.Int:
		var i int
		if n.Kind != yaml.ScalarNode || n.Decode(&i) != nil {
			d.add(n.Line, "%s: expected a whole number%s", path, d.quote(n, n.Value))
			return
		}
		v.SetInt(int64(i))
	case v.Kind() == reflect.Bool:
		var b bool
		if n.Kind != yaml.ScalarNode || n.Decode(&b) != nil {
			d.add(n.Line, "%s: expected true or false%s", path, d.quote(n, n.Value))
			return
		}
		v.SetBool(b)
	case v.Kind() == reflect.Struct:
		d.mapping(n, v, path)
	case v.Kind() == reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.add(n.Line, "%s: expected a list, got %s", path, kindName(n))
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			if v.Type().Elem() == accountType {
				s.Index(i).Set(reflect.ValueOf(defaultAccount()))
			}
			p := fmt.Sprintf("%s[%d]", path, i)
			d.lines[p] = item.Line
			d.value(item, s.Index(i), p)
		}
		v.Set(s)
	default:
		panic("config: no decoding for " + v.Type().String())
	}
}

// mapping decodes a YAML mapping into struct v, refusing unknown and
// repeated keys.
func (d *decoder) mapping(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		what := path
		if what == "" {
			what = "the top level"
		}
		d.add(n.Line, "%s: expected a mapping of keys, got %s", what, kindName(n))
		return
	}
	fields := map[string]int{}
	var names []string
	for i := 0; i < v.NumField(); i++ {
		tag := v.Type().Field(i).Tag.Get("yaml")
		if tag == "-" {
			continue // not a key (State.File)
		}
		fields[tag] = i
		names = append(names, tag)
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			d.add(k.Line, "%s: keys must be plain names, got %s", where(path), kindName(k))
			continue
		}
		name := k.Value
		shown := strconv.Quote(name)
		if d.envNodes[k] {
			shown = "(from the environment)"
		}
		idx, ok := fields[name]
		if !ok {
			msg := fmt.Sprintf("unknown key %s %s", shown, where(path))
			if s := suggest(name, names); s != "" && !d.envNodes[k] {
				msg += fmt.Sprintf(" (did you mean %q?)", s)
			}
			d.add(k.Line, "%s", msg)
			continue
		}
		if first, dup := seen[name]; dup {
			d.add(k.Line, "duplicate key %s %s (first at line %d)", shown, where(path), first)
			continue
		}
		seen[name] = k.Line
		d.lines[join(path, name)] = k.Line
		d.value(val, v.Field(idx), join(path, name))
	}
}

// quote returns ` "value"` for messages, or "" when the value came from
// the environment and so must not be shown.
func (d *decoder) quote(n *yaml.Node, value string) string {
	if d.envNodes[n] {
		return ""
	}
	return " " + strconv.Quote(value)
}

// suggest returns the known key closest to name, if it is close.
func suggest(name string, known []string) string {
	best, bestDist := "", 3
	for _, k := range known {
		if dist := editDistance(name, k); dist < bestDist {
			best, bestDist = k, dist
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
