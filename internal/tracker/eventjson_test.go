package tracker

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/mulchat/mulchat/internal/router/rttest"
	"github.com/mulchat/mulchat/internal/sqlstore/sqltest"
)

// checkDecode fails unless decodeEvent gives what json.Unmarshal gives, or
// leaves data to it (errFallback). It reports whether the fast path took it.
func checkDecode(t *testing.T, data []byte) bool {
	t.Helper()
	var fast, std connectEvent
	ferr := decodeEvent(data, &fast)
	serr := json.Unmarshal(data, &std)
	if ferr != nil {
		if ferr != errFallback {
			t.Fatalf("decodeEvent(%q) = %v, want nil or errFallback", data, ferr)
		}
		return false
	}
	if serr != nil {
		t.Fatalf("decodeEvent(%q) accepted what encoding/json refuses (%v): %+v", data, serr, fast)
	}
	if !reflect.DeepEqual(fast, std) {
		t.Fatalf("decodeEvent(%q) =\n%+v, encoding/json gives\n%+v", data, fast, std)
	}
	return true
}

// TestDecodeServerEvents: the advisories a real server sends (connect and
// disconnect, client names needing escapes) decode as with encoding/json,
// plain ones on the fast path.
func TestDecodeServerEvents(t *testing.T) {
	st := rttest.NewStack(t, sqltest.OpenSQLite(t))
	sys := st.ServiceConn(t, "watch", true)
	sub, err := sys.SubscribeSync("$SYS.ACCOUNT." + st.Authority.ChatAccountPublicKey() + ".*")
	if err != nil {
		t.Fatal(err)
	}
	if err := sys.Flush(); err != nil {
		t.Fatal(err)
	}
	u := st.NewUser(t, "alice", 0)
	names := []string{"plain", `quote " and \ backslash`, "<html> & é 😀", "tab\tnewline\n", "\x00\x01"}
	for _, name := range names {
		nc, err := st.TryConnect(u, nats.Name(name))
		if err != nil {
			t.Fatal(err)
		}
		nc.Close()
	}
	fastPath := 0
	for range 2 * len(names) {
		m, err := sub.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if checkDecode(t, m.Data) {
			fastPath++
		}
		var ev connectEvent
		if err := decodeEvent(m.Data, &ev); err == nil && (ev.Client.JWT == "" || ev.Client.Start == nil || ev.Client.ID == 0 || ev.Server.ID == "") {
			t.Fatalf("fast path left fields empty: %+v", ev)
		}
	}
	if fastPath < 2*len(names) {
		t.Fatalf("%d of %d advisories on the fast path, want all (escaped strings are decoded in place)", fastPath, 2*len(names))
	}
}

var decodeCases = []string{
	`{}`,
	`null`,
	` {"type":"io.nats.server.advisory.v1.client_connect","timestamp":"2026-11-28T10:00:00.123456789Z"} `,
	`{"type":"x","server":{"name":"n","id":"S1","seq":12,"jetstream":true,"tags":["a","b"],"flags":null}}`,
	`{"client":{"start":"2026-11-28T10:00:00+02:00","id":18446744073709551615,"jwt":"a.b.c","rtt":-1.5e3,"alts":[],"tags":[{"x":[1,2,{}]}]}}`,
	`{"client":{"start":null,"id":null,"name":null}}`,
	`{"client":{"name":"a\"b\\c\u00e9\ud83d\ude00\/"}}`,
	`{"reason":"Client Closed","sent":{"msgs":1,"bytes":2},"received":{"msgs":0,"bytes":0}}`,
	`{"type":"a","type":"b","server":{"id":"1"},"server":{"name":"2"}}`,
	`{"client":{"start":"2026-11-28T10:00:00Z"},"client":{"start":"2026-11-28T11:00:00Z"}}`,
	// Left to encoding/json (case-insensitive keys, escaped keys, invalid
	// UTF-8, wrong types, malformed input).
	`{"TYPE":"x"}`,
	`{"Client":{"ID":3}}`,
	`{"ty\u0070e":"x"}`,
	"{\"reason\":\"bad \xff utf8\"}",
	`{"client":{"id":"3"}}`,
	`{"client":{"id":1.5}}`,
	`{"client":{"id":-1}}`,
	`{"client":{"id":01}}`,
	`{"type":1}`,
	`{"timestamp":"yesterday"}`,
	`{"timestamp":"2026-11-28T24:00:00Z"}`,
	`{"type":"x"} trailing`,
	`{"type":"x",}`,
	`{"skip":"\x"}`,
	`{"skip":"\u12g4"}`,
	`{"skip":[1,]}`,
	`{"skip":tru}`,
	`{"skip":-}`,
	`{"skip":1.}`,
	`{"skip":1e}`,
	"{\"skip\":\"ctl \x01\"}",
	`[1,2]`,
	`{"type":"x"`,
	`{"type":"x`,
	`"x"`,
	"{\"a\":" + strings.Repeat("[", 100) + strings.Repeat("]", 100) + "}",
}

func TestDecodeEventCases(t *testing.T) {
	for _, c := range decodeCases {
		checkDecode(t, []byte(c))
	}
}

// FuzzDecodeEvent: whatever the input, the fast path agrees with
// encoding/json or leaves the input to it.
func FuzzDecodeEvent(f *testing.F) {
	for _, c := range decodeCases {
		f.Add([]byte(c))
	}
	f.Fuzz(func(t *testing.T, data []byte) { checkDecode(t, data) })
}
