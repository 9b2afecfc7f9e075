package credmigrate

import (
	"context"
	"database/sql"
	"fmt"
	"io/fs"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/pressly/goose/v3/database"

	"github.com/mulchat/mulchat"
)

// AdoptOptions say which schema to adopt the legacy database into.
type AdoptOptions struct {
	// Migrations are mulchat's migration files of the dialect
	// (sqlstore.Migrations); the lowest version is the baseline adopt brings
	// the database to.
	Migrations fs.FS
	// VersionTable is goose's version table (sqlstore.GooseTable).
	VersionTable string
	DryRun       bool
	// LockWait and Logger: see Options (adopt holds the migration lock too).
	LockWait time.Duration
	Logger   *slog.Logger
}

// AdoptReport says what adopt found and changed.
type AdoptReport struct {
	AlreadyAdopted  bool             `json:"already_adopted,omitempty"`
	BaselineVersion int64            `json:"baseline_version"`
	LegacyTables    map[string]int64 `json:"legacy_tables"` // row counts at adoption
	CreatedTables   []string         `json:"created_tables,omitempty"`
	AddedColumns    []string         `json:"added_columns,omitempty"`
	CreatedIndexes  []string         `json:"created_indexes,omitempty"`
	// Normalized counts the few legacy values changed so that mulchat can
	// read them (see docs/credential-migration.md).
	Normalized map[string]int64 `json:"normalized,omitempty"`
	// Untouched are legacy tables mulchat does not use; they are kept as they
	// are, never dropped.
	Untouched []string `json:"untouched,omitempty"`
}

// legacyOnlyTables are legacy tables mulchat has no use for: kept, reported.
var legacyOnlyTables = []string{"groups", "user_groups", "messages", LegacyTable}

var (
	createTableRe = regexp.MustCompile(`(?is)^CREATE TABLE\s+(?:IF NOT EXISTS\s+)?"?(\w+)"?`)
	createIndexRe = regexp.MustCompile(`(?is)^CREATE\s+(UNIQUE\s+)?INDEX\s+(?:IF NOT EXISTS\s+)?"?(\w+)"?\s+ON\s+"?(\w+)"?`)
	uniqueRe      = regexp.MustCompile(`(?i)\s+(CONSTRAINT\s+(\w+)\s+)?UNIQUE\b`)
)

// Adopt takes a legacy Mul-Chat database (SQLAlchemy's tables, no goose
// version table) to mulchat's baseline schema without touching legacy data:
// it records a baseline (row counts of the legacy tables), creates mulchat's
// missing tables, adds the missing columns and indexes to the legacy ones,
// and stamps goose's version table with the baseline version, so that
// `mulchat migrate up` continues from there. Everything happens in one
// transaction. Running it on an adopted database changes nothing.
func Adopt(ctx context.Context, db *sql.DB, dialect string, opts AdoptOptions) (*AdoptReport, error) {
	r := &AdoptReport{LegacyTables: map[string]int64{}, Normalized: map[string]int64{}}
	lock, err := acquireRunLock(ctx, db, dialect, opts.LockWait, opts.Logger)
	if err != nil {
		return nil, err
	}
	defer lock.release()
	hasVersion, err := tableExists(ctx, db, dialect, opts.VersionTable)
	if err != nil {
		return nil, internal(err, "looking for the version table")
	}
	hasUsers, err := tableExists(ctx, db, dialect, "users")
	if err != nil {
		return nil, internal(err, "looking for users")
	}
	if hasVersion {
		adopted, err := tableExists(ctx, db, dialect, baselineTable)
		if err != nil {
			return nil, internal(err, "looking for the baseline")
		}
		if adopted {
			r.AlreadyAdopted = true
			return r, nil
		}
		return nil, errInvalid("this is a mulchat database, not a legacy one: nothing to adopt")
	}
	if !hasUsers {
		return nil, errInvalid("no users table: this is not a Mul-Chat database (a new database needs `mulchat migrate up`)")
	}
	version, up, err := baselineMigration(opts.Migrations)
	if err != nil {
		return nil, err
	}
	r.BaselineVersion = version
	m := &Migrator{db: db, dialect: dialect, opts: Options{Retries: 3, LockTimeout: 5 * time.Second, StatementTimeout: 10 * time.Minute, Now: time.Now}, log: nil}
	err = m.inTx(ctx, !opts.DryRun, func(tx *sql.Tx) error {
		*r = AdoptReport{BaselineVersion: version, LegacyTables: map[string]int64{}, Normalized: map[string]int64{}}
		return adoptTx(ctx, tx, dialect, up, opts, r)
	})
	if err != nil {
		return nil, internal(err, "adopting the legacy database")
	}
	return r, nil
}

func adoptTx(ctx context.Context, tx *sql.Tx, dialect, up string, opts AdoptOptions, r *AdoptReport) error {
	// The baseline: what the legacy database held when mulchat took it.
	tables, err := listTables(ctx, tx, dialect)
	if err != nil {
		return err
	}
	now := time.Now().UTC().Format(time.RFC3339Nano)
	if _, err := tx.ExecContext(ctx, "CREATE TABLE "+baselineTable+" (table_name TEXT PRIMARY KEY, row_count BIGINT NOT NULL, columns TEXT NOT NULL, adopted_at TEXT NOT NULL)"); err != nil {
		return err
	}
	ins := "INSERT INTO " + baselineTable + " (table_name, row_count, columns, adopted_at) VALUES (?, ?, ?, ?)"
	if dialect == Postgres {
		ins = "INSERT INTO " + baselineTable + " (table_name, row_count, columns, adopted_at) VALUES ($1, $2, $3, $4)"
	}
	existing := map[string]map[string]bool{}
	for _, t := range tables {
		var n int64
		if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM "+quoteIdent(t)).Scan(&n); err != nil {
			return err
		}
		cols, err := columns(ctx, tx, dialect, t)
		if err != nil {
			return err
		}
		existing[t] = map[string]bool{}
		for _, c := range cols {
			existing[t][c] = true
		}
		r.LegacyTables[t] = n
		if _, err := tx.ExecContext(ctx, ins, t, n, strings.Join(cols, ","), now); err != nil {
			return err
		}
		if slices.Contains(legacyOnlyTables, t) {
			r.Untouched = append(r.Untouched, t)
		}
	}

	var uniques []string
	for _, stmt := range splitStatements(up) {
		if mt := createTableRe.FindStringSubmatch(stmt); mt != nil {
			table := mt[1]
			have, ok := existing[table]
			if !ok {
				if _, err := tx.ExecContext(ctx, stmt); err != nil {
					return fmt.Errorf("creating %s: %w", table, err)
				}
				r.CreatedTables = append(r.CreatedTables, table)
				continue
			}
			_, items, _, ok := tableBody(stmt)
			if !ok {
				return errorf("cannot read mulchat's definition of %s", table)
			}
			for _, it := range items {
				it = strings.TrimSpace(it)
				name := firstIdent(it)
				if name == "" || tableConstraintWords[name] {
					continue
				}
				if have[name] {
					// A credential column the legacy app already had: give
					// it mulchat's uniqueness (nats_public_key) if it lacks it.
					if u := uniqueRe.FindStringSubmatch(it); u != nil && strings.HasPrefix(name, "nats_") {
						idx := u[2]
						if idx == "" {
							idx = table + "_" + name + "_key"
						}
						uniques = append(uniques, fmt.Sprintf("CREATE UNIQUE INDEX %s ON %s (%s)", idx, table, name))
					}
					continue
				}
				def := it
				if dialect == SQLite {
					// SQLite cannot add a UNIQUE column; add it plain and
					// enforce uniqueness with an index.
					if u := uniqueRe.FindStringSubmatch(def); u != nil {
						idx := u[2]
						if idx == "" {
							idx = table + "_" + name + "_key"
						}
						def = uniqueRe.ReplaceAllString(def, "")
						uniques = append(uniques, fmt.Sprintf("CREATE UNIQUE INDEX %s ON %s (%s)", idx, table, name))
					}
				}
				if _, err := tx.ExecContext(ctx, "ALTER TABLE "+table+" ADD COLUMN "+def); err != nil {
					return fmt.Errorf("adding %s.%s: %w", table, name, err)
				}
				r.AddedColumns = append(r.AddedColumns, table+"."+name)
				have[name] = true
			}
			continue
		}
		if mt := createIndexRe.FindStringSubmatch(stmt); mt != nil {
			name, table := mt[2], mt[3]
			if slices.Contains(r.CreatedTables, table) {
				if _, err := tx.ExecContext(ctx, stmt); err != nil {
					return fmt.Errorf("creating index %s: %w", name, err)
				}
				continue
			}
			exists, err := indexExists(ctx, tx, dialect, name)
			if err != nil {
				return err
			}
			if !exists {
				if _, err := tx.ExecContext(ctx, stmt); err != nil {
					return fmt.Errorf("creating index %s: %w", name, err)
				}
				r.CreatedIndexes = append(r.CreatedIndexes, name)
			}
			continue
		}
		// Anything else in the baseline (there is nothing else today) runs
		// as it is.
		if _, err := tx.ExecContext(ctx, stmt); err != nil {
			return err
		}
	}
	for _, u := range uniques {
		if _, err := tx.ExecContext(ctx, u); err != nil {
			return fmt.Errorf("creating a unique index: %w", err)
		}
		r.CreatedIndexes = append(r.CreatedIndexes, createIndexRe.FindStringSubmatch(u)[2])
	}

	// The credential migration reads the legacy table by user id in
	// batches; the legacy schema has no index for that.
	if existing[LegacyTable] != nil {
		if ok, err := indexExists(ctx, tx, dialect, userIndex); err != nil {
			return err
		} else if !ok {
			if _, err := tx.ExecContext(ctx, "CREATE INDEX "+userIndex+" ON "+LegacyTable+" (user_id)"); err != nil {
				return err
			}
			r.CreatedIndexes = append(r.CreatedIndexes, userIndex)
		}
	}

	// The few legacy values mulchat could not read as they are.
	if existing["users"]["is_active"] {
		// The legacy app treated a NULL is_active as false ("if not
		// user.is_active"); mulchat's column is NOT NULL.
		res, err := tx.ExecContext(ctx, "UPDATE users SET is_active = FALSE WHERE is_active IS NULL")
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n > 0 {
			r.Normalized["users.is_active NULL -> false"] = n
		}
	}
	if existing["nats_permissions"] != nil {
		var n int64
		if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM nats_permissions WHERE permission_type IS NOT NULL").Scan(&n); err != nil {
			return err
		}
		if dialect == Postgres {
			// The legacy enum permissiontype (PUB, SUB, BOTH) becomes
			// mulchat's lower-case text; the enum type itself is kept.
			var udt string
			if err := tx.QueryRowContext(ctx, "SELECT udt_name FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = 'nats_permissions' AND column_name = 'permission_type'").Scan(&udt); err != nil {
				return err
			}
			if udt != "text" {
				if _, err := tx.ExecContext(ctx, "ALTER TABLE nats_permissions ALTER COLUMN permission_type TYPE text USING lower(permission_type::text)"); err != nil {
					return err
				}
				r.Normalized["nats_permissions.permission_type enum -> lower-case text"] = n
			}
		} else {
			res, err := tx.ExecContext(ctx, "UPDATE nats_permissions SET permission_type = lower(permission_type) WHERE permission_type <> lower(permission_type)")
			if err != nil {
				return err
			}
			if k, _ := res.RowsAffected(); k > 0 {
				r.Normalized["nats_permissions.permission_type upper -> lower case"] = k
			}
		}
	}

	// Stamp goose's table: versions 0 and the baseline, as if goose had
	// applied it.
	d := database.DialectSQLite3
	if dialect == Postgres {
		d = database.DialectPostgres
	}
	store, err := database.NewStore(d, opts.VersionTable)
	if err != nil {
		return err
	}
	if err := store.CreateVersionTable(ctx, tx); err != nil {
		return err
	}
	for _, v := range []int64{0, r.BaselineVersion} {
		if err := store.Insert(ctx, tx, database.InsertRequest{Version: v}); err != nil {
			return err
		}
	}
	return nil
}

// baselineMigration returns the version and Up section of the lowest
// migration in fsys.
func baselineMigration(fsys fs.FS) (int64, string, error) {
	if fsys == nil {
		return 0, "", mulchat.Errorf(mulchat.EINTERNAL, "no migrations to adopt into")
	}
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return 0, "", internal(err, "reading the migrations")
	}
	var names []string
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".sql") {
			names = append(names, e.Name())
		}
	}
	if len(names) == 0 {
		return 0, "", mulchat.Errorf(mulchat.EINTERNAL, "no migrations to adopt into")
	}
	slices.Sort(names)
	var version int64
	if _, err := fmt.Sscanf(names[0], "%d_", &version); err != nil {
		return 0, "", mulchat.Errorf(mulchat.EINTERNAL, "cannot read the version of %s", names[0])
	}
	b, err := fs.ReadFile(fsys, names[0])
	if err != nil {
		return 0, "", internal(err, "reading "+names[0])
	}
	text := string(b)
	i := strings.Index(text, "-- +goose Up")
	if i < 0 {
		return 0, "", mulchat.Errorf(mulchat.EINTERNAL, "%s has no Up section", names[0])
	}
	text = text[i+len("-- +goose Up"):]
	if j := strings.Index(text, "-- +goose Down"); j >= 0 {
		text = text[:j]
	}
	return version, text, nil
}

// splitStatements splits SQL text at semicolons, dropping "--" comments.
func splitStatements(text string) []string {
	var lines []string
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "--") {
			continue
		}
		lines = append(lines, l)
	}
	var out []string
	for _, s := range strings.Split(strings.Join(lines, "\n"), ";") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func listTables(ctx context.Context, q queryer, dialect string) ([]string, error) {
	query := "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
	if dialect == Postgres {
		query = "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY table_name"
	}
	rows, err := q.QueryContext(ctx, query)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var t string
		if err := rows.Scan(&t); err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

func indexExists(ctx context.Context, q queryer, dialect, name string) (bool, error) {
	var n int
	var err error
	if dialect == SQLite {
		err = q.QueryRowContext(ctx, "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = ?", name).Scan(&n)
	} else {
		err = q.QueryRowContext(ctx, "SELECT count(*) FROM pg_indexes WHERE schemaname = current_schema() AND indexname = $1", name).Scan(&n)
	}
	return n > 0, err
}
