package credmigrate_test

import (
	"context"
	"crypto/rand"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/mulchat/mulchat/internal/authority"
	"github.com/mulchat/mulchat/internal/credmigrate"
	"github.com/mulchat/mulchat/internal/legacygen"
	"github.com/mulchat/mulchat/internal/legacygen/legacytest"
	"github.com/mulchat/mulchat/internal/natsd"
)

// After the migration and the nsc import, a user whose legacy credential was
// valid connects to NATS with the same .creds file, and mulchat's authority
// signs for the legacy accounts.
func TestImportNSCKeepsLegacyCredentialsValid(t *testing.T) {
	legacytest.ForEach(t, func(t *testing.T, db *legacytest.DB) {
		ctx := context.Background()
		e := newEnv(t, db, legacygen.Options{Users: 60, Seed: 8})
		dir := t.TempDir()
		keystore, store := filepath.Join(dir, "nkeys"), filepath.Join(dir, "nsc")
		if err := legacygen.WriteNSCKeystore(e.res, keystore, store); err != nil {
			t.Fatal(err)
		}
		// The legacy app issued user 3 a credential an hour ago (nsc
		// generated the key pair; the user holds the .creds file).
		userKP, _ := nkeys.CreateUser()
		userPub, _ := userKP.PublicKey()
		userSeed, _ := userKP.Seed()
		acct, _ := nkeys.FromSeed(e.res.AccountSeed)
		uc := jwt.NewUserClaims(userPub)
		uc.Expires = time.Now().Add(time.Hour).Unix()
		token, err := legacygen.EncodeUserJWT(uc, acct, time.Now().Add(-time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		var uid int64 = 3
		q := "INSERT INTO nats_user_credentials (user_id, jwt, public_key, account_id, account_public_key) VALUES (?, ?, ?, 1, ?)"
		if e.dialect == "postgres" {
			q = "INSERT INTO nats_user_credentials (user_id, jwt, public_key, account_id, account_public_key) VALUES ($1, $2, $3, 1, $4)"
		}
		if _, err := e.legacy.SQL.Exec(q, uid, token, userPub, e.res.AccountPublicKey); err != nil {
			t.Fatal(err)
		}
		e.adopt(t)
		if _, err := e.migrator(t, credmigrate.Options{}).Run(ctx); err != nil {
			t.Fatal(err)
		}

		mk := make([]byte, authority.MasterKeySize)
		rand.Read(mk)
		opts := credmigrate.NSCImportOptions{KeystoreDir: keystore, StoreDir: store, MasterKey: mk, Encrypt: authority.EncryptSeed}
		imp, err := credmigrate.ImportNSC(ctx, e.db, e.dialect, opts)
		if err != nil {
			t.Fatal(err)
		}
		if len(imp.Accounts) != 2 || !imp.Accounts[0].Existing {
			t.Fatalf("import: %+v", imp)
		}
		if _, err := credmigrate.ImportNSC(ctx, e.db, e.dialect, opts); err != nil {
			t.Fatalf("second import: %v", err)
		}

		a, err := authority.Open(ctx, authority.Config{Store: e.store, MasterKey: mk, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatalf("authority on the imported keys: %v", err)
		}
		if a.ChatAccountPublicKey() != e.res.AccountPublicKey {
			t.Fatalf("chat account %s, want the legacy %s", a.ChatAccountPublicKey(), e.res.AccountPublicKey)
		}
		creds, err := authority.CredsFile(token, userSeed)
		if err != nil {
			t.Fatal(err)
		}
		v, err := a.VerifyCreds(ctx, creds)
		if err != nil || !v.Valid() || v.UserID != uid {
			t.Fatalf("legacy creds after migration: %+v %v", v, err)
		}

		jwts, err := a.AccountJWTs(ctx)
		if err != nil {
			t.Fatal(err)
		}
		srv, err := natsd.Start(natsd.Options{DataDir: t.TempDir(), Port: -1, OperatorJWT: a.OperatorJWT(),
			SystemAccount: a.SystemAccountPublicKey(), AccountJWTs: jwts, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		defer srv.Shutdown()
		nc, err := nats.Connect(srv.ClientURL(), nats.UserJWTAndSeed(token, string(userSeed)))
		if err != nil {
			t.Fatalf("connecting with the legacy creds: %v", err)
		}
		defer nc.Close()
		sub, err := nc.SubscribeSync("legacy.echo")
		if err != nil {
			t.Fatal(err)
		}
		if err := nc.Publish("legacy.echo", []byte("hello")); err != nil {
			t.Fatal(err)
		}
		if msg, err := sub.NextMsg(5 * time.Second); err != nil || string(msg.Data) != "hello" {
			t.Fatalf("round trip with the legacy creds: %v", err)
		}
	})
}
