package sqlstore

import (
	"strings"
	"time"

	"github.com/mulchat/mulchat"
)

// SQLiteTimeFormat is how mulchat stores a timestamp on SQLite: TEXT, UTC,
// fixed width with microseconds and no zone suffix. It is the format
// SQLAlchemy used for the legacy Mul-Chat databases ("YYYY-MM-DD
// HH:MM:SS.ffffff"), so legacy and new values in one column compare correctly
// as text, and SQLite's own date functions read it. PostgreSQL columns are
// timestamptz. Both keep microseconds: times are truncated to the microsecond
// before they are written, so a value reads back exactly as written on either
// database.
const SQLiteTimeFormat = "2006-01-02 15:04:05.000000"

// parseFormats are the text forms ParseTime accepts: mulchat's own, SQLite's
// CURRENT_TIMESTAMP and datetime() output, RFC 3339 and what Python's
// isoformat() writes.
var parseFormats = [...]string{
	"2006-01-02 15:04:05.999999999",
	"2006-01-02T15:04:05.999999999",
	"2006-01-02 15:04:05.999999999Z07:00",
	"2006-01-02T15:04:05.999999999Z07:00",
	"2006-01-02 15:04:05.999999999 -0700 MST", // Go's time.Time.String
	"2006-01-02",
}

// TimeValue returns the argument to pass for timestamp t in a statement on
// dialect: a SQLiteTimeFormat string on SQLite, a UTC time.Time on
// PostgreSQL. Years outside 1..9999 are refused (EINVALID) on both, since the
// text form cannot sort them.
func TimeValue(dialect string, t time.Time) (any, error) {
	t = normTime(t)
	if y := t.Year(); y < 1 || y > 9999 {
		return nil, mulchat.Errorf(mulchat.EINVALID, "time %d is out of range (years 1 to 9999)", y)
	}
	if dialect == DialectSQLite {
		return t.Format(SQLiteTimeFormat), nil
	}
	return t, nil
}

// FormatSQLiteTime formats t as mulchat stores it on SQLite.
func FormatSQLiteTime(t time.Time) string { return normTime(t).Format(SQLiteTimeFormat) }

// ParseTime reads a timestamp as either database returns it: a time.Time
// (PostgreSQL, or a SQLite column declared DATETIME that the driver parsed),
// or text in any of the forms SQLite databases hold (mulchat's
// SQLiteTimeFormat, SQLAlchemy's identical "YYYY-MM-DD HH:MM:SS.ffffff",
// SQLite's CURRENT_TIMESTAMP, RFC 3339). Text without a zone is UTC. The
// result is UTC.
func ParseTime(v any) (time.Time, error) {
	switch x := v.(type) {
	case time.Time:
		return x.UTC(), nil
	case string:
		return parseTimeText(x)
	case []byte:
		return parseTimeText(string(x))
	case int64:
		// Not written by mulchat; accept Unix seconds as SQLite's own
		// unixepoch() returns them.
		return time.Unix(x, 0).UTC(), nil
	}
	return time.Time{}, mulchat.Errorf(mulchat.EINTERNAL, "cannot read %T as a timestamp", v)
}

func parseTimeText(s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	for _, f := range parseFormats {
		if t, err := time.Parse(f, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, mulchat.Errorf(mulchat.EINTERNAL, "cannot read %q as a timestamp", s)
}

// NullTime is a nullable timestamp column as Scan reads it, in any form
// ParseTime accepts.
type NullTime struct {
	Time  time.Time
	Valid bool
}

// Scan implements sql.Scanner.
func (n *NullTime) Scan(v any) error {
	if v == nil {
		*n = NullTime{}
		return nil
	}
	t, err := ParseTime(v)
	if err != nil {
		return err
	}
	*n = NullTime{Time: t, Valid: true}
	return nil
}
