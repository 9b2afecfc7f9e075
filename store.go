package mulchat

import (
	"context"
	"time"
)

// Store is mulchat's persistent state. internal/sqlstore implements it on SQLite
// and PostgreSQL with identical behaviour. Methods return *Error values with
// codes: ENOTFOUND when a row does not exist (never a nil result with a nil
// error), ECONFLICT on a unique violation, EINVALID on a check or foreign-key
// violation.
type Store interface {
	Queries
	// InTx runs fn in one transaction: fn's Queries see and write only inside
	// it; the transaction commits when fn returns nil and rolls back otherwise.
	// On SQLite the transaction takes the write lock at its start, so two
	// concurrent InTx calls serialise instead of failing with SQLITE_BUSY.
	InTx(ctx context.Context, fn func(q Queries) error) error
	Ping(ctx context.Context) error
	Close() error
}

// Queries is every read and write of the store.
type Queries interface {
	// Users.
	CreateUser(ctx context.Context, u *User) error // sets ID and CreatedAt
	UserByID(ctx context.Context, id int64) (*User, error)
	UserByUsername(ctx context.Context, username string) (*User, error)
	UserByNATSPublicKey(ctx context.Context, publicKey string) (*User, error)
	ListUsers(ctx context.Context) ([]*User, error)
	UpdateUserActive(ctx context.Context, id int64, active bool) error
	UpdateUserPassword(ctx context.Context, id int64, hashedPassword string) error

	// The user's NATS credential on the user row: the query methods the
	// migration guide names for the new structure.
	GetUserNATSCredential(ctx context.Context, userID int64) (NATSCredential, error)
	// UpdateUserNATSCredential writes all seven users.nats_* columns, except
	// that a later recorded expiry of the same key, unrevoked, is kept.
	UpdateUserNATSCredential(ctx context.Context, userID int64, c NATSCredential) error
	// ExpireUserNATSCredential sets nats_expired_at; ENOTFOUND if the user has
	// no credential.
	ExpireUserNATSCredential(ctx context.Context, userID int64, at time.Time) error
	// ListUsersWithActiveNATSCredentials lists users whose credential is
	// neither revoked nor past nats_expires_at at time now.
	ListUsersWithActiveNATSCredentials(ctx context.Context, now time.Time) ([]*User, error)

	// API bearer tokens (stored hashed).
	CreateAPIToken(ctx context.Context, t *APIToken) error
	APITokenByHash(ctx context.Context, tokenHash string) (*APIToken, error)
	RevokeAPIToken(ctx context.Context, id int64, at time.Time) error
	DeleteExpiredAPITokens(ctx context.Context, before time.Time) (int64, error)

	// NATS operator and accounts.
	CreateNATSOperator(ctx context.Context, o *NATSOperator) error
	NATSOperator(ctx context.Context) (*NATSOperator, error) // the one operator
	CreateNATSAccount(ctx context.Context, a *NATSAccount) error
	NATSAccountByID(ctx context.Context, id int64) (*NATSAccount, error)
	NATSAccountByName(ctx context.Context, name string) (*NATSAccount, error)
	NATSAccountByPublicKey(ctx context.Context, publicKey string) (*NATSAccount, error)
	ListNATSAccounts(ctx context.Context) ([]*NATSAccount, error)
	UpdateNATSAccountJWT(ctx context.Context, id int64, jwt string) error

	// Rooms and membership.
	// CreateRoom inserts the room, sets SubjectPrefix from its new ID, and adds
	// ownerID as RoleOwner, all in one transaction.
	CreateRoom(ctx context.Context, r *Room, ownerID int64) error
	RoomByID(ctx context.Context, id int64) (*Room, error)
	RoomByName(ctx context.Context, name string) (*Room, error)
	// ListRoomsForUser lists public rooms and rooms userID is a member of,
	// ordered by name.
	ListRoomsForUser(ctx context.Context, userID int64) ([]*Room, error)
	ListRooms(ctx context.Context) ([]*Room, error)
	DeleteRoom(ctx context.Context, id int64) error // and its memberships
	AddRoomMember(ctx context.Context, roomID, userID int64, role string) error
	RemoveRoomMember(ctx context.Context, roomID, userID int64) error
	RoomMember(ctx context.Context, roomID, userID int64) (*Member, error)
	ListRoomMembers(ctx context.Context, roomID int64) ([]*Member, error)
	ListUserRoomIDs(ctx context.Context, userID int64) ([]int64, error)

	// Explicit permission grants written into a user's JWT.
	CreatePermission(ctx context.Context, p *Permission) error
	ListUserPermissions(ctx context.Context, userID int64) ([]*Permission, error)
	DeletePermission(ctx context.Context, id int64) error

	// NATS auth sessions (nats_auth_sessions), kept by the tracker.
	CreateAuthSession(ctx context.Context, s *AuthSession) error
	AuthSessionByID(ctx context.Context, id int64) (*AuthSession, error)
	ListUserAuthSessions(ctx context.Context, userID int64, activeOnly bool) ([]*AuthSession, error)
	ListActiveAuthSessions(ctx context.Context) ([]*AuthSession, error)
	// CloseAuthSession marks the active session (serverID, cid) closed; it
	// returns ENOTFOUND if no such active session exists.
	CloseAuthSession(ctx context.Context, serverID string, cid uint64, at time.Time, reason string) error
	TouchAuthSession(ctx context.Context, id int64, at time.Time) error
}
