package tracker

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"time"
	"unicode/utf8"
)

// decodeEvent reads the fields of a connect or disconnect advisory that the
// tracker uses (connectEvent) in one pass over the JSON, skipping the rest.
// encoding/json scans an advisory twice (validation, then decoding) through
// a function call per byte, and decoding the ~1.3 kB advisories cost as much
// CPU as writing their session rows.
//
// It gives what json.Unmarshal gives into a zero connectEvent, or
// errFallback for what it does not handle the same way (a key or string with
// escapes, invalid UTF-8, a key matching a field only case-insensitively,
// malformed input), on which the caller uses json.Unmarshal.
func decodeEvent(data []byte, ev *connectEvent) error {
	d := eventDecoder{b: data}
	err := d.object(func(key []byte) error {
		switch string(key) {
		case "type":
			return d.str(&ev.Type)
		case "timestamp":
			return d.time(&ev.Time)
		case "server":
			return d.object(func(key []byte) error {
				switch string(key) {
				case "name":
					return d.str(&ev.Server.Name)
				case "id":
					return d.str(&ev.Server.ID)
				}
				return d.skipUnknown(key, "name", "id")
			})
		case "client":
			return d.client(&ev.Client)
		case "reason":
			return d.str(&ev.Reason)
		}
		return d.skipUnknown(key, "type", "timestamp", "server", "client", "reason")
	})
	if err != nil {
		return err
	}
	d.ws()
	if d.i != len(d.b) {
		return errFallback
	}
	return nil
}

func (d *eventDecoder) client(c *clientInfo) error {
	return d.object(func(key []byte) error {
		switch string(key) {
		case "start":
			if d.null() {
				c.Start = nil
				return nil
			}
			var t time.Time
			if err := d.time(&t); err != nil {
				return err
			}
			c.Start = &t
			return nil
		case "host":
			return d.str(&c.Host)
		case "id":
			return d.uint(&c.ID)
		case "acc":
			return d.str(&c.Account)
		case "user":
			return d.str(&c.User)
		case "name":
			return d.str(&c.Name)
		case "lang":
			return d.str(&c.Lang)
		case "ver":
			return d.str(&c.Version)
		case "jwt":
			return d.str(&c.JWT)
		case "kind":
			return d.str(&c.Kind)
		}
		return d.skipUnknown(key, "start", "host", "id", "acc", "user", "name", "lang", "ver", "jwt", "kind")
	})
}

// errFallback: decode this advisory with encoding/json.
var errFallback = errors.New("tracker: advisory needs encoding/json")

// maxDepth bounds the nesting of skipped values.
const maxDepth = 32

type eventDecoder struct {
	b []byte
	i int
}

func (d *eventDecoder) ws() {
	for d.i < len(d.b) {
		switch d.b[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

// peek returns the next non-space byte (0 at the end).
func (d *eventDecoder) peek() byte {
	d.ws()
	if d.i >= len(d.b) {
		return 0
	}
	return d.b[d.i]
}

// null consumes a null literal if one comes next.
func (d *eventDecoder) null() bool {
	if d.peek() == 'n' && bytes.HasPrefix(d.b[d.i:], []byte("null")) {
		d.i += 4
		return true
	}
	return false
}

// object reads an object, calling field with each key (positioned at its
// value, which field must consume). null is an empty object, as for
// encoding/json.
func (d *eventDecoder) object(field func(key []byte) error) error {
	if d.null() {
		return nil
	}
	if d.peek() != '{' {
		return errFallback
	}
	d.i++
	if d.peek() == '}' {
		d.i++
		return nil
	}
	for {
		if d.peek() != '"' {
			return errFallback
		}
		key, escaped, err := d.rawString()
		if err != nil || escaped {
			return errFallback
		}
		if d.peek() != ':' {
			return errFallback
		}
		d.i++
		if err := field(key); err != nil {
			return err
		}
		switch d.peek() {
		case ',':
			d.i++
		case '}':
			d.i++
			return nil
		default:
			return errFallback
		}
	}
}

// skipUnknown skips the value of a key that is none of known; a key equal
// to one of them but for case is left to encoding/json, which matches keys
// case-insensitively.
func (d *eventDecoder) skipUnknown(key []byte, known ...string) error {
	for _, k := range known {
		if bytes.EqualFold(key, []byte(k)) {
			return errFallback
		}
	}
	return d.skip(0)
}

// rawString reads a string token and returns its bytes between the quotes
// (still escaped when escaped is true); it checks the string is valid UTF-8
// without control characters.
func (d *eventDecoder) rawString() (s []byte, escaped bool, err error) {
	start := d.i + 1 // after the opening quote
	ascii := true
	for i := start; i < len(d.b); i++ {
		switch c := d.b[i]; {
		case c == '"':
			d.i = i + 1
			s = d.b[start:i]
			if !ascii && !utf8.Valid(s) {
				// encoding/json replaces invalid bytes with U+FFFD.
				return nil, false, errFallback
			}
			return s, escaped, nil
		case c == '\\':
			escaped = true
			if i+1 >= len(d.b) {
				return nil, false, errFallback
			}
			switch d.b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i++
			case 'u':
				if i+5 >= len(d.b) {
					return nil, false, errFallback
				}
				for _, h := range d.b[i+2 : i+6] {
					if !isHex(h) {
						return nil, false, errFallback
					}
				}
				i += 5
			default:
				return nil, false, errFallback
			}
		case c < 0x20:
			return nil, false, errFallback
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	return nil, false, errFallback
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// str reads a string (null leaves dst as it is, as for encoding/json).
func (d *eventDecoder) str(dst *string) error {
	if d.null() {
		return nil
	}
	if d.peek() != '"' {
		return errFallback
	}
	s, escaped, err := d.rawString()
	if err != nil {
		return err
	}
	if escaped {
		// Rare (a client name with a quote, say): encoding/json unescapes
		// just this string.
		return json.Unmarshal(d.b[d.i-len(s)-2:d.i], dst)
	}
	*dst = string(s)
	return nil
}

// time reads a timestamp with time.Time's own UnmarshalJSON (null leaves
// dst as it is).
func (d *eventDecoder) time(dst *time.Time) error {
	if d.null() {
		return nil
	}
	if d.peek() != '"' {
		return errFallback
	}
	start := d.i
	if _, escaped, err := d.rawString(); err != nil || escaped {
		return errFallback
	}
	var t time.Time
	if err := t.UnmarshalJSON(d.b[start:d.i]); err != nil {
		return errFallback
	}
	*dst = t
	return nil
}

// uint reads a non-negative integer.
func (d *eventDecoder) uint(dst *uint64) error {
	if d.null() {
		return nil
	}
	d.ws()
	start := d.i
	for d.i < len(d.b) && d.b[d.i] >= '0' && d.b[d.i] <= '9' {
		d.i++
	}
	if d.i == start || (d.b[start] == '0' && d.i-start > 1) {
		return errFallback
	}
	if d.i < len(d.b) {
		switch d.b[d.i] {
		case '.', 'e', 'E':
			return errFallback
		}
	}
	n, err := strconv.ParseUint(string(d.b[start:d.i]), 10, 64)
	if err != nil {
		return errFallback
	}
	*dst = n
	return nil
}

// skip skips one value of any kind, checking its syntax.
func (d *eventDecoder) skip(depth int) error {
	if depth > maxDepth {
		return errFallback
	}
	switch c := d.peek(); {
	case c == '"':
		_, _, err := d.rawString()
		return err
	case c == '{':
		return d.object(func([]byte) error { return d.skip(depth + 1) })
	case c == '[':
		d.i++
		if d.peek() == ']' {
			d.i++
			return nil
		}
		for {
			if err := d.skip(depth + 1); err != nil {
				return err
			}
			switch d.peek() {
			case ',':
				d.i++
			case ']':
				d.i++
				return nil
			default:
				return errFallback
			}
		}
	case c == 't':
		return d.literal("true")
	case c == 'f':
		return d.literal("false")
	case c == 'n':
		return d.literal("null")
	case c == '-' || (c >= '0' && c <= '9'):
		return d.number()
	}
	return errFallback
}

func (d *eventDecoder) literal(lit string) error {
	if !bytes.HasPrefix(d.b[d.i:], []byte(lit)) {
		return errFallback
	}
	d.i += len(lit)
	return nil
}

// number skips a JSON number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (d *eventDecoder) number() error {
	digits := func() int {
		n := 0
		for d.i < len(d.b) && d.b[d.i] >= '0' && d.b[d.i] <= '9' {
			d.i++
			n++
		}
		return n
	}
	if d.b[d.i] == '-' {
		d.i++
	}
	if d.i < len(d.b) && d.b[d.i] == '0' {
		d.i++
	} else if digits() == 0 {
		return errFallback
	}
	if d.i < len(d.b) && d.b[d.i] == '.' {
		d.i++
		if digits() == 0 {
			return errFallback
		}
	}
	if d.i < len(d.b) && (d.b[d.i] == 'e' || d.b[d.i] == 'E') {
		d.i++
		if d.i < len(d.b) && (d.b[d.i] == '+' || d.b[d.i] == '-') {
			d.i++
		}
		if digits() == 0 {
			return errFallback
		}
	}
	return nil
}
