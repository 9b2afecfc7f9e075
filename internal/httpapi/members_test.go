package httpapi_test

import (
	"fmt"
	"net/http"
	"sync"
	"testing"

	"github.com/mulchat/mulchat"
	"github.com/mulchat/mulchat/internal/sqlstore"
	"github.com/mulchat/mulchat/internal/sqlstore/sqltest"
)

// TestConcurrentOwnersLeaveKeepsOwner: the two owners of a room leave (or
// remove each other) at the same moment, many times over. Each time exactly
// one request succeeds, the room keeps exactly one owner, and only the
// committed removal is notified.
func TestConcurrentOwnersLeaveKeepsOwner(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlstore.DB) {
		e := newEnv(t, db)
		alice, aliceID := e.register(t, "alice")
		bob, bobID := e.register(t, "bob")
		type owner struct {
			token string
			id    int64
		}
		pair := [2]owner{{alice, aliceID}, {bob, bobID}}

		const rounds = 20
		for i := range rounds {
			// Even rounds: both leave. Odd rounds: each removes the other.
			removeOther := i%2 == 1
			r := expect(t, e.do(t, "POST", "/api/v1/rooms", alice, map[string]any{"name": fmt.Sprintf("room-%d", i)}), 201, "create room")
			rid := int64(r.body["id"].(float64))
			expect(t, e.do(t, "POST", fmt.Sprintf("/api/v1/rooms/%d/members", rid), alice, map[string]any{"username": "bob", "role": "owner"}), 201, "add bob as owner")
			before := len(e.notified.list())

			start := make(chan struct{})
			statuses := make([]int, 2)
			errs := make([]error, 2)
			var wg sync.WaitGroup
			for j, o := range pair {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					if removeOther {
						statuses[j], errs[j] = e.status("DELETE", fmt.Sprintf("/api/v1/rooms/%d/members/%d", rid, pair[1-j].id), o.token)
					} else {
						statuses[j], errs[j] = e.status("POST", fmt.Sprintf("/api/v1/rooms/%d/leave", rid), o.token)
					}
				}()
			}
			close(start)
			wg.Wait()
			for _, err := range errs {
				if err != nil {
					t.Fatal(err)
				}
			}

			// The loser of a leave race is refused as the last owner (409);
			// the loser of a removal race may instead find itself already
			// removed and so no longer an owner (403).
			ok := 0
			for _, s := range statuses {
				switch {
				case s == 204:
					ok++
				case s == 409, removeOther && s == 403:
				default:
					t.Fatalf("round %d: statuses %v", i, statuses)
				}
			}
			if ok != 1 {
				t.Fatalf("round %d: statuses %v, want exactly one 204", i, statuses)
			}
			owners := 0
			members, err := db.ListRoomMembers(t.Context(), rid)
			if err != nil {
				t.Fatal(err)
			}
			for _, mem := range members {
				if mem.Role == mulchat.RoleOwner {
					owners++
				}
			}
			if owners != 1 || len(members) != 1 {
				t.Fatalf("round %d: %d members, %d owners; want one owner left", i, len(members), owners)
			}
			want := mulchat.MembershipLeft
			if removeOther {
				want = mulchat.MembershipRemoved
			}
			if got := e.notified.list()[before:]; len(got) != 1 || got[0] != want {
				t.Fatalf("round %d: notifications %v, want [%s]", i, got, want)
			}
		}
	})
}

// status sends a bodiless request and returns the response status. Unlike
// do it reports a transport error instead of failing the test, so that it
// may run on a goroutine other than the test's.
func (e *env) status(method, path, token string) (int, error) {
	req, err := http.NewRequest(method, e.srv.URL+path, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}
