package legacygen

import "strings"

// UserNATSColumns are the credential columns the legacy app added to users in
// some of its versions. A legacy database has some, all or none of them.
var UserNATSColumns = []string{
	"nats_jwt", "nats_seed_hash", "nats_public_key", "nats_account_id",
	"nats_account_public_key", "nats_expires_at", "nats_expired_at",
}

// schema returns the CREATE statements of the legacy app (SQLAlchemy's
// create_all output, as near as it matters) for dialect, with the given
// subset of users.nats_* columns.
//
// Deliberate differences between the two dialects, as the legacy databases
// really have them:
//   - PostgreSQL: nats_user_credentials.user_id has no foreign key (it was lost
//     in a manual migration, which is how rows of deleted users survive), and
//     nats_auth_sessions.credential_id is ON DELETE SET NULL.
//   - SQLite: every foreign key is declared but SQLAlchemy never enabled
//     PRAGMA foreign_keys, so nothing was enforced: orphans and sessions
//     pointing at deleted credentials exist.
func schema(dialect string, natsColumns []string) []string {
	pg := dialect == "postgres"
	serial := "INTEGER NOT NULL PRIMARY KEY"
	ts := "DATETIME"
	boolean := "BOOLEAN"
	if pg {
		serial = "SERIAL PRIMARY KEY"
		ts = "TIMESTAMP WITHOUT TIME ZONE"
	}
	var userNATS []string
	for _, c := range natsColumns {
		switch c {
		case "nats_jwt":
			userNATS = append(userNATS, "nats_jwt TEXT")
		case "nats_seed_hash", "nats_public_key", "nats_account_public_key":
			userNATS = append(userNATS, c+" VARCHAR")
		case "nats_account_id":
			userNATS = append(userNATS, "nats_account_id INTEGER REFERENCES nats_accounts (id)")
		case "nats_expires_at", "nats_expired_at":
			userNATS = append(userNATS, c+" "+ts)
		}
	}
	userCols := []string{
		"id " + serial,
		"username VARCHAR NOT NULL",
		"email VARCHAR",
		"hashed_password VARCHAR NOT NULL",
		"is_active " + boolean,
		"created_at " + ts,
	}
	userCols = append(userCols, userNATS...)
	userCols = append(userCols, "UNIQUE (username)", "UNIQUE (email)")

	permType := "VARCHAR(4)"
	var stmts []string
	if pg {
		stmts = append(stmts, "CREATE TYPE permissiontype AS ENUM ('PUB', 'SUB', 'BOTH')")
		permType = "permissiontype"
	}
	credUserFK := "user_id INTEGER NOT NULL REFERENCES users (id)"
	sessionCredFK := "credential_id INTEGER REFERENCES nats_user_credentials (id)"
	if pg {
		credUserFK = "user_id INTEGER NOT NULL"
		sessionCredFK = "credential_id INTEGER REFERENCES nats_user_credentials (id) ON DELETE SET NULL"
	}
	stmts = append(stmts,
		`CREATE TABLE nats_accounts (
	id `+serial+`,
	name VARCHAR NOT NULL,
	public_key VARCHAR NOT NULL,
	description TEXT,
	created_at `+ts+`,
	updated_at `+ts+`,
	UNIQUE (name),
	UNIQUE (public_key)
)`,
		"CREATE TABLE users (\n\t"+strings.Join(userCols, ",\n\t")+"\n)",
		"CREATE INDEX ix_users_id ON users (id)",
		`CREATE TABLE nats_rooms (
	id `+serial+`,
	name VARCHAR NOT NULL,
	subject_prefix VARCHAR NOT NULL,
	description TEXT,
	account_id INTEGER REFERENCES nats_accounts (id),
	is_public `+boolean+`,
	created_at `+ts+`,
	updated_at `+ts+`,
	UNIQUE (name)
)`,
		`CREATE TABLE nats_user_rooms (
	user_id INTEGER NOT NULL REFERENCES users (id),
	room_id INTEGER NOT NULL REFERENCES nats_rooms (id),
	joined_at `+ts+`,
	PRIMARY KEY (user_id, room_id)
)`,
		`CREATE TABLE nats_permissions (
	id `+serial+`,
	user_id INTEGER REFERENCES users (id),
	room_id INTEGER REFERENCES nats_rooms (id),
	permission_type `+permType+` NOT NULL,
	subject VARCHAR NOT NULL,
	created_at `+ts+`,
	updated_at `+ts+`
)`,
		`CREATE TABLE nats_user_credentials (
	id `+serial+`,
	`+credUserFK+`,
	jwt TEXT,
	seed_hash VARCHAR,
	public_key VARCHAR,
	account_id INTEGER REFERENCES nats_accounts (id),
	account_public_key VARCHAR,
	expires_at `+ts+`,
	expired_at `+ts+`,
	created_at `+ts+`,
	updated_at `+ts+`
)`,
		`CREATE TABLE nats_auth_sessions (
	id `+serial+`,
	user_id INTEGER REFERENCES users (id),
	`+sessionCredFK+`,
	client_id VARCHAR,
	ip_address VARCHAR,
	user_agent VARCHAR,
	created_at `+ts+`,
	last_activity `+ts+`,
	expires_at `+ts+`,
	active `+boolean+`
)`,
		"CREATE INDEX ix_nats_auth_sessions_credential_id ON nats_auth_sessions (credential_id)",
		`CREATE TABLE groups (
	id `+serial+`,
	name VARCHAR NOT NULL,
	description TEXT,
	created_at `+ts+`,
	UNIQUE (name)
)`,
		`CREATE TABLE user_groups (
	user_id INTEGER NOT NULL REFERENCES users (id),
	group_id INTEGER NOT NULL REFERENCES groups (id),
	PRIMARY KEY (user_id, group_id)
)`,
		`CREATE TABLE messages (
	id `+serial+`,
	content TEXT NOT NULL,
	user_id INTEGER REFERENCES users (id),
	group_id INTEGER REFERENCES groups (id),
	created_at `+ts+`
)`,
	)
	return stmts
}

// Tables lists the legacy tables in an order that respects their foreign keys
// (referenced tables first).
var Tables = []string{
	"nats_accounts", "users", "nats_rooms", "nats_user_rooms", "nats_permissions",
	"nats_user_credentials", "nats_auth_sessions", "groups", "user_groups", "messages",
}

// serialTables are the tables whose id comes from a PostgreSQL sequence, which
// must be moved past the ids the generator wrote explicitly.
var serialTables = []string{
	"nats_accounts", "users", "nats_rooms", "nats_permissions",
	"nats_user_credentials", "nats_auth_sessions", "groups", "messages",
}
