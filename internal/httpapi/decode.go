package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"unicode/utf8"

	"github.com/mulchat/mulchat"
)

// MaxBodyBytes bounds every request body; larger bodies get 413.
const MaxBodyBytes = 64 << 10

// decodeJSON reads one JSON object from the request body into dst. It rejects,
// with coded 4xx errors: bodies over MaxBodyBytes, invalid UTF-8 (which
// encoding/json would silently replace), NUL characters in strings, lone
// surrogate escapes, unknown fields, wrong types, trailing data and an empty
// body.
func decodeJSON(w http.ResponseWriter, r *http.Request, dst any) error {
	body, err := readBody(w, r)
	if err != nil {
		return err
	}
	return decodeBody(body, dst)
}

// readBody reads the whole body, at most MaxBodyBytes.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, mulchat.Errorf(mulchat.ETOOLARGE, "request body must be at most %d bytes", MaxBodyBytes)
		}
		return nil, mulchat.Errorf(mulchat.EINVALID, "could not read request body")
	}
	return body, nil
}

func decodeBody(body []byte, dst any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return mulchat.Errorf(mulchat.EINVALID, "request body must be a JSON object")
	}
	if !utf8.Valid(body) {
		return mulchat.Errorf(mulchat.EINVALID, "request body must be valid UTF-8")
	}
	if err := checkEscapes(body); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return jsonError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return mulchat.Errorf(mulchat.EINVALID, "request body must hold exactly one JSON object")
	}
	return nil
}

// jsonError turns a decoding error into a client-safe EINVALID error.
func jsonError(err error) error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return mulchat.Errorf(mulchat.EINVALID, "malformed JSON at byte %d", syn.Offset)
	case errors.As(err, &typ):
		if typ.Field != "" {
			return mulchat.Errorf(mulchat.EINVALID, "field %q must be of type %s", typ.Field, jsonTypeName(typ.Type.Kind().String()))
		}
		return mulchat.Errorf(mulchat.EINVALID, "request body must be a JSON object")
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return mulchat.Errorf(mulchat.EINVALID, "malformed JSON: unexpected end of input")
	}
	var fe *fieldError
	if errors.As(err, &fe) {
		return mulchat.Errorf(mulchat.EINVALID, "%s", fe.msg)
	}
	// Unknown fields: encoding/json's message names the field, which came from
	// the client and is quoted; keep it, bounded.
	msg := err.Error()
	if len(msg) > 120 {
		msg = msg[:120]
	}
	if bytes.HasPrefix([]byte(msg), []byte("json: unknown field ")) {
		return mulchat.Errorf(mulchat.EINVALID, "unknown field %s", strconv.QuoteToASCII(msg[len("json: unknown field "):]))
	}
	return mulchat.Errorf(mulchat.EINVALID, "malformed JSON")
}

func jsonTypeName(kind string) string {
	switch kind {
	case "string":
		return "string"
	case "bool":
		return "boolean"
	case "struct", "map":
		return "object"
	case "slice", "array":
		return "array"
	default:
		return "number"
	}
}

// fieldError is returned by custom UnmarshalJSON methods with a message safe
// to show.
type fieldError struct{ msg string }

func (e *fieldError) Error() string { return e.msg }

// checkEscapes rejects the \u escapes encoding/json would accept but
// mishandle: "\u0000" (PostgreSQL text cannot hold NUL), and a surrogate
// escape (\uD800–\uDFFF) that is not a high surrogate directly followed by a
// low one. encoding/json silently turns such a lone surrogate into U+FFFD, so
// two different bodies would decode to the same string: a password
// "\ud800xxxxxxxxxx" would then match "\udfffxxxxxxxxxx". Raw bytes are
// already checked by utf8.Valid, which refuses encoded surrogates.
//
// Only escapes are inspected: a backslash outside a string is a syntax error
// the decoder reports, and an escaped backslash ("\\u0000") is literal text,
// so the scan skips the character after every backslash. A malformed escape
// is left to the decoder too.
func checkEscapes(body []byte) error {
	for i := 0; i+1 < len(body); i++ {
		if body[i] != '\\' {
			continue
		}
		if body[i+1] != 'u' {
			i++ // skip the escaped character
			continue
		}
		r, ok := hexEscape(body, i)
		if !ok {
			i++
			continue
		}
		switch {
		case r == 0:
			return mulchat.Errorf(mulchat.EINVALID, "strings must not contain NUL characters")
		case r >= 0xD800 && r < 0xDC00:
			// A high surrogate is valid only as the first half of a pair.
			if lo, ok := hexEscape(body, i+6); ok && lo >= 0xDC00 && lo <= 0xDFFF {
				i += 11
				continue
			}
			return errLoneSurrogate()
		case r >= 0xDC00 && r <= 0xDFFF:
			return errLoneSurrogate()
		}
		i += 5
	}
	return nil
}

func errLoneSurrogate() error {
	return mulchat.Errorf(mulchat.EINVALID, "request body contains an invalid \\u escape (lone surrogate)")
}

// hexEscape decodes the escape "\uXXXX" starting at body[i], if there is one.
func hexEscape(body []byte, i int) (rune, bool) {
	if i+6 > len(body) || body[i] != '\\' || body[i+1] != 'u' {
		return 0, false
	}
	var r rune
	for _, c := range body[i+2 : i+6] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// writeJSON writes v with the given status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	startJSON(w, status)
	_ = json.NewEncoder(w).Encode(v)
}

// startJSON writes the headers and status of a JSON answer.
func startJSON(w http.ResponseWriter, status int) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
}

// pathID parses a positive int64 path value.
func pathID(r *http.Request, name string) (int64, error) {
	v := r.PathValue(name)
	id, err := strconv.ParseInt(v, 10, 64)
	if err != nil || id <= 0 || strconv.FormatInt(id, 10) != v {
		return 0, mulchat.Errorf(mulchat.EINVALID, "%s must be a positive integer", name)
	}
	return id, nil
}

// queryUint parses an optional non-negative integer query parameter.
func queryUint(r *http.Request, name string, def, max uint64) (uint64, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil || n > max {
		return 0, mulchat.Errorf(mulchat.EINVALID, "%s must be an integer from 0 to %d", name, max)
	}
	return n, nil
}
