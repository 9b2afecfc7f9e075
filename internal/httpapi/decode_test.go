package httpapi

import (
	"testing"

	"github.com/mulchat/mulchat"
)

// TestDecodeBodyEscapes: \u escapes encoding/json would decode lossily (lone
// surrogates become U+FFFD) or that storage cannot hold (NUL) are refused;
// everything else, including a valid surrogate pair and an escaped
// backslash before "u", decodes unchanged.
func TestDecodeBodyEscapes(t *testing.T) {
	const lone = "request body contains an invalid \\u escape (lone surrogate)"
	cases := []struct {
		name string
		body string
		want string // decoded value; "" when refused
		msg  string // error message when refused
	}{
		{"lone high", `{"s":"\ud800xxxxxxxxxxx"}`, "", lone},
		{"lone high upper case", `{"s":"a\uDBFF"}`, "", lone},
		{"lone high at end", `{"s":"\ud800"}`, "", lone},
		{"lone low", `{"s":"x\udc00"}`, "", lone},
		{"lone low last", `{"s":"x\uDFFF"}`, "", lone},
		{"reversed pair", `{"s":"\udc00\ud800"}`, "", lone},
		{"high then non-surrogate escape", `{"s":"\ud800\u0041"}`, "", lone},
		{"high then high", `{"s":"\ud800\ud800\udc00"}`, "", lone},
		{"high then raw text", `{"s":"\ud83dx"}`, "", lone},
		{"pair then lone low", `{"s":"\ud83d\ude00\ude00"}`, "", lone},
		{"lone after escaped backslash", `{"s":"\\\ud800"}`, "", lone},
		{"lone in a key", `{"\ud800":"x"}`, "", lone},
		{"NUL", `{"s":"a\u0000"}`, "", "strings must not contain NUL characters"},
		{"valid pair", `{"s":"\ud83d\ude00"}`, "😀", ""},
		{"valid pair upper case", `{"s":"a\uD83D\uDE00b"}`, "a😀b", ""},
		{"two pairs", `{"s":"\ud83d\ude00\ud83d\ude01"}`, "😀😁", ""},
		{"raw emoji", `{"s":"😀"}`, "😀", ""},
		{"escaped backslash", `{"s":"\\ud800"}`, `\ud800`, ""},
		{"escaped backslash NUL text", `{"s":"\\u0000"}`, `\u0000`, ""},
		{"escaped backslash twice", `{"s":"\\\\ud800"}`, `\\ud800`, ""},
		{"BMP escapes", `{"s":"\u00e9\uffff\ud7ff\ue000"}`, "é\uffff\ud7ff\ue000", ""},
		{"other escapes", `{"s":"\"\/\b\f\n\r\t"}`, "\"/\b\f\n\r\t", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var dst struct {
				S string `json:"s"`
			}
			err := decodeBody([]byte(c.body), &dst)
			if c.msg != "" {
				if mulchat.ErrorCode(err) != mulchat.EINVALID || mulchat.ErrorMessage(err) != c.msg {
					t.Fatalf("decodeBody(%s) = %v, want invalid %q", c.body, err, c.msg)
				}
				return
			}
			if err != nil {
				t.Fatalf("decodeBody(%s): %v", c.body, err)
			}
			if dst.S != c.want {
				t.Fatalf("decodeBody(%s) = %q, want %q", c.body, dst.S, c.want)
			}
		})
	}
}

// TestDecodeBodyMalformedEscapes: a broken escape is the decoder's to report,
// as malformed JSON, and never confuses the scan into a panic.
func TestDecodeBodyMalformedEscapes(t *testing.T) {
	for _, body := range []string{`{"s":"\u12"}`, `{"s":"\uzzzz"}`, `{"s":"\`, `{"s":"\u`, `\`, `{"s":"\ud800\u12"}`, `{"s":"\ud800\`} {
		var dst struct {
			S string `json:"s"`
		}
		if err := decodeBody([]byte(body), &dst); mulchat.ErrorCode(err) != mulchat.EINVALID {
			t.Errorf("decodeBody(%s) = %v, want invalid", body, err)
		}
	}
}
