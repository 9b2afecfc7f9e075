package mulchat

import (
	"context"
	"time"
)

// Wire types of the real-time protocol (docs/realtime.md), shared by the
// router (internal/router) and clients (internal/client, the web page).

// SendRequest is the payload of a request on chat.send.<room>.<uid>. Any other
// field, such as a claimed sender, is ignored: the sender is the <uid> token.
type SendRequest struct {
	Text        string `json:"text"`
	ClientMsgID string `json:"client_msg_id,omitempty"`
}

// ClientMsgIDMaxLen bounds SendRequest.ClientMsgID.
const ClientMsgIDMaxLen = 64

// SendReply answers a send: Seq and SentAt, or Error.
type SendReply struct {
	Seq    uint64     `json:"seq,omitempty"`
	SentAt *time.Time `json:"sent_at,omitempty"`
	Error  *ErrorBody `json:"error,omitempty"`
}

// ErrorBody is a coded error as sent to clients over NATS and HTTP.
type ErrorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// HistoryRequest is the payload of chat.api.<uid>.history.
type HistoryRequest struct {
	RoomID int64  `json:"room_id"`
	Before uint64 `json:"before,omitempty"` // 0 = newest
	Limit  int    `json:"limit,omitempty"`
}

// HistoryReply answers it: messages oldest first, or Error.
type HistoryReply struct {
	Messages []Message  `json:"messages"`
	Error    *ErrorBody `json:"error,omitempty"`
}

// PresenceRequest is the payload of chat.api.<uid>.presence: who of a room's
// members is online (has an active NATS session).
type PresenceRequest struct {
	RoomID int64 `json:"room_id"`
}

// PresenceReply answers it: the members, each with Status, or Error.
type PresenceReply struct {
	Members []MemberPresence `json:"members"`
	Error   *ErrorBody       `json:"error,omitempty"`
}

// MemberPresence is one member's presence.
type MemberPresence struct {
	UserID   int64  `json:"user_id"`
	Username string `json:"username"`
	Status   string `json:"status"` // PresenceOnline or PresenceOffline
}

// Event types delivered on chat.user.<uid>.event.
const (
	EventMembership = "membership" // RoomID, UserID, Change (MembershipJoined …)
	EventPresence   = "presence"   // UserID, Username, Status
	EventCredential = "credential" // Change (CredentialRenewed …), ExpiresAt
)

// Presence statuses.
const (
	PresenceOnline  = "online"
	PresenceOffline = "offline"
)

// Credential notices (Event.Change for EventCredential).
const (
	CredentialIssued   = "issued"
	CredentialRenewed  = "renewed"
	CredentialRevokedN = "revoked"
	CredentialExpiring = "expiring"
)

// Event is a notice to one user on chat.user.<uid>.event.
type Event struct {
	Type      string     `json:"type"`
	RoomID    int64      `json:"room_id,omitempty"`
	UserID    int64      `json:"user_id,omitempty"`
	Username  string     `json:"username,omitempty"`
	Change    string     `json:"change,omitempty"`
	Status    string     `json:"status,omitempty"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	At        time.Time  `json:"at"`
}

// PresenceNotifier is told by the tracker when a user's first NATS session
// opens (online) or the last one closes (offline). internal/router implements
// it by sending EventPresence to everyone who shares a room with the user.
type PresenceNotifier interface {
	PresenceChanged(ctx context.Context, userID int64, online bool) error
}

// CredentialNotifier sends a user a credential notice (issued, renewed,
// revoked, expiring). internal/router implements it.
type CredentialNotifier interface {
	CredentialChanged(ctx context.Context, userID int64, change string, expiresAt *time.Time) error
}
