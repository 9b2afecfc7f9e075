package router

import (
	"context"
	"encoding/json"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/mulchat/mulchat"
)

// invalidation is the payload of InvalidateSubject and of the stream's
// membership markers.
type invalidation struct {
	RoomID int64  `json:"room_id"`
	UserID int64  `json:"user_id,omitempty"`
	Change string `json:"change"`
}

func (r *Router) handleInvalidate(msg *nats.Msg) {
	var inv invalidation
	if json.Unmarshal(msg.Data, &inv) != nil {
		return
	}
	switch {
	case inv.RoomID > 0:
		r.cache.invalidate(inv.RoomID, invalidationUser(inv.UserID, inv.Change))
	case inv.Change == changeUser && inv.UserID > 0:
		r.cache.invalidateUser(inv.UserID)
	}
}

// invalidationUser is whose entries a change makes stale: a deleted room
// stales everyone's (non-members were told the room exists).
func invalidationUser(userID int64, change string) int64 {
	if change == mulchat.MembershipDeleted {
		return 0
	}
	return userID
}

// MembershipChanged announces a committed membership change: it drops the
// cached membership in this instance at once, then does what
// Notifier.MembershipChanged does (every other instance, the stream marker,
// the user's event). userID 0 means the whole room (for MembershipDeleted).
// It implements mulchat.MembershipNotifier.
func (r *Router) MembershipChanged(ctx context.Context, roomID, userID int64, change string) error {
	if roomID <= 0 {
		return mulchat.Errorf(mulchat.EINVALID, "room id is required")
	}
	r.cache.invalidate(roomID, invalidationUser(userID, change))
	return r.notifier.MembershipChanged(ctx, roomID, userID, change)
}

// UserChanged drops userID's cached row in this instance at once and in
// every other one over NATS (see Notifier.UserChanged).
func (r *Router) UserChanged(ctx context.Context, userID int64) error {
	if userID <= 0 {
		return mulchat.Errorf(mulchat.EINVALID, "user id is required")
	}
	r.cache.invalidateUser(userID)
	return r.notifier.UserChanged(ctx, userID)
}

// PresenceChanged tells everyone who shares a room with userID that the user
// came online or went offline. It implements mulchat.PresenceNotifier.
func (r *Router) PresenceChanged(ctx context.Context, userID int64, online bool) error {
	u, err := r.cache.user(ctx, userID)
	if err != nil {
		return err
	}
	rooms, err := r.store.ListUserRoomIDs(ctx, userID)
	if err != nil {
		return err
	}
	status := mulchat.PresenceOffline
	if online {
		status = mulchat.PresenceOnline
	}
	ev := &mulchat.Event{Type: mulchat.EventPresence, UserID: userID, Username: u.Username, Status: status}
	seen := map[int64]bool{userID: true}
	for _, roomID := range rooms {
		members, err := r.cache.roomMembers(ctx, roomID)
		if err != nil {
			return err
		}
		for _, uid := range members {
			if !seen[uid] {
				seen[uid] = true
				r.publishEvent(uid, ev)
			}
		}
	}
	return nil
}

// CredentialChanged sends the user a credential notice. It implements
// mulchat.CredentialNotifier.
func (r *Router) CredentialChanged(ctx context.Context, userID int64, change string, expiresAt *time.Time) error {
	r.publishEvent(userID, &mulchat.Event{Type: mulchat.EventCredential, UserID: userID, Change: change, ExpiresAt: expiresAt})
	return r.flush(ctx)
}

func (r *Router) publishEvent(userID int64, ev *mulchat.Event) {
	if err := publishUserEvent(r.nc, r.now(), userID, ev); err != nil {
		r.log.Warn("publish event failed", "user_id", userID, "err", err)
	}
}

// publishUserEvent publishes ev on the user's event subject, stamped with now
// when it has no time.
func publishUserEvent(nc *nats.Conn, now time.Time, userID int64, ev *mulchat.Event) error {
	if ev.At.IsZero() {
		ev.At = now.UTC()
	}
	data, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	return nc.Publish(mulchat.UserSubject(userID, "event"), data)
}
