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
	if json.Unmarshal(msg.Data, &inv) != nil || inv.RoomID <= 0 {
		return
	}
	r.cache.invalidate(inv.RoomID, invalidationUser(inv.UserID, inv.Change))
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
// cached membership in this and (over NATS) every other instance, stores a
// marker in the CHAT stream so delivery switches to the new member list
// exactly between the messages stored before and after the change, and sends
// the affected user a membership event. userID 0 means the whole room (for
// MembershipDeleted). It implements mulchat.MembershipNotifier.
func (r *Router) MembershipChanged(ctx context.Context, roomID, userID int64, change string) error {
	if roomID <= 0 {
		return mulchat.Errorf(mulchat.EINVALID, "room id is required")
	}
	r.cache.invalidate(roomID, invalidationUser(userID, change))
	data, err := json.Marshal(&invalidation{RoomID: roomID, UserID: userID, Change: change})
	if err != nil {
		return err
	}
	if err := r.nc.Publish(InvalidateSubject, data); err != nil {
		return mulchat.WrapError(mulchat.EUNAVAILABLE, err, "announce membership change")
	}
	if _, err := r.js.Publish(ctx, mulchat.RoomSubject(roomID)+markerSuffix, data); err != nil {
		return mulchat.WrapError(mulchat.EUNAVAILABLE, err, "store membership marker")
	}
	if userID > 0 {
		r.publishEvent(userID, &mulchat.Event{Type: mulchat.EventMembership, RoomID: roomID, UserID: userID, Change: change})
	}
	if err := r.flush(ctx); err != nil {
		return mulchat.WrapError(mulchat.EUNAVAILABLE, err, "announce membership change")
	}
	return nil
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
	if ev.At.IsZero() {
		ev.At = r.now().UTC()
	}
	data, err := json.Marshal(ev)
	if err != nil {
		return
	}
	if err := r.nc.Publish(mulchat.UserSubject(userID, "event"), data); err != nil {
		r.log.Warn("publish event failed", "user_id", userID, "err", err)
	}
}
