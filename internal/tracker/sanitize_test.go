package tracker

import (
	"context"
	"math"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"

	"github.com/mulchat/mulchat"
	"github.com/mulchat/mulchat/internal/router/rttest"
	"github.com/mulchat/mulchat/internal/sqlstore"
	"github.com/mulchat/mulchat/internal/sqlstore/sqltest"
)

func TestUserAgentCleaned(t *testing.T) {
	long := strings.Repeat("a", 255) + "é"
	cases := []struct {
		name, lang, version string
		want                string
	}{
		{"mulchat-cli", "go", "1.40", "mulchat-cli (go/1.40)"},
		{"", "", "", ""},
		{"x\x00y\x01z\x7f", "go", "1\x00", "xyz (go/1)"},
		{"bad\xff\xfeutf8", "", "", "badutf8"},
		{long, "", "", strings.Repeat("a", 255)},
		{long, "go", "1.40", strings.Repeat("a", 255)},
		{strings.Repeat("é", 200), "", "", strings.Repeat("é", 128)},
	}
	for _, c := range cases {
		got := userAgent(c.name, c.lang, c.version)
		if got != c.want {
			t.Errorf("userAgent(%q, %q, %q) = %q, want %q", c.name, c.lang, c.version, got, c.want)
		}
		if !utf8.ValidString(got) || len(got) > maxFieldBytes || strings.ContainsRune(got, 0) {
			t.Errorf("userAgent(%q, …) = %q: not clean", c.name, got)
		}
	}
}

// TestPoisonedClientNames: clients whose announced names the store would
// refuse (a NUL; over 256 bytes with the cut inside a character) get session
// rows with cleaned user agents, and a normal client connecting alongside
// gets its row too.
func TestPoisonedClientNames(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlstore.DB) {
		st := rttest.NewStack(t, db)
		startTracker(t, st, nil)
		long, nul, plain := st.NewUser(t, "long", 0), st.NewUser(t, "nul", 0), st.NewUser(t, "plain", 0)
		st.Connect(t, long, nats.Name(strings.Repeat("a", 255)+"é"))
		st.Connect(t, nul, nats.Name("evil\x00name"))
		st.Connect(t, plain, nats.Name("plain-client"))
		for _, c := range []struct {
			u    *rttest.StackUser
			want string // the user agent's start
		}{
			{long, strings.Repeat("a", 255)},
			{nul, "evilname ("},
			{plain, "plain-client ("},
		} {
			eventually(t, c.u.Username+"'s session", func() bool { return len(sessions(t, st, c.u.ID, true)) == 1 })
			ua := sessions(t, st, c.u.ID, true)[0].UserAgent
			if !strings.HasPrefix(ua, c.want) || !utf8.ValidString(ua) || len(ua) > maxFieldBytes || strings.ContainsRune(ua, 0) {
				t.Errorf("%s: user agent %q, want a clean one starting %q", c.u.Username, ua, c.want)
			}
		}
	})
}

// TestBatchSurvivesBadEvent: an event the store refuses in a batch costs
// only itself; the other connections of the batch get their rows.
func TestBatchSurvivesBadEvent(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlstore.DB) {
		st := rttest.NewStack(t, db)
		tr, err := New(Config{Store: st.Store, SysConn: st.ServiceConn(t, "tracker", true)})
		if err != nil {
			t.Fatal(err)
		}
		alice, bob, carol, dave := st.NewUser(t, "alice", 0), st.NewUser(t, "bob", 0), st.NewUser(t, "carol", 0), st.NewUser(t, "dave", 0)
		now := time.Now().UTC()
		connect := func(u *rttest.StackUser, server string, cid uint64, name string) *connectEvent {
			ev := &connectEvent{Type: connectEventType, Time: now, Server: serverInfo{ID: server}}
			ev.Client = clientInfo{Start: &now, Host: "127.0.0.1", ID: cid, User: u.Cred.PublicKey, Name: name, Lang: "go", Version: "1"}
			return ev
		}
		tr.writeBatch([]*connectEvent{
			connect(alice, "S1", 1, "x\x00"+strings.Repeat("é", 300)),
			connect(bob, "S1", math.MaxUint64, "out of range cid"), // refused by the store
			connect(carol, "S\x00", 3, "NUL in the server id"),     // refused by PostgreSQL
			connect(dave, "S1", 4, "dave"),
		})
		for _, u := range []*rttest.StackUser{alice, dave} {
			ss := sessions(t, st, u.ID, true)
			if len(ss) != 1 || !utf8.ValidString(ss[0].UserAgent) || strings.ContainsRune(ss[0].UserAgent, 0) {
				t.Errorf("%s: sessions %+v, want one clean row", u.Username, ss)
			}
		}
		if ss := sessions(t, st, bob.ID, true); len(ss) != 0 {
			t.Errorf("bob: %d rows for a refused event", len(ss))
		}
	})
}

// TestReconcileSkipsBadRow: a live connection whose row the store refuses
// does not stop the reconciliation of the others.
func TestReconcileSkipsBadRow(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlstore.DB) {
		st := rttest.NewStack(t, db)
		tr, err := New(Config{Store: st.Store, SysConn: st.ServiceConn(t, "tracker", true)})
		if err != nil {
			t.Fatal(err)
		}
		alice, bob, carol := st.NewUser(t, "alice", 0), st.NewUser(t, "bob", 0), st.NewUser(t, "carol", 0)
		ctx := context.Background()
		// carol has a row for a connection that no longer exists.
		stale := &mulchat.AuthSession{UserID: carol.ID, ClientID: "S1/9", PublicKey: carol.Cred.PublicKey, ServerID: "S1", CID: 9, CreatedAt: time.Now().Add(-time.Hour)}
		if err := st.Store.CreateAuthSession(ctx, stale); err != nil {
			t.Fatal(err)
		}
		now := time.Now().UTC()
		conn := func(u *rttest.StackUser, cid uint64, name string) *connInfo {
			return &connInfo{CID: cid, IP: "127.0.0.1", Start: now, LastActivity: now, Name: name, AuthorizedUser: u.Cred.PublicKey}
		}
		live := map[connKey]liveConn{
			{"S1", math.MaxUint64}: {serverID: "S1", info: conn(bob, math.MaxUint64, "refused")},
			{"S1", 1}:              {serverID: "S1", info: conn(alice, 1, "evil\x00"+strings.Repeat("a", 300))},
		}
		if err := tr.reconcileWith(ctx, now.Add(time.Second), live); err != nil {
			t.Fatalf("reconcile: %v", err)
		}
		if ss := sessions(t, st, alice.ID, true); len(ss) != 1 || strings.ContainsRune(ss[0].UserAgent, 0) || len(ss[0].UserAgent) > maxFieldBytes {
			t.Errorf("alice: %+v, want one clean row", ss)
		}
		if ss := sessions(t, st, carol.ID, true); len(ss) != 0 {
			t.Errorf("carol's stale row is still active")
		}
	})
}
