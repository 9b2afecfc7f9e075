package mulchat

import "context"

// The services below are implemented by internal/router and internal/tracker
// and consumed by the HTTP API, so the API never depends on concrete types.

// MessageHistory answers history requests for members of a room.
type MessageHistory interface {
	// History returns up to limit messages of roomID with seq < before
	// (before == 0: the newest), oldest first, if userID is a member;
	// EFORBIDDEN otherwise.
	History(ctx context.Context, roomID, userID int64, before uint64, limit int) ([]Message, error)
}

// Membership changes announced to every router instance (cache
// invalidation) and to the affected user (an event on chat.user.<id>.event).
const (
	MembershipJoined  = "joined"
	MembershipLeft    = "left"
	MembershipRemoved = "removed"
	MembershipDeleted = "room_deleted"
)

// MembershipNotifier is told after a membership change has been committed.
type MembershipNotifier interface {
	MembershipChanged(ctx context.Context, roomID, userID int64, change string) error
}

// SessionKicker disconnects NATS sessions.
type SessionKicker interface {
	// KickSession disconnects one session of userID; ENOTFOUND if the session
	// is not the user's or not active.
	KickSession(ctx context.Context, userID, sessionID int64) error
	// KickUser disconnects every live connection of the user's key.
	KickUser(ctx context.Context, userID int64, publicKey string) error
}
