package credmigrate

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// BackupFormat names mulchat's backup files of the legacy credential table.
const BackupFormat = "mulchat-nats-credentials-backup"

// backupHeader is the first line of a backup file.
type backupHeader struct {
	Format    string       `json:"format"`
	Version   int          `json:"version"`
	CreatedAt time.Time    `json:"created_at"`
	Dialect   string       `json:"dialect"`
	Table     string       `json:"table"`
	Columns   []string     `json:"columns"`
	Schema    *tableSchema `json:"schema"`
	Sessions  *sessionMeta `json:"sessions_meta,omitempty"`
}

// backupLine is every other line: a credential row ("c"), a session pair
// ("s"), or the trailer.
type backupLine struct {
	C           []any  `json:"c,omitempty"`
	S           []any  `json:"s,omitempty"`
	End         bool   `json:"end,omitempty"`
	Credentials int64  `json:"credentials,omitempty"`
	Sessions    int64  `json:"sessions,omitempty"`
	RowsDigest  string `json:"rows_digest,omitempty"`
	CredDigest  string `json:"credentials_digest,omitempty"`
	SHA256      string `json:"sha256,omitempty"` // of every byte before the trailer line
}

// tableSchema is what recreating the legacy table needs.
type tableSchema struct {
	CreateSQL   string      `json:"create_sql,omitempty"` // SQLite: the exact statement
	Columns     []pgColumn  `json:"columns,omitempty"`    // PostgreSQL
	Constraints []string    `json:"constraints,omitempty"`
	Indexes     []string    `json:"indexes,omitempty"`
	Sequence    *pgSequence `json:"sequence,omitempty"`
}

type pgColumn struct {
	Name    string `json:"name"`
	Type    string `json:"type"`
	NotNull bool   `json:"not_null"`
	Default string `json:"default,omitempty"`
}

type pgSequence struct {
	Name   string `json:"name"`
	Column string `json:"column"`
	Last   int64  `json:"last"`
	Called bool   `json:"called"`
}

// cellValue converts a scanned value into what the backup file holds:
// nil, an int64, a string (text and timestamps, the latter in UTC as
// "2006-01-02 15:04:05.000000"), or a bool.
func cellValue(v any) any {
	switch x := v.(type) {
	case nil, int64, string, bool:
		return x
	case []byte:
		return string(x)
	case time.Time:
		return x.UTC().Format(SQLiteTimeFormat)
	case int32:
		return int64(x)
	case float64:
		return x
	}
	return fmt.Sprint(v)
}

// rowsDigest feeds one row (in canonical JSON) to h.
func digestRow(h hash.Hash, kind string, row []any) {
	b, _ := json.Marshal(row)
	h.Write([]byte(kind))
	h.Write(b)
	h.Write([]byte{'\n'})
}

// readCredentialRows streams every row of the legacy table in id order.
func readCredentialRows(ctx context.Context, q queryer, fn func(cols []string, row []any) error) error {
	rows, err := q.QueryContext(ctx, "SELECT * FROM "+LegacyTable+" ORDER BY id")
	if err != nil {
		return err
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return err
	}
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return err
		}
		for i := range vals {
			vals[i] = cellValue(vals[i])
		}
		if err := fn(cols, vals); err != nil {
			return err
		}
	}
	return rows.Err()
}

// tableDigest is the digest of every legacy row and session pair as the
// backup file stores them.
func (m *Migrator) tableDigest(ctx context.Context, q queryer) (string, int64, int64, error) {
	h := sha256.New()
	var nc, ns int64
	if err := readCredentialRows(ctx, q, func(_ []string, row []any) error {
		digestRow(h, "c", normalizeJSON(row))
		nc++
		return nil
	}); err != nil {
		return "", 0, 0, err
	}
	if ok, err := tableExists(ctx, q, m.dialect, sessionBackupTable); err != nil {
		return "", 0, 0, err
	} else if ok {
		rows, err := q.QueryContext(ctx, backupPairs)
		if err != nil {
			return "", 0, 0, err
		}
		defer rows.Close()
		for rows.Next() {
			var id, cred int64
			if err := rows.Scan(&id, &cred); err != nil {
				return "", 0, 0, err
			}
			digestRow(h, "s", []any{id, cred})
			ns++
		}
		if err := rows.Err(); err != nil {
			return "", 0, 0, err
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nc, ns, nil
}

// credentialsDigest is the digest of the legacy rows alone.
func credentialsDigest(ctx context.Context, q queryer) (string, int64, error) {
	h := sha256.New()
	var n int64
	err := readCredentialRows(ctx, q, func(_ []string, row []any) error {
		digestRow(h, "c", normalizeJSON(row))
		n++
		return nil
	})
	return hex.EncodeToString(h.Sum(nil)), n, err
}

// normalizeJSON makes a row digest the same whether the row came from the
// database (int64) or from a file (json.Number).
func normalizeJSON(row []any) []any {
	out := make([]any, len(row))
	for i, v := range row {
		switch x := v.(type) {
		case json.Number:
			if n, err := x.Int64(); err == nil {
				out[i] = n
			} else {
				out[i] = x.String()
			}
		case float64:
			out[i] = strconv.FormatFloat(x, 'g', -1, 64)
		default:
			out[i] = v
		}
	}
	return out
}

// WriteBackup writes the legacy table (every column of every row), the
// nats_auth_sessions (id, credential_id) backup and the definitions needed
// to recreate both to path (mode 0600, through a temporary file renamed into
// place), then reads the file back and checks it against the database.
func (m *Migrator) WriteBackup(ctx context.Context, path string) (*BackupInfo, error) {
	if path == "" {
		return nil, errInvalid("missing backup: give --backup FILE")
	}
	if _, err := os.Stat(path); err == nil {
		return nil, errConflict("backup file " + path + " already exists; choose a new name")
	}
	schema, err := m.legacySchema(ctx, m.db)
	if err != nil {
		return nil, internal(err, "reading the definition of "+LegacyTable)
	}
	var meta sessionMeta
	hasMeta, err := m.getMeta(ctx, m.db, "sessions", &meta)
	if err != nil {
		return nil, internal(err, "reading the recorded definition of credential_id")
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, ".mulchat-backup-*")
	if err != nil {
		return nil, internal(err, "creating the backup file")
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return nil, internal(err, "creating the backup file")
	}
	sum := sha256.New()
	rowsHash := sha256.New()
	credHash := sha256.New()
	w := bufio.NewWriterSize(io.MultiWriter(tmp, sum), 1<<20)
	enc := json.NewEncoder(w)
	hdr := backupHeader{Format: BackupFormat, Version: 1, CreatedAt: m.opts.Now().UTC(), Dialect: m.dialect, Table: LegacyTable, Schema: schema}
	if hasMeta {
		hdr.Sessions = &meta
	}
	info := &BackupInfo{Path: path}
	// One read transaction, so the rows, the pairs and the digest are one
	// snapshot.
	err = m.inReadTx(ctx, func(tx *sql.Tx) error {
		first := true
		if err := readCredentialRows(ctx, tx, func(cols []string, row []any) error {
			if first {
				hdr.Columns = cols
				if err := enc.Encode(hdr); err != nil {
					return err
				}
				first = false
			}
			digestRow(rowsHash, "c", row)
			digestRow(credHash, "c", row)
			info.Credentials++
			return enc.Encode(backupLine{C: row})
		}); err != nil {
			return err
		}
		if first {
			cols, err := columns(ctx, tx, m.dialect, LegacyTable)
			if err != nil {
				return err
			}
			hdr.Columns = cols
			if err := enc.Encode(hdr); err != nil {
				return err
			}
		}
		if ok, err := tableExists(ctx, tx, m.dialect, sessionBackupTable); err != nil {
			return err
		} else if ok {
			rows, err := tx.QueryContext(ctx, backupPairs)
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
				var id, cred int64
				if err := rows.Scan(&id, &cred); err != nil {
					return err
				}
				digestRow(rowsHash, "s", []any{id, cred})
				info.Sessions++
				if err := enc.Encode(backupLine{S: []any{id, cred}}); err != nil {
					return err
				}
			}
			if err := rows.Err(); err != nil {
				return err
			}
		}
		if err := w.Flush(); err != nil {
			return err
		}
		info.SHA256 = hex.EncodeToString(sum.Sum(nil))
		trailer := backupLine{End: true, Credentials: info.Credentials, Sessions: info.Sessions,
			RowsDigest: hex.EncodeToString(rowsHash.Sum(nil)), CredDigest: hex.EncodeToString(credHash.Sum(nil)), SHA256: info.SHA256}
		b, _ := json.Marshal(trailer)
		_, err := tmp.Write(append(b, '\n'))
		return err
	})
	if err != nil {
		tmp.Close()
		return nil, internal(err, "writing the backup")
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return nil, internal(err, "writing the backup")
	}
	if err := tmp.Close(); err != nil {
		return nil, internal(err, "writing the backup")
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return nil, internal(err, "writing the backup")
	}
	// Verify: the file reads back, its checksum holds, and its rows are the
	// database's.
	b, err := ReadBackup(path)
	if err != nil {
		return nil, err
	}
	digest, nc, ns, err := m.tableDigest(ctx, m.db)
	if err != nil {
		return nil, internal(err, "checking the backup against the database")
	}
	if b.rowsDigest != digest || nc != b.credentialsN || ns != b.sessionsN {
		return nil, errorf("the backup %s does not match the database (%d/%d rows vs %d/%d); was the table written meanwhile?", path, b.credentialsN, b.sessionsN, nc, ns)
	}
	return info, nil
}

// backup is a backup file read and checked.
type backup struct {
	header       backupHeader
	creds        [][]any
	sessions     [][2]int64
	credentialsN int64
	sessionsN    int64
	rowsDigest   string
	credDigest   string
}

// ReadBackup reads a backup file and checks its checksum and row counts.
func ReadBackup(path string) (*backup, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, errInvalidWrap(err, "cannot read the backup file")
	}
	end := bytes.LastIndexByte(bytes.TrimRight(data, "\n"), '\n')
	if end < 0 {
		return nil, errInvalid("the backup file is truncated")
	}
	body, last := data[:end+1], data[end+1:]
	var trailer backupLine
	if err := json.Unmarshal(last, &trailer); err != nil || !trailer.End {
		return nil, errInvalid("the backup file has no trailer: it is truncated or not a mulchat backup")
	}
	sum := sha256.Sum256(body)
	if hex.EncodeToString(sum[:]) != trailer.SHA256 {
		return nil, errInvalid("the backup file's checksum does not match: it is corrupted")
	}
	b := &backup{rowsDigest: trailer.RowsDigest, credDigest: trailer.CredDigest}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&b.header); err != nil || b.header.Format != BackupFormat {
		return nil, errInvalid("not a mulchat credential backup")
	}
	if b.header.Version != 1 {
		return nil, errInvalid(fmt.Sprintf("backup format version %d is not supported", b.header.Version))
	}
	h, ch := sha256.New(), sha256.New()
	for {
		var l backupLine
		if err := dec.Decode(&l); err == io.EOF {
			break
		} else if err != nil {
			return nil, errInvalidWrap(err, "the backup file does not parse")
		}
		switch {
		case l.C != nil:
			row := normalizeJSON(l.C)
			digestRow(h, "c", row)
			digestRow(ch, "c", row)
			b.creds = append(b.creds, row)
		case l.S != nil && len(l.S) == 2:
			row := normalizeJSON(l.S)
			id, ok1 := row[0].(int64)
			cred, ok2 := row[1].(int64)
			if !ok1 || !ok2 {
				return nil, errInvalid("the backup file has a bad session line")
			}
			digestRow(h, "s", []any{id, cred})
			b.sessions = append(b.sessions, [2]int64{id, cred})
		}
	}
	b.credentialsN, b.sessionsN = int64(len(b.creds)), int64(len(b.sessions))
	if b.credentialsN != trailer.Credentials || b.sessionsN != trailer.Sessions || hex.EncodeToString(h.Sum(nil)) != trailer.RowsDigest ||
		hex.EncodeToString(ch.Sum(nil)) != trailer.CredDigest {
		return nil, errInvalid("the backup file's rows do not match its trailer")
	}
	return b, nil
}
