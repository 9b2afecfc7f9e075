package sqlstore

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"time"

	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/database"
	"github.com/pressly/goose/v3/lock"

	"github.com/mulchat/mulchat"
)

// GooseTable is the name of goose's version table in mulchat databases. A
// legacy Mul-Chat database has no such table.
const GooseTable = "mulchat_schema_version"

//go:embed migrations/sqlite/*.sql migrations/postgres/*.sql
var migrationFiles embed.FS

// Migrations returns the embedded migration files of dialect ("sqlite" or
// "postgres"), the files goose applies; nil for an unknown dialect.
func Migrations(dialect string) fs.FS {
	if dialect != DialectSQLite && dialect != DialectPostgres {
		return nil
	}
	sub, err := fs.Sub(migrationFiles, "migrations/"+dialect)
	if err != nil {
		// fs.Sub fails only on an invalid path, and these are constants.
		panic(err)
	}
	return sub
}

// MigrationStatus is one migration and whether the database has it.
type MigrationStatus struct {
	Version   int64
	Name      string // file name, e.g. "00001_initial.sql"
	Applied   bool
	AppliedAt time.Time // zero unless Applied
}

const legacyMessage = "legacy Mul-Chat database detected: run `mulchat migrate adopt` first"

// provider builds a goose provider over this database. It uses no goose
// global state: migrations come from the embedded files only, and on
// PostgreSQL a session advisory lock keeps two mulchat processes from
// migrating at once. (On SQLite each migration's transaction takes the write
// lock at its start, which serialises them.)
func (db *DB) provider() (*goose.Provider, error) {
	opts := []goose.ProviderOption{
		goose.WithTableName(GooseTable),
		goose.WithDisableGlobalRegistry(true),
	}
	dialect := database.DialectSQLite3
	if db.dialect == DialectPostgres {
		dialect = database.DialectPostgres
		locker, err := lock.NewPostgresSessionLocker()
		if err != nil {
			return nil, mulchat.WrapError(mulchat.EINTERNAL, err, "cannot create the migration lock")
		}
		opts = append(opts, goose.WithSessionLocker(locker))
	}
	p, err := goose.NewProvider(dialect, db.sql, Migrations(db.dialect), opts...)
	if err != nil {
		return nil, mulchat.WrapError(mulchat.EINTERNAL, err, "cannot load the embedded migrations")
	}
	return p, nil
}

// latestKnownVersion is the highest migration version this binary embeds.
func (db *DB) latestKnownVersion(p *goose.Provider) int64 {
	var v int64
	for _, s := range p.ListSources() {
		v = max(v, s.Version)
	}
	return v
}

// Migrate applies every pending migration ("migrate up"). It refuses a legacy
// Mul-Chat database (run `mulchat migrate adopt` first) and a database whose
// schema is newer than this binary knows.
func (db *DB) Migrate(ctx context.Context) error {
	p, err := db.provider()
	if err != nil {
		return err
	}
	if err := db.refuseLegacyOrNewer(ctx, p); err != nil {
		return err
	}
	if _, err := p.Up(ctx); err != nil {
		return db.migrationError(ctx, err, "migrate up failed")
	}
	return nil
}

// MigrateDown rolls back the most recent migration ("migrate down").
func (db *DB) MigrateDown(ctx context.Context) error {
	p, err := db.provider()
	if err != nil {
		return err
	}
	if err := db.refuseLegacyOrNewer(ctx, p); err != nil {
		return err
	}
	if _, err := p.Down(ctx); err != nil {
		if errors.Is(err, goose.ErrNoNextVersion) {
			return mulchat.Errorf(mulchat.EINVALID, "no migration to roll back")
		}
		return db.migrationError(ctx, err, "migrate down failed")
	}
	return nil
}

func (db *DB) migrationError(ctx context.Context, err error, msg string) error {
	if ctx.Err() != nil {
		return fmt.Errorf("sqlstore: %s: %w", msg, ctx.Err())
	}
	return mulchat.WrapError(mulchat.EINTERNAL, err, msg)
}

// refuseLegacyOrNewer returns the errors of CheckSchema that stop a
// migration: a legacy database, or one newer than this binary.
func (db *DB) refuseLegacyOrNewer(ctx context.Context, p *goose.Provider) error {
	legacy, err := IsLegacy(ctx, db.sql, db.dialect)
	if err != nil {
		return err
	}
	if legacy {
		return mulchat.Errorf(mulchat.EINVALID, legacyMessage)
	}
	version, ok, err := db.schemaVersion(ctx)
	if err != nil {
		return err
	}
	if known := db.latestKnownVersion(p); ok && version > known {
		return newerError(version, known)
	}
	return nil
}

func newerError(version, known int64) error {
	return mulchat.Errorf(mulchat.EINVALID,
		"database schema version %d is newer than this mulchat (knows up to %d); upgrade mulchat", version, known)
}

// MigrationStatus lists every migration this binary knows and whether it is
// applied, followed by any applied version this binary does not know (a newer
// mulchat's). It writes nothing: on a database without the version table
// (new, or legacy) every migration is reported pending.
func (db *DB) MigrationStatus(ctx context.Context) ([]MigrationStatus, error) {
	p, err := db.provider()
	if err != nil {
		return nil, err
	}
	exists, err := tableExists(ctx, db.sql, db.dialect, GooseTable)
	if err != nil {
		return nil, err
	}
	applied := map[int64]time.Time{}
	var unknown []MigrationStatus
	known := db.latestKnownVersion(p)
	if exists {
		// Read the version table directly rather than through goose's
		// Status, which would create the table and take the migration lock.
		rows, err := db.sql.QueryContext(ctx,
			`SELECT version_id, tstamp FROM `+GooseTable+` WHERE version_id > 0 ORDER BY version_id`)
		if err != nil {
			return nil, db.queries.translate(ctx, err, errMsgs{})
		}
		defer rows.Close()
		for rows.Next() {
			var v int64
			var at NullTime
			if err := rows.Scan(&v, &at); err != nil {
				return nil, db.queries.translate(ctx, err, errMsgs{})
			}
			applied[v] = at.Time
			if v > known {
				unknown = append(unknown, MigrationStatus{Version: v, Name: "(unknown to this mulchat)", Applied: true, AppliedAt: at.Time})
			}
		}
		if err := rows.Err(); err != nil {
			return nil, db.queries.translate(ctx, err, errMsgs{})
		}
	}
	var out []MigrationStatus
	for _, s := range p.ListSources() {
		at, ok := applied[s.Version]
		out = append(out, MigrationStatus{Version: s.Version, Name: path.Base(s.Path), Applied: ok, AppliedAt: at})
	}
	return append(out, unknown...), nil
}

// CheckSchema reports whether the database's schema is the one this binary
// was built for, with an EINVALID error telling the operator what to do when
// it is not: a newer schema ("upgrade mulchat"), an older one ("run mulchat
// migrate up"), or a legacy Mul-Chat database ("run mulchat migrate adopt").
func (db *DB) CheckSchema(ctx context.Context) error {
	p, err := db.provider()
	if err != nil {
		return err
	}
	known := db.latestKnownVersion(p)
	version, ok, err := db.schemaVersion(ctx)
	if err != nil {
		return err
	}
	if !ok {
		legacy, err := IsLegacy(ctx, db.sql, db.dialect)
		if err != nil {
			return err
		}
		if legacy {
			return mulchat.Errorf(mulchat.EINVALID, legacyMessage)
		}
		version = 0
	}
	switch {
	case version > known:
		return newerError(version, known)
	case version < known:
		return mulchat.Errorf(mulchat.EINVALID,
			"database schema version %d is older than this mulchat (needs %d): run `mulchat migrate up`", version, known)
	}
	return nil
}

// schemaVersion returns the highest version in the goose table; ok is false
// when the table does not exist.
func (db *DB) schemaVersion(ctx context.Context) (version int64, ok bool, err error) {
	exists, err := tableExists(ctx, db.sql, db.dialect, GooseTable)
	if err != nil || !exists {
		return 0, false, err
	}
	var v sql.NullInt64
	if err := db.sql.QueryRowContext(ctx, `SELECT MAX(version_id) FROM `+GooseTable).Scan(&v); err != nil {
		return 0, false, db.queries.translate(ctx, err, errMsgs{})
	}
	return v.Int64, true, nil
}

// IsLegacy reports whether db holds a legacy Mul-Chat database: one with a
// `users` table but no goose version table (GooseTable). dialect is "sqlite"
// or "postgres".
func IsLegacy(ctx context.Context, db *sql.DB, dialect string) (bool, error) {
	hasUsers, err := tableExists(ctx, db, dialect, "users")
	if err != nil || !hasUsers {
		return false, err
	}
	hasGoose, err := tableExists(ctx, db, dialect, GooseTable)
	if err != nil {
		return false, err
	}
	return !hasGoose, nil
}

// tableExists reports whether a table named name exists (on PostgreSQL, in
// the current schema search path).
func tableExists(ctx context.Context, db *sql.DB, dialect, name string) (bool, error) {
	var query string
	switch dialect {
	case DialectSQLite:
		query = `SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = $1)`
	case DialectPostgres:
		query = `SELECT to_regclass($1) IS NOT NULL`
	default:
		return false, mulchat.Errorf(mulchat.EINVALID, "unknown database dialect %q", dialect)
	}
	var exists bool
	if err := db.QueryRowContext(ctx, query, name).Scan(&exists); err != nil {
		if ctx.Err() != nil {
			return false, fmt.Errorf("sqlstore: %w", ctx.Err())
		}
		return false, mulchat.WrapError(mulchat.EINTERNAL, err, "cannot read the database's tables")
	}
	return exists, nil
}
