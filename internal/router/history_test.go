package router

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/mulchat/mulchat"
	"github.com/mulchat/mulchat/internal/router/rttest"
	"github.com/mulchat/mulchat/internal/sqlstore"
	"github.com/mulchat/mulchat/internal/sqlstore/sqltest"
)

// TestHistoryPaging stores a busy room interleaved with a quiet one (and
// membership markers) and pages both backwards: newest page first, each page
// oldest first, every message exactly once.
func TestHistoryPaging(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlstore.DB) {
		st := rttest.NewStack(t, db)
		r := startRouter(t, st, nil)
		ctx := context.Background()
		alice, bob := st.NewUser(t, "alice", 0), st.NewUser(t, "bob", 0)
		busy := st.NewRoom(t, "busy", alice, bob)
		quiet := st.NewRoom(t, "quiet", alice)
		ca := connectClient(t, st, alice)

		var busySeqs, quietSeqs []uint64
		for i := 0; i < 230; i++ {
			busySeqs = append(busySeqs, ca.mustSend(busy.ID, fmt.Sprint("b", i)))
			if i%37 == 0 {
				quietSeqs = append(quietSeqs, ca.mustSend(quiet.ID, fmt.Sprint("q", i)))
			}
			if i == 100 {
				if err := r.MembershipChanged(ctx, busy.ID, bob.ID, mulchat.MembershipJoined); err != nil {
					t.Fatal(err)
				}
			}
		}
		for _, tc := range []struct {
			room  *mulchat.Room
			seqs  []uint64
			limit int
		}{{busy, busySeqs, 50}, {busy, busySeqs, 7}, {quiet, quietSeqs, 2}, {quiet, quietSeqs, 100}} {
			t.Run(fmt.Sprintf("%s limit %d", tc.room.Name, tc.limit), func(t *testing.T) {
				var before uint64
				var all []uint64
				for page := 0; ; page++ {
					msgs, err := r.History(ctx, tc.room.ID, alice.ID, before, tc.limit)
					if err != nil {
						t.Fatal(err)
					}
					if len(msgs) == 0 {
						break
					}
					if len(msgs) > tc.limit {
						t.Fatalf("page %d has %d messages, limit %d", page, len(msgs), tc.limit)
					}
					for i := 1; i < len(msgs); i++ {
						if msgs[i].Seq <= msgs[i-1].Seq {
							t.Fatalf("page %d not oldest first", page)
						}
					}
					for _, m := range msgs {
						if m.RoomID != tc.room.ID || m.Sender.Username != "alice" {
							t.Fatalf("message %+v from the wrong room or sender", m)
						}
					}
					ids := make([]uint64, len(msgs))
					for i, m := range msgs {
						ids[i] = m.Seq
					}
					all = append(ids, all...)
					before = msgs[0].Seq
				}
				if fmt.Sprint(all) != fmt.Sprint(tc.seqs) {
					t.Fatalf("paged %d messages, want %d\n got %v\nwant %v", len(all), len(tc.seqs), all, tc.seqs)
				}
			})
		}
		t.Run("over NATS", func(t *testing.T) {
			data, _ := json.Marshal(mulchat.HistoryRequest{RoomID: busy.ID, Limit: 3})
			m, err := ca.nc.Request(mulchat.APISubject(alice.ID, "history"), data, wait)
			if err != nil {
				t.Fatal(err)
			}
			var rep mulchat.HistoryReply
			if err := json.Unmarshal(m.Data, &rep); err != nil || rep.Error != nil {
				t.Fatalf("reply %s", m.Data)
			}
			if len(rep.Messages) != 3 || rep.Messages[2].Seq != busySeqs[len(busySeqs)-1] {
				t.Fatalf("got %+v, want the 3 newest", rep.Messages)
			}
		})
		t.Run("empty room", func(t *testing.T) {
			empty := st.NewRoom(t, "empty", alice)
			msgs, err := r.History(ctx, empty.ID, alice.ID, 0, 10)
			if err != nil || len(msgs) != 0 {
				t.Fatalf("got %v, %v", msgs, err)
			}
		})
		t.Run("unknown room", func(t *testing.T) {
			_, err := r.History(ctx, 9999, alice.ID, 0, 10)
			if mulchat.ErrorCode(err) != mulchat.ENOTFOUND {
				t.Fatalf("err %v, want not found", err)
			}
		})
	})
}

// TestAppendWithSeq: the splice gives the same message as decoding and
// encoding.
func TestAppendWithSeq(t *testing.T) {
	m := mulchat.Message{RoomID: 12, Sender: mulchat.Sender{ID: 3, Username: "a\"b"}, Text: `"seq":0, tricky`, ClientMsgID: "c"}
	stored, _ := json.Marshal(&m)
	for _, data := range [][]byte{stored, []byte(`{"text":"old layout","room_id":12,"sender":{"id":3,"username":"x"}}`)} {
		out, ok := appendWithSeq(nil, data, 12, 987654)
		if !ok {
			t.Fatalf("%s: not decodable", data)
		}
		var got mulchat.Message
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("%s: %v", data, err)
		}
		if got.Seq != 987654 || got.RoomID != 12 {
			t.Fatalf("got %+v", got)
		}
	}
	if _, ok := appendWithSeq(nil, []byte("not json"), 1, 1); ok {
		t.Fatal("undecodable input accepted")
	}
}
