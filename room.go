package mulchat

import (
	"time"
	"unicode/utf8"
)

// Room is a chat room. Its NATS subjects use the numeric ID, never the name.
type Room struct {
	ID            int64
	Name          string // a validated slug, unique
	SubjectPrefix string // "chat.room.<id>"
	Description   string
	AccountID     int64 // FK nats_accounts; 0 = NULL
	IsPublic      bool
	CreatedAt     time.Time
	UpdatedAt     time.Time
}

// Membership roles (nats_user_rooms.role).
const (
	RoleOwner  = "owner"
	RoleMember = "member"
	RoleReader = "reader" // may read, may not send
)

// Member is one row of nats_user_rooms with the member's username.
type Member struct {
	RoomID   int64
	UserID   int64
	Username string
	Role     string
	JoinedAt time.Time
}

// CanSend reports whether the role may post messages.
func (m *Member) CanSend() bool { return m.Role == RoleOwner || m.Role == RoleMember }

const (
	RoomNameMinLen        = 2
	RoomNameMaxLen        = 64
	RoomDescriptionMaxLen = 1000
)

// ValidateRoomName checks a new room name: a slug of 2–64 of [a-z0-9_-], starting
// with a letter or digit. Room names never appear in NATS subjects, but keeping
// them plain makes them safe in URLs, logs and terminals.
func ValidateRoomName(name string) error {
	if len(name) < RoomNameMinLen || len(name) > RoomNameMaxLen {
		return Errorf(EINVALID, "room name must be %d to %d characters", RoomNameMinLen, RoomNameMaxLen)
	}
	for i, r := range name {
		ok := r >= 'a' && r <= 'z' || r >= '0' && r <= '9'
		if i > 0 {
			ok = ok || r == '-' || r == '_'
		}
		if !ok {
			return Errorf(EINVALID, "room name may contain only a-z, 0-9, '-' and '_', and must start with a letter or digit")
		}
	}
	return nil
}

// ValidateRoomDescription checks a room description's length and encoding.
func ValidateRoomDescription(d string) error {
	if !utf8.ValidString(d) {
		return Errorf(EINVALID, "description must be valid UTF-8")
	}
	if utf8.RuneCountInString(d) > RoomDescriptionMaxLen {
		return Errorf(EINVALID, "description must be at most %d characters", RoomDescriptionMaxLen)
	}
	for _, r := range d {
		if r == 0 {
			return Errorf(EINVALID, "description must not contain NUL")
		}
	}
	return nil
}

// Permission is an explicit extra grant written into a user's JWT (bots,
// integrations). Room access itself is membership, checked by the router.
type Permission struct {
	ID        int64
	UserID    int64
	RoomID    int64 // 0 = NULL
	Type      string
	Subject   string
	CreatedAt time.Time
	UpdatedAt time.Time
}

// Permission types (nats_permissions.permission_type), lower case in mulchat's
// schema; the legacy PostgreSQL enum used PUB, SUB, BOTH.
const (
	PermPub  = "pub"
	PermSub  = "sub"
	PermBoth = "both"
)
