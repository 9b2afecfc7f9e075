package router

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/mulchat/mulchat"
)

var encodeStrings = []string{
	"", "hello", "héllo wörld", "日本語", "emoji 🎉", "a<b", "x > y", "fish & chips",
	`say "hi"`, `back\slash`, "line\nbreak", "tab\there", "\x00nul", "\x1f", "\x7f del",
	"sep\u2028line", "para\u2029graph", "bad \xff utf8", "\xc3", "trailing \xe2\x82",
	"</script>", "\u00e9\u0301", "\ufeffbom",
}

func TestEncodeMatchesEncodingJSON(t *testing.T) {
	times := []time.Time{
		time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC),
		time.Date(2026, 11, 28, 12, 0, 0, 123456789, time.UTC),
		time.Date(2026, 1, 2, 3, 4, 5, 100000000, time.UTC),
		time.Date(2026, 1, 2, 3, 4, 5, 6, time.FixedZone("x", 3600)),
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
		{},
	}
	for _, s := range encodeStrings {
		for _, id := range []string{"", "c-1", s} {
			for _, at := range times {
				m := mulchat.Message{RoomID: 7, Seq: 0, Sender: mulchat.Sender{ID: 3, Username: s}, Text: s, SentAt: at, ClientMsgID: id}
				checkEncodeMessage(t, &m)
				m.Seq, m.RoomID = 1<<40, -1
				checkEncodeMessage(t, &m)
			}
		}
	}
	for _, at := range times {
		at := at
		for _, rep := range []mulchat.SendReply{
			{Seq: 42, SentAt: &at},
			{Seq: 0, SentAt: &at},
			{Seq: 42},
			{},
			{Error: &mulchat.ErrorBody{Code: "invalid", Message: "bad <input>"}},
		} {
			want, wantErr := json.Marshal(&rep)
			got, err := encodeSendReply(&rep)
			if (err != nil) != (wantErr != nil) || !bytes.Equal(got, want) {
				t.Errorf("encodeSendReply(%+v) = %s, %v; encoding/json: %s, %v", rep, got, err, want, wantErr)
			}
		}
	}
}

func checkEncodeMessage(t *testing.T, m *mulchat.Message) {
	t.Helper()
	want, wantErr := json.Marshal(m)
	got, err := encodeMessage(m)
	if (err != nil) != (wantErr != nil) || !bytes.Equal(got, want) {
		t.Errorf("encodeMessage(%+v) = %s, %v; encoding/json: %s, %v", m, got, err, want, wantErr)
	}
}

func FuzzEncodeMessage(f *testing.F) {
	for _, s := range encodeStrings {
		f.Add(s, s, s, int64(1764331200123456789))
	}
	f.Fuzz(func(t *testing.T, text, username, id string, nanos int64) {
		m := mulchat.Message{RoomID: 1, Sender: mulchat.Sender{ID: 2, Username: username}, Text: text,
			SentAt: time.Unix(0, nanos).UTC(), ClientMsgID: id}
		checkEncodeMessage(t, &m)
	})
}

// FuzzDecodeSend checks that the hand-written reader of send requests
// decodes every valid UTF-8 input as encoding/json does (decodeSend refuses
// invalid UTF-8 before decoding).
func FuzzDecodeSend(f *testing.F) {
	for _, s := range []string{
		`{"text":"hi"}`, `{"text":"hi","client_msg_id":"c1"}`, ` { "client_msg_id" : "c1" , "text" : "hi" } `,
		`{"text":"a","text":"b"}`, `{"Text":"hi"}`, `{"TEXT":"hi","text":"x"}`, `{"text":"a\"b"}`,
		`{"text":"\u00e9"}`, `{"text":1}`, `{"text":null}`, `{"text":"hi"} x`, `{"text":"hi",}`,
		`{}`, `[]`, `null`, `"x"`, `{"text":"hi","other":1}`, "{\"text\":\"a\tb\"}", `{"text":"日本"}`,
		`{"client_msg_id":"x","client_msg_id":"y","text":"t"}`, `{"text":"hi"}{}`, `{"text":"hi"`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if !utf8.Valid(data) {
			return
		}
		var want, got mulchat.SendRequest
		wantErr := json.Unmarshal(data, &want)
		err := decodeSendJSON(data, &got)
		if (err != nil) != (wantErr != nil) {
			t.Fatalf("%q: error %v, encoding/json %v", data, err, wantErr)
		}
		if err == nil && got != want {
			t.Fatalf("%q: %+v, encoding/json %+v", data, got, want)
		}
	})
}

// BenchmarkSendJSON compares the send path's hand-written JSON with
// encoding/json (per send: one request decoded, one message and one reply
// encoded).
func BenchmarkSendJSON(b *testing.B) {
	req := []byte(`{"text":"1764331200123456789"}`)
	at := time.Date(2026, 11, 28, 12, 0, 0, 123456789, time.UTC)
	m := mulchat.Message{RoomID: 17, Sender: mulchat.Sender{ID: 42, Username: "u17-0"}, Text: "1764331200123456789", SentAt: at}
	rep := mulchat.SendReply{Seq: 123456, SentAt: &at}
	b.Run("hand", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var body mulchat.SendRequest
			_ = decodeSendJSON(req, &body)
			_, _ = encodeMessage(&m)
			_, _ = encodeSendReply(&rep)
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var body mulchat.SendRequest
			_ = json.Unmarshal(req, &body)
			_, _ = json.Marshal(&m)
			_, _ = json.Marshal(&rep)
		}
	})
}
