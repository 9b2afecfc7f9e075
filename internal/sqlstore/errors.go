package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/mulchat/mulchat"
)

// translate turns a database error into a mulchat error: no row → ENOTFOUND,
// unique violation → ECONFLICT naming the field, foreign-key, check and
// encoding violations → EINVALID, context errors wrapped as they are, anything
// else EINTERNAL wrapping the cause. The driver's own text is never the
// message, since it can quote the offending value.
//
// Inside a transaction, every error except "no row" also marks the
// transaction failed (see DB.InTx).
func (q *queries) translate(ctx context.Context, err error, m errMsgs) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, sql.ErrNoRows) {
		msg := m.notFound
		if msg == "" {
			msg = "not found"
		}
		return mulchat.Errorf(mulchat.ENOTFOUND, "%s", msg)
	}
	if q.tx != nil {
		q.tx.failed.CompareAndSwap(nil, &err)
	}
	var me *mulchat.Error
	if errors.As(err, &me) {
		return err
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		return fmt.Errorf("sqlstore: %w", ctxErr)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("sqlstore: %w", err)
	}
	if e := translateViolation(err, m); e != nil {
		return e
	}
	return mulchat.WrapError(mulchat.EINTERNAL, err, "database error")
}

const busyMessage = "database is busy; try again"

// translateViolation maps constraint and data errors of either driver; nil
// if err is none of them.
func translateViolation(err error, m errMsgs) error {
	fkMsg := m.fk
	if fkMsg == "" {
		fkMsg = "a referenced row does not exist"
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "23505": // unique_violation
			return mulchat.WrapError(mulchat.ECONFLICT, err, conflictMessage(pgUniqueKey(pgErr)))
		case "23503": // foreign_key_violation
			return mulchat.WrapError(mulchat.EINVALID, err, fkMsg)
		case "23514": // check_violation
			return mulchat.WrapError(mulchat.EINVALID, err, checkMessage(pgErr.ConstraintName))
		case "23502": // not_null_violation
			return mulchat.WrapError(mulchat.EINVALID, err, "a required value is missing")
		case "22021", "22P05": // character_not_in_repertoire, untranslatable_character
			return mulchat.WrapError(mulchat.EINVALID, err, "text must be valid UTF-8 and must not contain NUL characters")
		case "22001", "54000": // string_data_right_truncation, program_limit_exceeded
			return mulchat.WrapError(mulchat.EINVALID, err, "value is too long")
		case "22003", "22008": // numeric_value_out_of_range, datetime_field_overflow
			return mulchat.WrapError(mulchat.EINVALID, err, "value is out of range")
		case "22P02": // invalid_text_representation, e.g. a value outside an enum
			return mulchat.WrapError(mulchat.EINVALID, err, "value is not allowed")
		case "40001", "40P01", "55P03", "57014":
			// serialization_failure, deadlock_detected, lock_not_available,
			// query_canceled (statement_timeout): a retry may succeed.
			return mulchat.WrapError(mulchat.EUNAVAILABLE, err, busyMessage)
		}
		return nil
	}
	var sqErr *sqlite.Error
	if errors.As(err, &sqErr) {
		switch sqErr.Code() {
		case sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
			return mulchat.WrapError(mulchat.ECONFLICT, err, conflictMessage(sqliteConstraintDetail(sqErr)))
		case sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY:
			return mulchat.WrapError(mulchat.EINVALID, err, fkMsg)
		case sqlite3.SQLITE_CONSTRAINT_CHECK:
			return mulchat.WrapError(mulchat.EINVALID, err, checkMessage(sqliteConstraintDetail(sqErr)))
		case sqlite3.SQLITE_CONSTRAINT_NOTNULL:
			return mulchat.WrapError(mulchat.EINVALID, err, "a required value is missing")
		case sqlite3.SQLITE_TOOBIG:
			return mulchat.WrapError(mulchat.EINVALID, err, "value is too long")
		}
		// SQLITE_BUSY and SQLITE_LOCKED with their extended codes: the write
		// lock stayed taken for the whole busy timeout.
		if primary := sqErr.Code() & 0xff; primary == sqlite3.SQLITE_BUSY || primary == sqlite3.SQLITE_LOCKED {
			return mulchat.WrapError(mulchat.EUNAVAILABLE, err, busyMessage)
		}
	}
	return nil
}

// pgUniqueKey names a PostgreSQL unique violation as SQLite does,
// "table.col1, table.col2", read from the error's detail ("Key (col1,
// col2)=(…) already exists."), so that one table of messages serves both and
// does not depend on how a legacy database named its constraints. It falls
// back to the constraint name.
func pgUniqueKey(e *pgconn.PgError) string {
	rest, ok := strings.CutPrefix(e.Detail, "Key (")
	if !ok || e.TableName == "" {
		return e.ConstraintName
	}
	cols, _, ok := strings.Cut(rest, ")=(")
	if !ok {
		return e.ConstraintName
	}
	parts := strings.Split(cols, ",")
	for i, c := range parts {
		parts[i] = e.TableName + "." + strings.TrimSpace(c)
	}
	return strings.Join(parts, ", ")
}

// sqliteConstraintDetail returns what follows "constraint failed: " in a
// SQLite constraint error: "table.column" for unique and primary keys, the
// constraint's name for a named CHECK.
func sqliteConstraintDetail(e *sqlite.Error) string {
	msg := e.Error()
	i := strings.LastIndex(msg, "constraint failed: ")
	if i < 0 {
		return ""
	}
	detail := msg[i+len("constraint failed: "):]
	if j := strings.LastIndex(detail, " ("); j >= 0 {
		detail = detail[:j]
	}
	return strings.TrimSpace(detail)
}

// conflictMessage names the field a unique violation is about, keyed by
// "table.column" (both dialects) or PostgreSQL's constraint name.
func conflictMessage(key string) string {
	switch key {
	case "users.username", "users_username_key":
		return "username already taken"
	case "users.email", "users_email_key":
		return "email already registered"
	case "users.nats_public_key", "users_nats_public_key_key":
		return "NATS public key already in use"
	case "nats_accounts.name", "nats_accounts_name_key":
		return "NATS account name already exists"
	case "nats_accounts.public_key", "nats_accounts_public_key_key":
		return "NATS account public key already exists"
	case "nats_operators.id", "nats_operators_pkey":
		return "a NATS operator already exists"
	case "nats_rooms.name", "nats_rooms_name_key":
		return "room name already taken"
	case "nats_user_rooms.user_id, nats_user_rooms.room_id", "nats_user_rooms_pkey":
		return "user is already a member of this room"
	case "api_tokens.token_hash", "api_tokens_token_hash_key":
		return "API token already exists"
	}
	return "already exists"
}

// checkMessage explains a named CHECK constraint of the schema.
func checkMessage(name string) string {
	switch name {
	case "nats_user_rooms_role_check":
		return "role must be owner, member or reader"
	case "nats_permissions_permission_type_check":
		return "permission type must be pub, sub or both"
	case "nats_operators_one_check":
		return "a NATS operator already exists"
	}
	return "value is not allowed"
}
