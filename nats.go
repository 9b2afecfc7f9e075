package mulchat

import (
	"strconv"
	"time"
)

// NATSOperator is the operator identity that signs account JWTs. Seeds are
// encrypted at rest with the master key.
type NATSOperator struct {
	ID            int64
	Name          string
	PublicKey     string
	JWT           string
	SeedEncrypted []byte
	CreatedAt     time.Time
	UpdatedAt     time.Time
}

// NATSAccount is a NATS account: its public key, its JWT (signed by the
// operator, carrying the revocation list) and its keys, encrypted at rest.
type NATSAccount struct {
	ID          int64
	Name        string
	PublicKey   string
	Description string
	JWT         string
	// SeedEncrypted is the account identity seed; SigningKeyEncrypted the
	// signing key seed that signs user JWTs. Either is nil for an account
	// whose keys mulchat does not hold (imported public keys only).
	SeedEncrypted       []byte
	SigningPublicKey    string
	SigningKeyEncrypted []byte
	CreatedAt           time.Time
	UpdatedAt           time.Time
}

// Well-known account names.
const (
	SystemAccountName = "SYS"
	ChatAccountName   = "chat"
)

// AuthSession is one NATS connection of a user, kept by the tracker from the
// server's connect/disconnect events (nats_auth_sessions).
type AuthSession struct {
	ID           int64
	UserID       int64
	ClientID     string // "<server_id>/<cid>"
	IPAddress    string
	UserAgent    string
	PublicKey    string
	ServerID     string
	CID          uint64
	CreatedAt    time.Time
	LastActivity time.Time
	ExpiresAt    *time.Time
	Active       bool
	ClosedAt     *time.Time
	CloseReason  string
}

// Message is a chat message as delivered and as returned by history.
type Message struct {
	RoomID      int64     `json:"room_id"`
	Seq         uint64    `json:"seq"`
	Sender      Sender    `json:"sender"`
	Text        string    `json:"text"`
	SentAt      time.Time `json:"sent_at"`
	ClientMsgID string    `json:"client_msg_id,omitempty"`
}

// Sender identifies the author of a message. It is taken from the subject the
// message arrived on, never from the payload.
type Sender struct {
	ID       int64  `json:"id"`
	Username string `json:"username"`
}

// Message text limits.
const MessageMaxChars = 4000

// NATS subjects. Identifiers in subjects are numeric ids, never user input.
func SendSubject(roomID, userID int64) string {
	return "chat.send." + itoa(roomID) + "." + itoa(userID)
}
func RoomSubject(roomID int64) string { return "chat.room." + itoa(roomID) }
func UserSubject(userID int64, kind string) string {
	return "chat.user." + itoa(userID) + "." + kind
}
func APISubject(userID int64, op string) string { return "chat.api." + itoa(userID) + "." + op }
func UserInboxPrefix(userID int64) string       { return "_INBOX." + itoa(userID) }

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
