package legacygen

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// bcryptPool holds real bcrypt hashes (cost 4) of LegacyPassword, made once,
// so that generation stays deterministic and fast.
var bcryptPool = []string{
	"$2a$04$maoCOQJBTqDok4JchjW.QO0VEutzAhqUIqru6E0OE4.mE818SX6gq",
	"$2a$04$lfi0YDPs5EmQYGOk5c6Ck.IAcWq5lcY1pdZ3/VA25OdnleXYlIPlu",
	"$2a$04$Nsc/lPaU0lyB6thpu6bPjuP3I68.rdxa6Zj9Hnzv.8ewehK2xoNca",
	"$2a$04$kh/tbT/XbvlRxSbE8lHVauSxPqIkRsxVbBwN2veIOcMxLoMFH4rEK",
}

// SQLiteTime is how SQLAlchemy stores a DateTime on SQLite.
const SQLiteTime = "2006-01-02 15:04:05.000000"

// writer inserts rows in one transaction: prepared INSERTs on SQLite, COPY
// on PostgreSQL (buffered, flushed in foreign-key order).
type writer struct {
	dialect string
	conn    *sql.Conn
	// SQLite
	tx    *sql.Tx
	stmts map[string]*sql.Stmt
	// PostgreSQL
	pg      *pgx.Conn
	pgtx    pgx.Tx
	buffers map[string]*copyBuffer
	order   []string
	pending int
}

type copyBuffer struct {
	table string
	cols  []string
	rows  [][]any
}

func newWriter(ctx context.Context, db *sql.DB, dialect string) (*writer, error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, err
	}
	w := &writer{dialect: dialect, conn: conn, stmts: map[string]*sql.Stmt{}, buffers: map[string]*copyBuffer{}}
	if dialect == "sqlite" {
		if w.tx, err = conn.BeginTx(ctx, nil); err != nil {
			conn.Close()
			return nil, err
		}
		return w, nil
	}
	err = conn.Raw(func(dc any) error {
		c, ok := dc.(*stdlib.Conn)
		if !ok {
			return fmt.Errorf("legacygen: PostgreSQL connection is %T, want pgx stdlib", dc)
		}
		w.pg = c.Conn()
		return nil
	})
	if err != nil {
		conn.Close()
		return nil, err
	}
	if w.pgtx, err = w.pg.Begin(ctx); err != nil {
		conn.Close()
		return nil, err
	}
	return w, nil
}

func (w *writer) add(table string, cols []string, vals ...any) error {
	if w.dialect == "sqlite" {
		for i, v := range vals {
			if t, ok := v.(time.Time); ok {
				vals[i] = t.UTC().Format(SQLiteTime)
			}
		}
		key := table + "(" + strings.Join(cols, ",") + ")"
		st := w.stmts[key]
		if st == nil {
			ph := strings.TrimSuffix(strings.Repeat("?,", len(cols)), ",")
			var err error
			st, err = w.tx.Prepare("INSERT INTO " + table + " (" + strings.Join(cols, ", ") + ") VALUES (" + ph + ")")
			if err != nil {
				return fmt.Errorf("legacygen: %w", err)
			}
			w.stmts[key] = st
		}
		if _, err := st.Exec(vals...); err != nil {
			return fmt.Errorf("legacygen: insert into %s: %w", table, err)
		}
		return nil
	}
	key := table + "(" + strings.Join(cols, ",") + ")"
	b := w.buffers[key]
	if b == nil {
		b = &copyBuffer{table: table, cols: cols}
		w.buffers[key] = b
		w.order = append(w.order, key)
	}
	b.rows = append(b.rows, vals)
	w.pending++
	if w.pending >= 20000 {
		return w.flush(context.Background())
	}
	return nil
}

// flush copies every buffer, referenced tables first.
func (w *writer) flush(ctx context.Context) error {
	for _, table := range Tables {
		for _, key := range w.order {
			b := w.buffers[key]
			if b.table != table || len(b.rows) == 0 {
				continue
			}
			if table == "nats_permissions" {
				// COPY cannot encode an enum it does not know; a plain
				// INSERT with a cast can.
				for _, row := range b.rows {
					if _, err := w.pgtx.Exec(ctx, `INSERT INTO nats_permissions (id, user_id, room_id, permission_type, subject, created_at, updated_at)
VALUES ($1, $2, $3, $4::permissiontype, $5, $6, $7)`, row...); err != nil {
						return fmt.Errorf("legacygen: insert into nats_permissions: %w", err)
					}
				}
			} else if _, err := w.pgtx.CopyFrom(ctx, pgx.Identifier{b.table}, b.cols, pgx.CopyFromRows(b.rows)); err != nil {
				return fmt.Errorf("legacygen: copy into %s: %w", b.table, err)
			}
			b.rows = b.rows[:0]
		}
	}
	w.pending = 0
	return nil
}

func (w *writer) finish(ctx context.Context) error {
	defer w.conn.Close()
	if w.dialect == "sqlite" {
		for _, st := range w.stmts {
			st.Close()
		}
		return w.tx.Commit()
	}
	if err := w.flush(ctx); err != nil {
		w.pgtx.Rollback(ctx)
		return err
	}
	for _, t := range serialTables {
		q := fmt.Sprintf("SELECT setval(pg_get_serial_sequence('%s', 'id'), COALESCE((SELECT max(id) FROM %s), 0) + 1, false)", t, t)
		if _, err := w.pgtx.Exec(ctx, q); err != nil {
			w.pgtx.Rollback(ctx)
			return fmt.Errorf("legacygen: moving sequence of %s: %w", t, err)
		}
	}
	if err := w.pgtx.Commit(ctx); err != nil {
		return err
	}
	_, err := w.conn.ExecContext(ctx, "ANALYZE")
	return err
}

func (w *writer) abort() {
	if w.dialect == "sqlite" {
		w.tx.Rollback()
	} else {
		w.pgtx.Rollback(context.Background())
	}
	w.conn.Close()
}
