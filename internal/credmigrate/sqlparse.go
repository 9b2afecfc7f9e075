package credmigrate

import (
	"strings"
	"unicode"
)

// splitTopLevel splits s at commas outside parentheses and quotes.
func splitTopLevel(s string) []string {
	var parts []string
	depth := 0
	var quote rune
	start := 0
	for i, r := range s {
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			}
		case r == '\'' || r == '"' || r == '`':
			quote = r
		case r == '[':
			quote = ']'
		case r == '(':
			depth++
		case r == ')':
			depth--
		case r == ',' && depth == 0:
			parts = append(parts, s[start:i])
			start = i + 1
		}
	}
	return append(parts, s[start:])
}

// tableBody splits a CREATE TABLE statement into the text before its
// definition list, the list's items, and the text after it.
func tableBody(create string) (head string, items []string, tail string, ok bool) {
	open := strings.IndexByte(create, '(')
	closeAt := strings.LastIndexByte(create, ')')
	if open < 0 || closeAt < open {
		return "", nil, "", false
	}
	return create[:open], splitTopLevel(create[open+1 : closeAt]), create[closeAt+1:], true
}

// firstIdent returns the first identifier of a definition item, unquoted
// and lower-cased.
func firstIdent(item string) string {
	s := strings.TrimSpace(item)
	if s == "" {
		return ""
	}
	switch s[0] {
	case '"', '`', '[':
		end := map[byte]byte{'"': '"', '`': '`', '[': ']'}[s[0]]
		if i := strings.IndexByte(s[1:], end); i >= 0 {
			return strings.ToLower(s[1 : i+1])
		}
		return ""
	}
	i := strings.IndexFunc(s, func(r rune) bool { return unicode.IsSpace(r) || r == '(' })
	if i < 0 {
		i = len(s)
	}
	return strings.ToLower(s[:i])
}

var tableConstraintWords = map[string]bool{"constraint": true, "primary": true, "unique": true, "check": true, "foreign": true}

// mentions reports whether item names column as a whole word.
func mentions(item, column string) bool {
	low := strings.ToLower(item)
	for i := 0; ; {
		j := strings.Index(low[i:], column)
		if j < 0 {
			return false
		}
		j += i
		before := j == 0 || !isIdentChar(rune(low[j-1]))
		after := j+len(column) >= len(low) || !isIdentChar(rune(low[j+len(column)]))
		if before && after {
			return true
		}
		i = j + len(column)
	}
}

func isIdentChar(r rune) bool { return r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r) }

// withoutColumn rewrites a CREATE TABLE statement for newName without column
// and without the table constraints that name it.
func withoutColumn(create, newName, column string) (string, bool) {
	_, items, tail, ok := tableBody(create)
	if !ok {
		return "", false
	}
	var kept []string
	found := false
	for _, it := range items {
		name := firstIdent(it)
		if name == column {
			found = true
			continue
		}
		if tableConstraintWords[name] && mentions(it, column) {
			continue
		}
		kept = append(kept, strings.TrimSpace(it))
	}
	if !found {
		return "", false
	}
	return "CREATE TABLE " + newName + " (\n\t" + strings.Join(kept, ",\n\t") + "\n)" + tail, true
}
