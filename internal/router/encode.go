package router

import (
	"encoding/json"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/mulchat/mulchat"
)

// Hand-written JSON for the send path's hot messages: the stored message,
// the send reply and the send request. Each produces (or accepts) exactly
// what encoding/json does and falls back to encoding/json for anything the
// fast path does not cover, so clients and stored records cannot tell the
// difference (TestEncodeMatchesEncodingJSON, FuzzDecodeSend). encoding/json
// spent most of its time in reflection here: about a tenth of the router's
// CPU per send.

// appendJSONString appends s as encoding/json writes a string. Strings that
// need no escaping (no control characters, quote, backslash, <, >, &, U+2028,
// U+2029 or invalid UTF-8) are copied; the others are left to encoding/json.
func appendJSONString(dst []byte, s string) []byte {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c < 0x20 || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
				return appendJSONStringSlow(dst, s)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 || r == '\u2028' || r == '\u2029' {
			return appendJSONStringSlow(dst, s)
		}
		i += size
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}

func appendJSONStringSlow(dst []byte, s string) []byte {
	b, _ := json.Marshal(s) // a string always encodes
	return append(dst, b...)
}

// appendJSONTime appends t as encoding/json writes a time.Time, or reports
// false for a time it does not write as plain RFC 3339 (the caller then uses
// encoding/json, which may refuse it).
func appendJSONTime(dst []byte, t time.Time) ([]byte, bool) {
	if y := t.Year(); y < 0 || y > 9999 || t.Location() != time.UTC {
		return dst, false
	}
	dst = append(dst, '"')
	dst = t.AppendFormat(dst, time.RFC3339Nano)
	return append(dst, '"'), true
}

// encodeMessage is json.Marshal(m).
func encodeMessage(m *mulchat.Message) ([]byte, error) {
	out := make([]byte, 0, 128+len(m.Sender.Username)+len(m.Text)+len(m.ClientMsgID))
	out = append(out, `{"room_id":`...)
	out = strconv.AppendInt(out, m.RoomID, 10)
	out = append(out, `,"seq":`...)
	out = strconv.AppendUint(out, m.Seq, 10)
	out = append(out, `,"sender":{"id":`...)
	out = strconv.AppendInt(out, m.Sender.ID, 10)
	out = append(out, `,"username":`...)
	out = appendJSONString(out, m.Sender.Username)
	out = append(out, `},"text":`...)
	out = appendJSONString(out, m.Text)
	out = append(out, `,"sent_at":`...)
	out, ok := appendJSONTime(out, m.SentAt)
	if !ok {
		return json.Marshal(m)
	}
	if m.ClientMsgID != "" {
		out = append(out, `,"client_msg_id":`...)
		out = appendJSONString(out, m.ClientMsgID)
	}
	return append(out, '}'), nil
}

// encodeSendReply is json.Marshal(rep) for a successful send (no Error).
func encodeSendReply(rep *mulchat.SendReply) ([]byte, error) {
	if rep.Error != nil {
		return json.Marshal(rep)
	}
	out := make([]byte, 0, 64)
	out = append(out, '{')
	if rep.Seq != 0 {
		out = append(out, `"seq":`...)
		out = strconv.AppendUint(out, rep.Seq, 10)
	}
	if rep.SentAt != nil {
		if rep.Seq != 0 {
			out = append(out, ',')
		}
		out = append(out, `"sent_at":`...)
		var ok bool
		if out, ok = appendJSONTime(out, *rep.SentAt); !ok {
			return json.Marshal(rep)
		}
	}
	return append(out, '}'), nil
}

// decodeSendJSON is json.Unmarshal(data, &body) for a send request. The
// usual request — an object with "text" and optionally "client_msg_id",
// each once, as strings without escapes or control characters, in valid
// UTF-8 — is read directly; data must be valid UTF-8 (decodeSend checks
// it first, with its own error). Anything else (other keys, escapes, keys
// differing only in case, repeated keys, other types, malformed JSON) goes
// to encoding/json, whose answer, error or not, is the answer.
func decodeSendJSON(data []byte, body *mulchat.SendRequest) error {
	if decodeSendFast(data, body) {
		return nil
	}
	*body = mulchat.SendRequest{}
	return json.Unmarshal(data, body)
}

func decodeSendFast(data []byte, body *mulchat.SendRequest) bool {
	p := jsonScanner{data: data}
	if !p.skip('{') {
		return false
	}
	var haveText, haveID bool
	for {
		key, ok := p.plainString()
		if !ok || !p.skip(':') {
			return false
		}
		value, ok := p.plainString()
		if !ok {
			return false
		}
		switch key {
		case "text":
			if haveText {
				return false
			}
			haveText, body.Text = true, value
		case "client_msg_id":
			if haveID {
				return false
			}
			haveID, body.ClientMsgID = true, value
		default:
			return false
		}
		if p.skip(',') {
			continue
		}
		if !p.skip('}') {
			return false
		}
		p.space()
		return p.i == len(p.data)
	}
}

// jsonScanner reads the few JSON tokens decodeSendFast accepts.
type jsonScanner struct {
	data []byte
	i    int
}

func (p *jsonScanner) space() {
	for p.i < len(p.data) {
		switch p.data[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

// skip consumes c after optional whitespace.
func (p *jsonScanner) skip(c byte) bool {
	p.space()
	if p.i < len(p.data) && p.data[p.i] == c {
		p.i++
		return true
	}
	return false
}

// plainString reads a string with no escapes and no control characters.
func (p *jsonScanner) plainString() (string, bool) {
	if !p.skip('"') {
		return "", false
	}
	start := p.i
	for p.i < len(p.data) {
		c := p.data[p.i]
		switch {
		case c == '"':
			s := string(p.data[start:p.i])
			p.i++
			return s, true
		case c == '\\' || c < 0x20:
			return "", false
		}
		p.i++
	}
	return "", false
}
