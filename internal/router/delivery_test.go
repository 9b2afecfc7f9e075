package router

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mulchat/mulchat"
	"github.com/mulchat/mulchat/internal/router/rttest"
	"github.com/mulchat/mulchat/internal/sqlstore"
	"github.com/mulchat/mulchat/internal/sqlstore/sqltest"
)

// TestCrashSafety stops the only deliverer at a point of its work and starts
// another: every stored message reaches every member, in order, once (after
// the client-side seq check where the crash came after the fan-out).
func TestCrashSafety(t *testing.T) {
	cases := []struct {
		name string
		// crash installs the hook that crashes the first deliverer at seq 3.
		crash func(r *Router, crashed func())
		// rawDuplicatesAllowed: messages fanned out before the crash but not
		// acked are delivered again (same seq), and dropped by clients.
		rawDuplicatesAllowed bool
	}{
		{"between store and delivery", func(r *Router, crashed func()) {
			r.hookBeforeFanout = func(seq uint64) bool {
				if seq == 3 {
					crashed()
					return true
				}
				return false
			}
		}, false},
		{"after delivery before ack", func(r *Router, crashed func()) {
			r.hookBeforeAck = func(seq uint64) bool {
				if seq == 3 {
					crashed()
					return true
				}
				return false
			}
		}, true},
		{"graceful restart", nil, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sqltest.ForEachDB(t, func(t *testing.T, db *sqlstore.DB) {
				st := rttest.NewStack(t, db)
				// Sends go through a send-only instance that keeps running.
				startRouter(t, st, func(c *Config) { c.DisableDelivery = true })
				alice, bob := st.NewUser(t, "alice", 0), st.NewUser(t, "bob", 0)
				room := st.NewRoom(t, "crash", alice, bob)
				ca, cb := connectClient(t, st, alice), connectClient(t, st, bob)

				nc, err := st.TryServiceConn("deliverer-1", false)
				if err != nil {
					t.Fatal(err)
				}
				crashedCh := make(chan struct{})
				var once sync.Once
				crashed := func() {
					once.Do(func() {
						// A crash: the connection drops, nothing is acked.
						go nc.Close()
						close(crashedCh)
					})
				}
				first := startRouterHooked(t, st, nc, func(c *Config) { c.DeliveryOnly = true }, func(r *Router) {
					if tc.crash != nil {
						tc.crash(r, crashed)
					}
				})

				var seqs []uint64
				for i := 1; i <= 5; i++ {
					seqs = append(seqs, ca.mustSend(room.ID, fmt.Sprint("m", i)))
				}
				if tc.crash != nil {
					select {
					case <-crashedCh:
					case <-time.After(wait):
						t.Fatal("deliverer did not reach the crash point")
					}
				} else {
					ca.waitMessages(2)
					if err := first.Close(); err != nil {
						t.Fatal(err)
					}
					nc.Close()
				}
				for i := 6; i <= 8; i++ {
					seqs = append(seqs, ca.mustSend(room.ID, fmt.Sprint("m", i)))
				}

				second := startRouter(t, st, func(c *Config) { c.DeliveryOnly = true })
				for _, c := range []*client{ca, cb} {
					c.waitFor("all messages", func(m []mulchat.Message, _ []mulchat.Event) bool {
						d := dedup(m)
						return len(d) > 0 && d[len(d)-1].Seq == seqs[len(seqs)-1]
					})
					barrier(t, second, c)
					raw := c.messages()
					got := dedup(raw)
					if len(got) != len(seqs) {
						t.Fatalf("%s got %v after dedup, want %d messages", c.u.Username, texts(got), len(seqs))
					}
					for i, m := range got {
						if m.Seq != seqs[i] || m.Text != fmt.Sprint("m", i+1) {
							t.Fatalf("%s message %d = seq %d %q, want seq %d m%d", c.u.Username, i, m.Seq, m.Text, seqs[i], i+1)
						}
					}
					if !tc.rawDuplicatesAllowed && len(raw) != len(got) {
						t.Fatalf("%s received %d deliveries for %d messages: %v", c.u.Username, len(raw), len(got), texts(raw))
					}
				}
			})
		})
	}
}

// TestTwoInstances runs two full routers on one database and one NATS.
func TestTwoInstances(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlstore.DB) {
		st := rttest.NewStack(t, db)
		// One registry for both, as two routers in one process would share.
		reg := prometheus.NewRegistry()
		a := startRouter(t, st, func(c *Config) { c.Registerer = reg })
		b := startRouter(t, st, func(c *Config) { c.Registerer = reg })
		alice, bob, carol := st.NewUser(t, "alice", 0), st.NewUser(t, "bob", 0), st.NewUser(t, "carol", 0)
		room := st.NewRoom(t, "twins", alice, bob)
		ca, cb := connectClient(t, st, alice), connectClient(t, st, bob)

		t.Run("a send handled by either is delivered exactly once", func(t *testing.T) {
			const n = 40
			var seqs []uint64
			for i := 0; i < n; i++ {
				c := ca
				if i%2 == 1 {
					c = cb
				}
				seqs = append(seqs, c.mustSend(room.ID, fmt.Sprint("t", i)))
			}
			for _, c := range []*client{ca, cb} {
				c.waitMessages(n)
				barrier(t, a, c)
				barrier(t, b, c)
				got := c.messages()
				if len(got) != n {
					t.Fatalf("%s got %d deliveries, want %d", c.u.Username, len(got), n)
				}
				for i, m := range got {
					if m.Seq != seqs[i] {
						t.Fatalf("%s delivery %d has seq %d, want %d", c.u.Username, i, m.Seq, seqs[i])
					}
				}
			}
		})

		t.Run("a membership change through A is enforced by B within a second", func(t *testing.T) {
			ctx := context.Background()
			// B caches carol as a non-member.
			if _, err := b.History(ctx, room.ID, carol.ID, 0, 1); mulchat.ErrorCode(err) != mulchat.EFORBIDDEN {
				t.Fatalf("B history for carol: %v, want forbidden", err)
			}
			if err := st.Store.AddRoomMember(ctx, room.ID, carol.ID, mulchat.RoleMember); err != nil {
				t.Fatal(err)
			}
			if err := a.MembershipChanged(ctx, room.ID, carol.ID, mulchat.MembershipJoined); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(time.Second)
			for {
				_, err := b.History(ctx, room.ID, carol.ID, 0, 1)
				if err == nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("B still refuses carol a second after the change: %v", err)
				}
				time.Sleep(5 * time.Millisecond)
			}
			// And back: removal through A.
			if err := st.Store.RemoveRoomMember(ctx, room.ID, carol.ID); err != nil {
				t.Fatal(err)
			}
			if err := a.MembershipChanged(ctx, room.ID, carol.ID, mulchat.MembershipRemoved); err != nil {
				t.Fatal(err)
			}
			deadline = time.Now().Add(time.Second)
			for {
				_, err := b.History(ctx, room.ID, carol.ID, 0, 1)
				if mulchat.ErrorCode(err) == mulchat.EFORBIDDEN {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("B still admits carol a second after removal: %v", err)
				}
				time.Sleep(5 * time.Millisecond)
			}
		})
	})
}
