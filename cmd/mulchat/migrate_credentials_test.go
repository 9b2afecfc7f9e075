package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mulchat/mulchat/internal/legacygen"
	"github.com/mulchat/mulchat/internal/legacygen/legacytest"
)

// newLegacyDB returns a fresh legacy Mul-Chat database of the dialect.
func newLegacyDB(t *testing.T, dialect string, opts legacygen.Options) *legacytest.DB {
	t.Helper()
	var db *legacytest.DB
	if dialect == "sqlite" {
		db = legacytest.SQLite(t)
	} else {
		db = legacytest.Postgres(t)
	}
	if _, err := legacygen.Generate(context.Background(), db.SQL, db.Dialect, opts); err != nil {
		t.Fatal(err)
	}
	return db
}

// migrationState is everything the credential migration may change, in a
// canonical form (rehashed passwords reduced to their scheme, since their
// salts are random).
func migrationState(t *testing.T, db *legacytest.DB) []string {
	t.Helper()
	var out []string
	query := func(label, q string) {
		rows, err := db.SQL.Query(q)
		if err != nil {
			t.Fatalf("%s: %v", label, err)
		}
		defer rows.Close()
		cols, _ := rows.Columns()
		for rows.Next() {
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				t.Fatal(err)
			}
			var b strings.Builder
			b.WriteString(label)
			for i, v := range vals {
				switch x := v.(type) {
				case []byte:
					v = string(x)
				case time.Time:
					v = x.UTC().Format(time.RFC3339Nano)
				case bool:
					if x {
						v = int64(1)
					} else {
						v = int64(0)
					}
				}
				fmt.Fprintf(&b, " %s=%v", cols[i], v)
			}
			out = append(out, b.String())
		}
	}
	query("user", `SELECT id, username, email, is_active, must_rotate_password,
	CASE WHEN hashed_password LIKE '$argon2id$%' THEN 'argon2id' ELSE hashed_password END AS pw,
	nats_jwt, nats_seed_hash, nats_public_key, nats_account_id, nats_account_public_key, nats_expires_at, nats_expired_at
FROM users ORDER BY id`)
	if tableThere(t, db, "nats_user_credentials") {
		query("cred", "SELECT * FROM nats_user_credentials ORDER BY id")
	}
	query("session", "SELECT id, user_id, client_id FROM nats_auth_sessions ORDER BY id")
	if tableThere(t, db, "mulchat_credmigrate_session_credentials") {
		query("pair", "SELECT session_id, credential_id FROM mulchat_credmigrate_session_credentials ORDER BY session_id")
	}
	return out
}

func tableThere(t *testing.T, db *legacytest.DB, table string) bool {
	var n int
	q := "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?"
	if db.Dialect == "postgres" {
		q = "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = $1"
	}
	if err := db.SQL.QueryRow(q, table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n > 0
}

func dialects(t *testing.T, fn func(t *testing.T, dialect string)) {
	for _, d := range []string{"sqlite", "postgres"} {
		t.Run(d, func(t *testing.T) { fn(t, d) })
	}
}

// The commands as an operator runs them, on both databases.
func TestCredentialMigrationCommands(t *testing.T) {
	dialects(t, func(t *testing.T, dialect string) {
		c := newCLI(t)
		db := newLegacyDB(t, dialect, legacygen.Options{Users: 120, Seed: 11, UserNATSColumns: []string{"nats_jwt", "nats_public_key"}, PlaintextPasswordRate: 0.05})
		url := []string{"--database-url", db.URL}
		arg := func(a ...string) []string { return append(append([]string{}, url...), a...) }

		c.fails("mulchat migrate adopt", "", arg("migrate", "up")...)
		c.fails("adopt", "", arg("migrate", "nats-credentials")...)
		out := c.ok("", arg("migrate", "adopt")...).stdout
		for _, want := range []string{"baseline", "left untouched", "messages"} {
			if !strings.Contains(out, want) {
				t.Fatalf("adopt output lacks %q:\n%s", want, out)
			}
		}
		c.ok("", arg("migrate", "adopt")...)
		c.ok("", arg("migrate", "up")...)

		// Before the migration nothing verifies, and the drop refuses.
		c.fails("do not verify", "", arg("migrate", "verify-nats-credentials")...)
		dir := t.TempDir()
		c.fails("do not verify", "", arg("migrate", "drop-nats-user-credential-table", "--backup", filepath.Join(dir, "early"), "--yes")...)

		before := migrationState(t, db)
		dry := c.ok("", arg("migrate", "nats-credentials", "--dry-run")...).stdout
		if !strings.Contains(dry, "DRY RUN") || !slices.Equal(migrationState(t, db), before) {
			t.Fatalf("dry run changed the database or did not say so:\n%s", dry)
		}

		report := filepath.Join(dir, "report.json")
		c.ok("", arg("migrate", "nats-credentials", "--batch-size", "9", "--report", report)...)
		var r struct {
			Precheck struct {
				LegacyRows int64 `json:"legacy_rows"`
			} `json:"precheck"`
			Verify struct {
				Unverified   int64  `json:"unverified"`
				SourceDigest string `json:"source_digest"`
				TargetDigest string `json:"target_digest"`
			} `json:"verify"`
		}
		b, err := os.ReadFile(report)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, &r); err != nil {
			t.Fatal(err)
		}
		if r.Precheck.LegacyRows == 0 || r.Verify.Unverified != 0 || r.Verify.SourceDigest != r.Verify.TargetDigest {
			t.Fatalf("report: %s", b)
		}
		c.ok("", arg("migrate", "verify-nats-credentials")...)

		// The drop refuses without --yes when stdin is not a terminal, and
		// without --backup.
		backup := filepath.Join(dir, "creds.backup")
		c.fails("--yes", "drop\n", arg("migrate", "drop-nats-user-credential-table", "--backup", backup)...)
		os.Remove(backup)
		c.fails("--backup", "", arg("migrate", "drop-nats-user-credential-table", "--yes")...)
		if !tableThere(t, db, "nats_user_credentials") {
			t.Fatal("table dropped by a refused command")
		}
		migrated := migrationState(t, db)
		c.ok("", arg("migrate", "drop-nats-user-credential-table", "--backup", backup, "--yes")...)
		if fi, err := os.Stat(backup); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("backup: %v %v", fi, err)
		}
		if tableThere(t, db, "nats_user_credentials") {
			t.Fatal("table not dropped")
		}
		c.ok("", arg("migrate", "rollback-nats-credentials", "--from-backup", backup)...)
		if got := migrationState(t, db); !slices.Equal(got, migrated) {
			t.Fatal("rollback did not restore the table exactly")
		}
		c.ok("", arg("migrate", "verify-nats-credentials")...)
	})
}

// checkpoint is mulchat_credmigrate_checkpoint's row ("" phase: none yet).
type checkpoint struct {
	phase string
	last  int64
}

func readCheckpoint(db *legacytest.DB) checkpoint {
	var c checkpoint
	db.SQL.QueryRow("SELECT phase, last_user_id FROM mulchat_credmigrate_checkpoint").Scan(&c.phase, &c.last)
	return c
}

// inside reports whether a kill that found the checkpoint at after (having
// been at before when the process started) landed inside the migration: at
// least one batch of that process committed and the run had not finished.
func (after checkpoint) inside(before checkpoint) bool {
	switch after.phase {
	case "copy":
		return after.last > before.last
	case "final":
		return before.phase != "final"
	}
	return false
}

// The migration killed with SIGKILL at random points on both databases:
// every rerun completes, verifies, and ends in exactly the state of an
// uninterrupted run, and a further rerun writes nothing.
//
// Kills are placed two ways. Most watch the checkpoint and kill right after
// it advances past a random user id (or reaches the final pass), which lands
// inside the migration whatever the machine's speed; the others kill after a
// random delay within an observed run's duration, which also reaches the
// start-up (index build, pre-check) and the final steps. Runs go on until at
// least 20 kills landed, 10 of them between committed batches, bounded by 60
// runs: only a migration that keeps finishing before any kill fails the
// count.
func TestCredentialMigrationCrash(t *testing.T) {
	dialects(t, func(t *testing.T, dialect string) {
		c := newCLI(t)
		opts := legacygen.Options{Users: 150, Seed: 12, UserNATSColumns: legacygen.UserNATSColumns, PlaintextPasswordRate: 0.03}
		fresh := func() *legacytest.DB {
			db := newLegacyDB(t, dialect, opts)
			c.ok("", "--database-url", db.URL, "migrate", "adopt")
			return db
		}
		migrate := func(db *legacytest.DB, extra ...string) []string {
			return append([]string{"--data-dir", c.dataDir, "--database-url", db.URL, "migrate", "nats-credentials", "--batch-size", "4"}, extra...)
		}
		ref := fresh()
		var maxUser int64
		if err := ref.SQL.QueryRow("SELECT max(user_id) FROM nats_user_credentials").Scan(&maxUser); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		c.ok("", migrate(ref)[2:]...)
		full := time.Since(start) // the longest full run seen so far
		want := migrationState(t, ref)

		rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
		const maxRuns, wantKills, wantInside = 60, 20, 10
		kills, inside, runs, waits := 0, 0, 0, 0
		for ; runs < maxRuns && (kills < wantKills || inside < wantInside); runs++ {
			db := fresh()
			for range 1 + rng.IntN(2) {
				before := readCheckpoint(db)
				cmd := exec.Command(binary, migrate(db)...)
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				exited := make(chan struct{})
				go func() { cmd.Wait(); close(exited) }()
				if rng.IntN(3) == 0 {
					select {
					case <-time.After(time.Duration(rng.Int64N(int64(full)))):
					case <-exited:
					}
				} else {
					// A target past the checkpoint, or (one in eight) the final pass.
					target := before.last + 1 + rng.Int64N(max(maxUser-before.last, 1))
					if rng.IntN(8) == 0 {
						target = maxUser + 1
					}
				watch:
					for cp := before; !(cp.phase == "copy" && cp.last >= target || cp.phase == "final" && before.phase != "final"); cp = readCheckpoint(db) {
						select {
						case <-exited:
							break watch
						case <-time.After(time.Millisecond):
						}
					}
				}
				cmd.Process.Signal(syscall.SIGKILL)
				<-exited
				if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
					kills++
					if readCheckpoint(db).inside(before) {
						inside++
					}
				}
			}
			rerun := c.ok("", migrate(db)[2:]...)
			if strings.Contains(rerun.stderr, "waiting") {
				waits++ // for the lock, or for a killed run's backend (PostgreSQL)
			}
			if got := migrationState(t, db); !slices.Equal(got, want) {
				diffStates(t, runs, got, want)
			}
			// A rerun of a finished run writes nothing.
			report := filepath.Join(t.TempDir(), "r.json")
			start := time.Now()
			c.ok("", migrate(db, "--report", report)[2:]...)
			full = max(full, time.Since(start))
			b, _ := os.ReadFile(report)
			var r struct {
				Copy   struct{ Written int64 } `json:"copy"`
				Verify struct{ Written int64 } `json:"verify"`
			}
			json.Unmarshal(b, &r)
			if r.Copy.Written != 0 || r.Verify.Written != 0 {
				t.Fatalf("run %d: the rerun of a finished migration wrote %d+%d users", runs, r.Copy.Written, r.Verify.Written)
			}
			db.SQL.Close()
		}
		t.Logf("%s: %d runs, %d kills landed while the process ran, %d of them between committed batches, %d reruns waited for a lock (longest full run %v)",
			dialect, runs, kills, inside, waits, full)
		if kills < wantKills || inside < wantInside {
			t.Errorf("after %d runs only %d kills landed (%d between batches), want at least %d (%d)", runs, kills, inside, wantKills, wantInside)
		}
	})
}

// Two `migrate nats-credentials` processes started together on one
// database: the second waits for the first's lock, both succeed, and the
// database ends as after a single run.
func TestCredentialMigrationConcurrentCommands(t *testing.T) {
	dialects(t, func(t *testing.T, dialect string) {
		c := newCLI(t)
		opts := legacygen.Options{Users: 100, Seed: 14, UserNATSColumns: legacygen.UserNATSColumns, PlaintextPasswordRate: 0.03}
		var dbs [2]*legacytest.DB
		for i := range dbs {
			dbs[i] = newLegacyDB(t, dialect, opts) // the same seed gives the same database
			c.ok("", "--database-url", dbs[i].URL, "migrate", "adopt")
		}
		migrate := func(db *legacytest.DB) []string {
			return []string{"--database-url", db.URL, "migrate", "nats-credentials", "--batch-size", "4"}
		}
		c.ok("", migrate(dbs[0])...)
		want := migrationState(t, dbs[0])

		done := make(chan result, 2)
		for range 2 {
			go func() { done <- c.run("", migrate(dbs[1])...) }()
		}
		waited := 0
		for range 2 {
			r := <-done
			if r.code != 0 {
				t.Fatalf("concurrent run exited %d:\n%s\n%s", r.code, r.stdout, r.stderr)
			}
			if strings.Contains(r.stderr, "waiting for it to finish") {
				waited++
			}
		}
		t.Logf("%s: %d of the two runs waited for the other", dialect, waited)
		if got := migrationState(t, dbs[1]); !slices.Equal(got, want) {
			diffStates(t, 0, got, want)
		}
	})
}

func diffStates(t *testing.T, run int, got, want []string) {
	t.Helper()
	for i := range min(len(got), len(want)) {
		if got[i] != want[i] {
			t.Fatalf("run %d: state differs from an uninterrupted run:\n got  %s\n want %s", run, got[i], want[i])
		}
	}
	t.Fatalf("run %d: %d state rows, want %d", run, len(got), len(want))
}

// `nats import-nsc` on an adopted legacy database, twice (idempotent), and
// its refusal when the key store lacks the operator seed.
func TestNATSImportNSCCommand(t *testing.T) {
	c := newCLI(t)
	db := legacytest.SQLite(t)
	res, err := legacygen.Generate(context.Background(), db.SQL, db.Dialect, legacygen.Options{Users: 20, Seed: 13})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	keystore, store := filepath.Join(dir, "keys"), filepath.Join(dir, "stores")
	if err := legacygen.WriteNSCKeystore(res, keystore, store); err != nil {
		t.Fatal(err)
	}
	c.fails("migrate adopt", "", "--database-url", db.URL, "nats", "import-nsc", "--keystore", keystore, "--store", store)
	c.ok("", "--database-url", db.URL, "migrate", "adopt")
	empty := t.TempDir()
	c.fails("not in the key store", "", "--database-url", db.URL, "nats", "import-nsc", "--keystore", empty, "--store", store)
	for range 2 {
		out := c.ok("", "--database-url", db.URL, "nats", "import-nsc", "--keystore", keystore, "--store", store).stdout
		if !strings.Contains(out, res.AccountPublicKey) || !strings.Contains(out, "completed") {
			t.Fatalf("import output:\n%s", out)
		}
	}
	if fi, err := os.Stat(filepath.Join(c.dataDir, "master.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("master key: %v %v", fi, err)
	}
}
