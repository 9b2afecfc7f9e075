package mulchat

import "context"

// SessionBatchQueries are the tracker's cheap reads and writes of
// nats_auth_sessions for bursts of connects. internal/sqlstore's Store and
// its transactions' Queries implement them; tracker.New requires a Store that
// does (found by a type assertion, so Queries itself is unchanged).
//
// They exist because the per-connection path listed every active session of
// the user (to find a duplicate row and to decide the online notice) and
// inserted one row per statement: with many connections per user that cost
// more CPU than the NATS server's own work for the connect.
type SessionBatchQueries interface {
	// CreateAuthSessions records newly opened sessions as CreateAuthSession
	// does, many rows per statement. It sets each session's Active, CreatedAt
	// and LastActivity like CreateAuthSession, but not ID (left 0): reading
	// the ids back would cost a result row per session, and no caller needs
	// them. An error means none of them were written (inside a transaction
	// the caller rolls back).
	CreateAuthSessions(ctx context.Context, sessions []*AuthSession) error
	// ActiveAuthSessionCIDs returns the client ids in [minCID, maxCID] that
	// have an active session on serverID (an index range scan).
	ActiveAuthSessionCIDs(ctx context.Context, serverID string, minCID, maxCID uint64) ([]uint64, error)
	// HasActiveAuthSession reports whether the user has at least one active
	// session, without reading the rows.
	HasActiveAuthSession(ctx context.Context, userID int64) (bool, error)
}
