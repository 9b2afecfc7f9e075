package credmigrate

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
)

// legacySchema records the definition of nats_user_credentials so that a
// rollback recreates it as it was: on SQLite the exact CREATE statements,
// on PostgreSQL columns, constraints, indexes and the id sequence.
func (m *Migrator) legacySchema(ctx context.Context, q queryer) (*tableSchema, error) {
	s := &tableSchema{}
	if m.dialect == SQLite {
		if err := q.QueryRowContext(ctx, "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", LegacyTable).Scan(&s.CreateSQL); err != nil {
			return nil, err
		}
		rows, err := q.QueryContext(ctx, "SELECT sql FROM sqlite_master WHERE type IN ('index', 'trigger') AND tbl_name = ? AND sql IS NOT NULL AND name <> ? ORDER BY name", LegacyTable, userIndex)
		if err != nil {
			return nil, err
		}
		defer rows.Close()
		for rows.Next() {
			var ix string
			if err := rows.Scan(&ix); err != nil {
				return nil, err
			}
			s.Indexes = append(s.Indexes, ix)
		}
		return s, rows.Err()
	}
	rows, err := q.QueryContext(ctx, `SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, coalesce(pg_get_expr(d.adbin, d.adrelid), '')
FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum`, LegacyTable)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var c pgColumn
		if err := rows.Scan(&c.Name, &c.Type, &c.NotNull, &c.Default); err != nil {
			rows.Close()
			return nil, err
		}
		s.Columns = append(s.Columns, c)
	}
	rows.Close()
	rows, err = q.QueryContext(ctx, `SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = $1::regclass
ORDER BY CASE contype WHEN 'p' THEN 0 WHEN 'u' THEN 1 ELSE 2 END, conname`, LegacyTable)
	if err != nil {
		return nil, err
	}
	var conNames []string
	for rows.Next() {
		var name, def string
		if err := rows.Scan(&name, &def); err != nil {
			rows.Close()
			return nil, err
		}
		conNames = append(conNames, name)
		s.Constraints = append(s.Constraints, fmt.Sprintf("ALTER TABLE %s ADD CONSTRAINT %s %s", LegacyTable, quoteIdent(name), def))
	}
	rows.Close()
	rows, err = q.QueryContext(ctx, `SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() AND tablename = $1 ORDER BY indexname`, LegacyTable)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var name, def string
		if err := rows.Scan(&name, &def); err != nil {
			rows.Close()
			return nil, err
		}
		isConstraint := false
		for _, c := range conNames {
			isConstraint = isConstraint || c == name
		}
		if !isConstraint && name != userIndex {
			s.Indexes = append(s.Indexes, def)
		}
	}
	rows.Close()
	var seqName sql.NullString
	if err := q.QueryRowContext(ctx, "SELECT pg_get_serial_sequence($1, 'id')", LegacyTable).Scan(&seqName); err != nil {
		return nil, err
	}
	if seqName.Valid {
		seq := &pgSequence{Name: seqName.String, Column: "id"}
		if err := q.QueryRowContext(ctx, "SELECT last_value, is_called FROM "+seqName.String).Scan(&seq.Last, &seq.Called); err != nil {
			return nil, err
		}
		s.Sequence = seq
	}
	return s, nil
}

// createLegacyTable recreates nats_user_credentials from a recorded
// definition, without its foreign keys and indexes (added after the rows).
func (m *Migrator) createLegacyTable(ctx context.Context, tx queryer, s *tableSchema) (post []string, err error) {
	if m.dialect == SQLite {
		if _, err := tx.ExecContext(ctx, s.CreateSQL); err != nil {
			return nil, err
		}
		return s.Indexes, nil
	}
	if s.Sequence != nil {
		if _, err := tx.ExecContext(ctx, "CREATE SEQUENCE IF NOT EXISTS "+s.Sequence.Name); err != nil {
			return nil, err
		}
	}
	var defs []string
	for _, c := range s.Columns {
		d := quoteIdent(c.Name) + " " + c.Type
		if c.Default != "" {
			d += " DEFAULT " + c.Default
		}
		if c.NotNull {
			d += " NOT NULL"
		}
		defs = append(defs, d)
	}
	if _, err := tx.ExecContext(ctx, "CREATE TABLE "+LegacyTable+" (\n\t"+strings.Join(defs, ",\n\t")+"\n)"); err != nil {
		return nil, err
	}
	if s.Sequence != nil {
		if _, err := tx.ExecContext(ctx, fmt.Sprintf("ALTER SEQUENCE %s OWNED BY %s.%s", s.Sequence.Name, LegacyTable, s.Sequence.Column)); err != nil {
			return nil, err
		}
		if _, err := tx.ExecContext(ctx, "SELECT setval($1, $2, $3)", s.Sequence.Name, s.Sequence.Last, s.Sequence.Called); err != nil {
			return nil, err
		}
	}
	return append(append([]string(nil), s.Constraints...), s.Indexes...), nil
}

// canonicalLegacySchema is the legacy app's definition of the table, used by
// a rollback from the users columns when no definition was recorded.
func canonicalLegacySchema(dialect string) *tableSchema {
	if dialect == SQLite {
		return &tableSchema{CreateSQL: `CREATE TABLE nats_user_credentials (
	id INTEGER NOT NULL PRIMARY KEY,
	user_id INTEGER NOT NULL,
	jwt TEXT,
	seed_hash VARCHAR,
	public_key VARCHAR,
	account_id INTEGER REFERENCES nats_accounts (id),
	account_public_key VARCHAR,
	expires_at DATETIME,
	expired_at DATETIME,
	created_at DATETIME,
	updated_at DATETIME
)`}
	}
	ts := "timestamp without time zone"
	return &tableSchema{
		Columns: []pgColumn{
			{Name: "id", Type: "integer", NotNull: true, Default: "nextval('nats_user_credentials_id_seq'::regclass)"},
			{Name: "user_id", Type: "integer", NotNull: true},
			{Name: "jwt", Type: "text"}, {Name: "seed_hash", Type: "character varying"},
			{Name: "public_key", Type: "character varying"}, {Name: "account_id", Type: "integer"},
			{Name: "account_public_key", Type: "character varying"},
			{Name: "expires_at", Type: ts}, {Name: "expired_at", Type: ts}, {Name: "created_at", Type: ts}, {Name: "updated_at", Type: ts},
		},
		Constraints: []string{
			"ALTER TABLE nats_user_credentials ADD CONSTRAINT nats_user_credentials_pkey PRIMARY KEY (id)",
			"ALTER TABLE nats_user_credentials ADD CONSTRAINT nats_user_credentials_account_id_fkey FOREIGN KEY (account_id) REFERENCES nats_accounts(id)",
		},
		Sequence: &pgSequence{Name: "nats_user_credentials_id_seq", Column: "id", Last: 1},
	}
}
