package credential

import (
	"net/url"
	"regexp"
	"slices"
	"strings"
)

// Redact returns s with every secret replaced by "[REDACTED]", wherever it
// appears in any letter case, and in each form an upstream or a URL may
// carry it: as is, query-escaped ("+" for a space), path-escaped, and with
// every byte percent-encoded, with hex digits in either case. Use it on any
// text that came from outside (an upstream's message, an error naming a
// URL) before it reaches a client's answer or a log line. Empty secrets are
// ignored.
func Redact(s string, secrets ...string) string {
	var forms []string
	for _, sec := range secrets {
		if sec == "" {
			continue
		}
		forms = append(forms, sec, url.QueryEscape(sec), url.PathEscape(sec), percentEncodeAll(sec))
	}
	if len(forms) == 0 || s == "" {
		return s
	}
	// Longest first, so a longer form is replaced whole rather than left
	// with a shorter form's remains.
	slices.SortFunc(forms, func(a, b string) int { return len(b) - len(a) })
	forms = slices.Compact(forms)
	quoted := make([]string, len(forms))
	for i, f := range forms {
		quoted[i] = regexp.QuoteMeta(f)
	}
	re := regexp.MustCompile("(?i)" + strings.Join(quoted, "|"))
	return re.ReplaceAllLiteralString(s, redacted)
}

// percentEncodeAll encodes every byte of s as %XX.
func percentEncodeAll(s string) string {
	const hex = "0123456789ABCDEF"
	b := make([]byte, 0, 3*len(s))
	for i := 0; i < len(s); i++ {
		b = append(b, '%', hex[s[i]>>4], hex[s[i]&15])
	}
	return string(b)
}
