package sqlstore

import (
	"context"
	"database/sql"
	"strconv"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/mulchat/mulchat"
)

// execer is what *sql.DB and *sql.Tx have in common, so one implementation of
// every query runs both outside and inside a transaction.
type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// queries implements mulchat.Queries over an execer. Queries are written once
// with $1-style placeholders, which both pgx and modernc.org/sqlite accept
// (SQLite reads "$N" as the N-th argument).
type queries struct {
	x       execer
	dialect string
	db      *DB
	tx      *txState // nil outside a transaction
}

var _ mulchat.Queries = (*queries)(nil)

// txState records the first failed statement of a transaction.
type txState struct {
	failed atomic.Pointer[error]
}

// scanner is a *sql.Row or *sql.Rows.
type scanner interface {
	Scan(dest ...any) error
}

// errMsgs are the caller-facing messages for the errors whose meaning depends
// on the query: no row, and a foreign key that points nowhere.
type errMsgs struct {
	notFound string
	fk       string
}

// now is the store's clock: UTC, at the microsecond precision both databases
// keep, so a value read back equals the value written.
func now() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }

// normTime brings t to what the database will hold: UTC, microseconds.
func normTime(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

func normTimePtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	n := normTime(*t)
	return &n
}

// errBadText is returned for a string argument PostgreSQL would refuse; the
// same check on SQLite keeps the databases' behaviour identical.
func errBadText() error {
	return mulchat.Errorf(mulchat.EINVALID, "text must be valid UTF-8 and must not contain NUL characters")
}

// args converts Go arguments to what the dialect stores: times become the
// dialect's timestamp encoding, *time.Time nil becomes NULL, and strings are
// checked to be valid UTF-8 without NUL (PostgreSQL refuses both).
func (q *queries) args(in []any) ([]any, error) {
	out := make([]any, len(in))
	for i, a := range in {
		switch v := a.(type) {
		case string:
			if !validText(v) {
				return nil, errBadText()
			}
			out[i] = v
		case []byte:
			// An empty key or seed is stored as NULL, so that both
			// databases read it back as nil.
			if len(v) == 0 {
				out[i] = nil
				continue
			}
			out[i] = v
		case time.Time:
			tv, err := TimeValue(q.dialect, v)
			if err != nil {
				return nil, err
			}
			out[i] = tv
		case *time.Time:
			if v == nil {
				out[i] = nil
				continue
			}
			tv, err := TimeValue(q.dialect, *v)
			if err != nil {
				return nil, err
			}
			out[i] = tv
		default:
			out[i] = a
		}
	}
	return out, nil
}

func validText(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == 0 {
			return false
		}
	}
	return utf8.ValidString(s)
}

// aborted returns the error to give for any statement after one in the same
// transaction failed.
func (q *queries) aborted() error {
	if q.tx == nil {
		return nil
	}
	if failed := q.tx.failed.Load(); failed != nil {
		return mulchat.WrapError(mulchat.EINTERNAL, *failed, "transaction aborted by an earlier failed statement")
	}
	return nil
}

// exec runs a statement and returns the number of rows it affected.
func (q *queries) exec(ctx context.Context, m errMsgs, query string, args ...any) (int64, error) {
	if err := q.aborted(); err != nil {
		return 0, err
	}
	a, err := q.args(args)
	if err != nil {
		return 0, err
	}
	res, err := q.x.ExecContext(ctx, query, a...)
	if err != nil {
		return 0, q.translate(ctx, err, m)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, q.translate(ctx, err, m)
	}
	return n, nil
}

// one runs a query expected to return one row and hands it to scan;
// sql.ErrNoRows becomes ENOTFOUND with m.notFound.
func (q *queries) one(ctx context.Context, m errMsgs, query string, args []any, scan func(s scanner) error) error {
	if err := q.aborted(); err != nil {
		return err
	}
	a, err := q.args(args)
	if err != nil {
		return err
	}
	if err := scan(q.x.QueryRowContext(ctx, query, a...)); err != nil {
		return q.translate(ctx, err, m)
	}
	return nil
}

// many runs a query and hands each row to scan.
func (q *queries) many(ctx context.Context, query string, args []any, scan func(s scanner) error) error {
	if err := q.aborted(); err != nil {
		return err
	}
	a, err := q.args(args)
	if err != nil {
		return err
	}
	rows, err := q.x.QueryContext(ctx, query, a...)
	if err != nil {
		return q.translate(ctx, err, errMsgs{})
	}
	defer rows.Close()
	for rows.Next() {
		if err := scan(rows); err != nil {
			return q.translate(ctx, err, errMsgs{})
		}
	}
	if err := rows.Err(); err != nil {
		return q.translate(ctx, err, errMsgs{})
	}
	return nil
}

// inTx runs fn in a transaction: the current one if q is inside one,
// otherwise a new one.
func (q *queries) inTx(ctx context.Context, fn func(q *queries) error) error {
	if q.tx != nil {
		return fn(q)
	}
	return q.db.inTx(ctx, fn)
}

// nullString maps "" to NULL.
func nullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// nullID maps the id 0 to NULL.
func nullID(id int64) any {
	if id == 0 {
		return nil
	}
	return id
}

// maxKeyLen bounds text stored in a unique column. PostgreSQL refuses btree
// index entries over about 2.7 kB while SQLite takes anything; refusing
// longer values on both keeps their behaviour identical.
const maxKeyLen = 1024

func checkKeyLen(field, v string) error {
	if len(v) > maxKeyLen {
		return mulchat.Errorf(mulchat.EINVALID, "%s is too long (at most %d bytes)", field, maxKeyLen)
	}
	return nil
}

// nullTimeDest scans a nullable timestamp into a *time.Time field.
type nullTimeDest struct{ dst **time.Time }

func (d nullTimeDest) Scan(v any) error {
	var nt NullTime
	if err := nt.Scan(v); err != nil {
		return err
	}
	if !nt.Valid {
		*d.dst = nil
		return nil
	}
	t := nt.Time
	*d.dst = &t
	return nil
}

// timeDest scans a timestamp into a time.Time field; NULL (which only a
// legacy row can hold) becomes the zero time.
type timeDest struct{ dst *time.Time }

func (d timeDest) Scan(v any) error {
	var nt NullTime
	if err := nt.Scan(v); err != nil {
		return err
	}
	*d.dst = nt.Time
	return nil
}

// stringDest scans nullable text into a string field (NULL becomes "").
type stringDest struct{ dst *string }

func (d stringDest) Scan(v any) error {
	switch x := v.(type) {
	case nil:
		*d.dst = ""
	case string:
		*d.dst = x
	case []byte:
		*d.dst = string(x)
	case int64:
		*d.dst = strconv.FormatInt(x, 10)
	default:
		var ns sql.NullString
		if err := ns.Scan(v); err != nil {
			return err
		}
		*d.dst = ns.String
	}
	return nil
}

// idDest scans a nullable integer into an int64 field (NULL becomes 0).
type idDest struct{ dst *int64 }

func (d idDest) Scan(v any) error {
	var n sql.NullInt64
	if err := n.Scan(v); err != nil {
		return err
	}
	*d.dst = n.Int64
	return nil
}

// boolDest scans a boolean (an integer 0/1 on SQLite) into a bool field; NULL
// becomes false.
type boolDest struct{ dst *bool }

func (d boolDest) Scan(v any) error {
	var b sql.NullBool
	if err := b.Scan(v); err != nil {
		return err
	}
	*d.dst = b.Bool
	return nil
}
