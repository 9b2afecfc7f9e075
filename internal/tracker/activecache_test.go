package tracker

import (
	"context"
	"sync"
	"testing"

	"github.com/mulchat/mulchat/internal/router/rttest"
	"github.com/mulchat/mulchat/internal/sqlstore/sqltest"
)

// notes records the tracker's presence notices.
type notes struct {
	mu  sync.Mutex
	got []bool
}

func (n *notes) PresenceChanged(_ context.Context, _ int64, online bool) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.got = append(n.got, online)
	return nil
}

func (n *notes) list() []bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]bool(nil), n.got...)
}

// TestOnlineCacheFollowsWrites: the writer's memory of users it saw online
// (Tracker.online) stays right across batches, disconnects, reconciles and
// kicks: one row per connection, online on the first session, offline after
// the last, online again on the next.
func TestOnlineCacheFollowsWrites(t *testing.T) {
	st := rttest.NewStack(t, sqltest.OpenSQLite(t))
	pn := &notes{}
	tr := startTracker(t, st, func(c *Config) { c.Presence = pn })
	u := st.NewUser(t, "cache", 0)
	active := func(n int) func() bool {
		return func() bool { return len(sessions(t, st, u.ID, true)) == n }
	}

	a := st.Connect(t, u)
	eventually(t, "first row", active(1))
	b := st.Connect(t, u)
	eventually(t, "second row", active(2))
	// A reconcile rewrites nothing for live connections with rows, and the
	// next connect is still one row more.
	if err := tr.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	c := st.Connect(t, u)
	eventually(t, "third row", active(3))

	a.Close()
	b.Close()
	c.Close()
	eventually(t, "all closed", active(0))
	eventually(t, "offline notice", func() bool { return len(pn.list()) >= 2 })
	d := st.Connect(t, u)
	eventually(t, "fourth row", active(1))
	eventually(t, "online again", func() bool { return len(pn.list()) >= 3 })
	d.Close()
	eventually(t, "closed again", active(0))
	eventually(t, "offline again", func() bool { return len(pn.list()) >= 4 })

	got := pn.list()
	want := []bool{true, false, true, false}
	if len(got) != len(want) {
		t.Fatalf("presence notices %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("presence notices %v, want %v", got, want)
		}
	}

	// A kick closes a row outside the writer; the connections after it
	// still get one row each.
	e := st.Connect(t, u)
	eventually(t, "fifth row", active(1))
	if err := tr.KickSession(context.Background(), u.ID, sessions(t, st, u.ID, true)[0].ID); err != nil {
		t.Fatal(err)
	}
	eventually(t, "kicked", active(0))
	_ = e
	st.Connect(t, u)
	eventually(t, "sixth row", active(1))
	if all := sessions(t, st, u.ID, false); len(all) != 6 {
		t.Fatalf("%d rows for 6 connections", len(all))
	}
}
