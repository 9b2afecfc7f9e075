package authority

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mulchat/mulchat"
	"github.com/mulchat/mulchat/internal/sqlstore"
	"github.com/mulchat/mulchat/internal/sqlstore/sqltest"
	"github.com/mulchat/mulchat/internal/testenv"
	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

func TestOpenCreatesOperatorAndAccountsOnce(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlstore.DB) {
		ctx := context.Background()
		key := randomMasterKey(t)
		// Two instances starting together on an empty database agree on one
		// operator.
		var wg sync.WaitGroup
		auths := make([]*Authority, 3)
		errs := make([]error, 3)
		for i := range auths {
			wg.Go(func() { auths[i], errs[i] = Open(ctx, Config{Store: db, MasterKey: key}) })
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("Open %d: %v", i, err)
			}
		}
		for _, a := range auths[1:] {
			if a.OperatorJWT() != auths[0].OperatorJWT() || a.ChatAccountPublicKey() != auths[0].ChatAccountPublicKey() ||
				a.SystemAccountPublicKey() != auths[0].SystemAccountPublicKey() {
				t.Fatal("concurrent Opens created different identities")
			}
		}
		a := auths[0]
		op, err := jwt.DecodeOperatorClaims(a.OperatorJWT())
		if err != nil {
			t.Fatal(err)
		}
		if op.SystemAccount != a.SystemAccountPublicKey() {
			t.Errorf("operator names system account %s, want %s", op.SystemAccount, a.SystemAccountPublicKey())
		}
		accts, err := db.ListNATSAccounts(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(accts) != 2 {
			t.Fatalf("%d accounts, want SYS and chat", len(accts))
		}
		for _, acct := range accts {
			ac, err := jwt.DecodeAccountClaims(acct.JWT)
			if err != nil {
				t.Fatal(err)
			}
			if ac.Issuer != op.Subject {
				t.Errorf("account %s issued by %s", acct.Name, ac.Issuer)
			}
			if !ac.SigningKeys.Contains(acct.SigningPublicKey) {
				t.Errorf("account %s JWT does not list its signing key", acct.Name)
			}
			if acct.Name == mulchat.ChatAccountName && !ac.Limits.IsJSEnabled() {
				t.Error("chat account has JetStream disabled")
			}
			if strings.HasPrefix(string(acct.SeedEncrypted), "S") || strings.HasPrefix(string(acct.SigningKeyEncrypted), "S") {
				t.Errorf("account %s seed stored in clear", acct.Name)
			}
		}
		// A later start loads the same identity.
		b := openAuthority(t, db, key)
		if b.OperatorJWT() != a.OperatorJWT() {
			t.Error("reopen changed the operator")
		}
	})
}

func TestOpenWrongMasterKeyIsClearErrorAndChangesNothing(t *testing.T) {
	db := sqltest.OpenSQLite(t)
	ctx := context.Background()
	key := randomMasterKey(t)
	a := openAuthority(t, db, key)
	_, err := Open(ctx, Config{Store: db, MasterKey: randomMasterKey(t)})
	if mulchat.ErrorCode(err) != mulchat.EINVALID || !strings.Contains(err.Error(), "master key does not match this database") {
		t.Fatalf("err = %v, want EINVALID 'master key does not match this database'", err)
	}
	if _, err := Open(ctx, Config{Store: db, MasterKey: []byte("short")}); mulchat.ErrorCode(err) != mulchat.EINVALID {
		t.Fatalf("short key: err = %v", err)
	}
	b := openAuthority(t, db, key)
	if b.OperatorJWT() != a.OperatorJWT() || b.ChatAccountPublicKey() != a.ChatAccountPublicKey() {
		t.Fatal("a failed Open with a wrong key changed the stored identity")
	}
}

func TestIssueWritesUserColumns(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlstore.DB) {
		ctx := context.Background()
		a := openAuthority(t, db, randomMasterKey(t))
		u := createUser(t, db, "alice")
		if err := db.CreatePermission(ctx, &mulchat.Permission{UserID: u.ID, Type: mulchat.PermBoth, Subject: "bots.alice.>"}); err != nil {
			t.Fatal(err)
		}

		// Server-generated pair.
		ic, err := a.IssueUserCredential(ctx, u.ID, "", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if ic.Seed == nil || ic.Creds == nil {
			t.Fatal("generated credential without seed or creds")
		}
		got, err := db.GetUserNATSCredential(ctx, u.ID)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(ic.Seed)
		want := mulchat.NATSCredential{
			JWT: ic.JWT, SeedHash: hex.EncodeToString(sum[:]), PublicKey: ic.PublicKey,
			AccountID: a.chat.id, AccountPublicKey: a.ChatAccountPublicKey(),
		}
		if got.JWT != want.JWT || got.SeedHash != want.SeedHash || got.PublicKey != want.PublicKey ||
			got.AccountID != want.AccountID || got.AccountPublicKey != want.AccountPublicKey ||
			got.ExpiresAt == nil || !got.ExpiresAt.Equal(ic.ExpiresAt) || got.ExpiredAt != nil {
			t.Fatalf("stored %+v\nwant %+v expires %v", got, want, ic.ExpiresAt)
		}
		uc, err := jwt.DecodeUserClaims(ic.JWT)
		if err != nil {
			t.Fatal(err)
		}
		uid := strconv.FormatInt(u.ID, 10)
		if uc.Issuer != a.chat.signerPub || uc.IssuerAccount != a.ChatAccountPublicKey() || uc.Name != "alice" ||
			uc.Subject != ic.PublicKey || uc.Expires != ic.ExpiresAt.Unix() {
			t.Errorf("claims: issuer %s account %s name %s subject %s exp %d", uc.Issuer, uc.IssuerAccount, uc.Name, uc.Subject, uc.Expires)
		}
		for _, s := range []string{"chat.send.*." + uid, "chat.api." + uid + ".>", "bots.alice.>"} {
			if !uc.Pub.Allow.Contains(s) {
				t.Errorf("pub allow lacks %s: %v", s, uc.Pub.Allow)
			}
		}
		for _, s := range []string{"chat.user." + uid + ".>", "_INBOX." + uid + ".>", "bots.alice.>"} {
			if !uc.Sub.Allow.Contains(s) {
				t.Errorf("sub allow lacks %s: %v", s, uc.Sub.Allow)
			}
		}
		if uc.Limits.Payload != UserMaxPayload || uc.Limits.Subs != UserMaxSubs {
			t.Errorf("limits %+v", uc.Limits)
		}

		// A client-supplied key replaces it; the old, still active key is
		// revoked in the account JWT in the same step.
		kp, _ := nkeys.CreateUser()
		pub, _ := kp.PublicKey()
		ic2, err := a.IssueUserCredential(ctx, u.ID, pub, 0)
		if err != nil {
			t.Fatal(err)
		}
		if ic2.Seed != nil || ic2.Creds != nil {
			t.Error("client-key credential returned a seed")
		}
		got, _ = db.GetUserNATSCredential(ctx, u.ID)
		if got.PublicKey != pub || got.SeedHash != "" || got.JWT != ic2.JWT {
			t.Errorf("after client-key issue: %+v", got)
		}
		if d := ic2.ExpiresAt.Sub(time.Now()); d < 23*time.Hour || d > 25*time.Hour {
			t.Errorf("default ttl gave expiry in %s", d)
		}
		if !chatRevocations(t, db, a)[ic.PublicKey] {
			t.Error("replaced active key not revoked in the account JWT")
		}
		// The revoked key cannot come back.
		if _, err := a.IssueUserCredential(ctx, u.ID, ic.PublicKey, 0); mulchat.ErrorCode(err) != mulchat.EFORBIDDEN {
			t.Errorf("reissuing a revoked key: err = %v, want EFORBIDDEN", err)
		}
		// The same key may be issued again while active (a re-issue).
		if _, err := a.IssueUserCredential(ctx, u.ID, pub, time.Hour); err != nil {
			t.Errorf("re-issuing the current key: %v", err)
		}
		// Another user cannot take this user's key.
		bob := createUser(t, db, "bob")
		if _, err := a.IssueUserCredential(ctx, bob.ID, pub, 0); mulchat.ErrorCode(err) != mulchat.ECONFLICT {
			t.Errorf("issuing another user's key: err = %v, want ECONFLICT", err)
		}
	})
}

func chatRevocations(t testing.TB, db mulchat.Store, a *Authority) map[string]bool {
	t.Helper()
	acct, err := db.NATSAccountByPublicKey(context.Background(), a.ChatAccountPublicKey())
	if err != nil {
		t.Fatal(err)
	}
	ac, err := jwt.DecodeAccountClaims(acct.JWT)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for k := range ac.Revocations {
		out[k] = true
	}
	return out
}

func TestIssueRejectsBadInput(t *testing.T) {
	db := sqltest.OpenSQLite(t)
	ctx := context.Background()
	a := openAuthority(t, db, randomMasterKey(t))
	u := createUser(t, db, "carol")
	disabled := createUser(t, db, "dave")
	if err := db.UpdateUserActive(ctx, disabled.ID, false); err != nil {
		t.Fatal(err)
	}
	userKP, _ := nkeys.CreateUser()
	userSeed, _ := userKP.Seed()
	acctKP, _ := nkeys.CreateAccount()
	acctPub, _ := acctKP.PublicKey()
	cases := []struct {
		name   string
		userID int64
		key    string
		ttl    time.Duration
		code   string
	}{
		{"seed instead of public key", u.ID, string(userSeed), 0, mulchat.EINVALID},
		{"account key", u.ID, acctPub, 0, mulchat.EINVALID},
		{"garbage", u.ID, "U-not-a-key", 0, mulchat.EINVALID},
		{"subject metacharacters", u.ID, "UABC.>*", 0, mulchat.EINVALID},
		{"ttl too short", u.ID, "", 30 * time.Second, mulchat.EINVALID},
		{"ttl too long", u.ID, "", 31 * 24 * time.Hour, mulchat.EINVALID},
		{"negative ttl", u.ID, "", -time.Hour, mulchat.EINVALID},
		{"disabled user", disabled.ID, "", 0, mulchat.EFORBIDDEN},
		{"unknown user", 999999, "", 0, mulchat.ENOTFOUND},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := a.IssueUserCredential(ctx, c.userID, c.key, c.ttl)
			if mulchat.ErrorCode(err) != c.code {
				t.Fatalf("err = %v, want %s", err, c.code)
			}
			if strings.Contains(err.Error(), string(userSeed)) {
				t.Error("error echoes the seed")
			}
		})
	}
	got, err := db.GetUserNATSCredential(ctx, u.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.PublicKey != "" || got.JWT != "" {
		t.Errorf("failed issues wrote a credential: %+v", got)
	}
}

func TestRenewAndRevokeRules(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlstore.DB) {
		ctx := context.Background()
		clk := newClock(time.Now())
		a := openAuthority(t, db, randomMasterKey(t), func(c *Config) { c.Now = clk.Now })
		u := createUser(t, db, "erin")

		if _, err := a.RenewUserCredential(ctx, u.ID, 0); mulchat.ErrorCode(err) != mulchat.ENOTFOUND {
			t.Errorf("renew without credential: err = %v, want ENOTFOUND", err)
		}
		if err := a.RevokeUserCredential(ctx, u.ID); mulchat.ErrorCode(err) != mulchat.ENOTFOUND {
			t.Errorf("revoke without credential: err = %v, want ENOTFOUND", err)
		}
		ic, err := a.IssueUserCredential(ctx, u.ID, "", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		before, _ := db.GetUserNATSCredential(ctx, u.ID)

		// Past its expiry, the same key may be renewed.
		clk.Add(2 * time.Hour)
		rc, err := a.RenewUserCredential(ctx, u.ID, 2*time.Hour)
		if err != nil {
			t.Fatalf("renew expired credential: %v", err)
		}
		if rc.PublicKey != ic.PublicKey || rc.Seed != nil || !rc.ExpiresAt.After(ic.ExpiresAt) || rc.JWT == ic.JWT {
			t.Errorf("renewed %+v from %+v", rc, ic)
		}
		after, _ := db.GetUserNATSCredential(ctx, u.ID)
		if after.SeedHash != before.SeedHash || after.PublicKey != before.PublicKey || after.JWT != rc.JWT ||
			!after.ExpiresAt.Equal(rc.ExpiresAt) {
			t.Errorf("after renew: %+v", after)
		}

		var kicked []string
		a.SetKicker(func(_ context.Context, userID int64, pub string) error {
			kicked = append(kicked, fmt.Sprint(userID, pub))
			return nil
		})
		if err := a.RevokeUserCredential(ctx, u.ID); err != nil {
			t.Fatal(err)
		}
		revoked, _ := db.GetUserNATSCredential(ctx, u.ID)
		if revoked.ExpiredAt == nil || revoked.PublicKey != ic.PublicKey {
			t.Fatalf("after revoke: %+v", revoked)
		}
		if !chatRevocations(t, db, a)[ic.PublicKey] {
			t.Error("revoked key missing from the account JWT")
		}
		// Revoking again is a no-op in the store that kicks again.
		if err := a.RevokeUserCredential(ctx, u.ID); err != nil {
			t.Fatalf("second revoke: %v", err)
		}
		again, _ := db.GetUserNATSCredential(ctx, u.ID)
		if !again.ExpiredAt.Equal(*revoked.ExpiredAt) {
			t.Error("second revoke moved nats_expired_at")
		}
		if want := fmt.Sprint(u.ID, ic.PublicKey); len(kicked) != 2 || kicked[0] != want {
			t.Errorf("kicked %v, want twice %s", kicked, want)
		}
		if _, err := a.RenewUserCredential(ctx, u.ID, 0); mulchat.ErrorCode(err) != mulchat.EFORBIDDEN {
			t.Errorf("renew revoked: err = %v, want EFORBIDDEN", err)
		}
		// A new key is the way back.
		if _, err := a.IssueUserCredential(ctx, u.ID, "", 0); err != nil {
			t.Errorf("issue after revoke: %v", err)
		}
	})
}

// TestCredentialOnRealServer is the end-to-end check of the JWT's permission
// set against a real nats-server configured from the authority's output.
func TestCredentialOnRealServer(t *testing.T) {
	db := sqltest.OpenSQLite(t)
	ctx := context.Background()
	a := openAuthority(t, db, randomMasterKey(t))
	alice := createUser(t, db, "alice")
	bob := createUser(t, db, "bob")
	ns := startNATS(t, a)
	_, svc := wireServices(t, a, ns.ClientURL())

	ic, err := a.IssueUserCredential(ctx, alice.ID, "", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.IssueUserCredential(ctx, bob.ID, "", time.Hour); err != nil {
		t.Fatal(err)
	}
	errOpt, errs := asyncErrors()
	nc, err := nats.Connect(ns.ClientURL(), nats.UserCredentials(writeCreds(t, ic.Creds)), errOpt,
		nats.CustomInboxPrefix(mulchat.UserInboxPrefix(alice.ID)))
	if err != nil {
		t.Fatalf("connect with issued creds file: %v", err)
	}
	defer nc.Close()

	aid, bid := strconv.FormatInt(alice.ID, 10), strconv.FormatInt(bob.ID, 10)

	// Allowed: send as herself (the service sees it and replies to her
	// inbox), and receive her deliveries.
	sends, err := svc.SubscribeSync("chat.send.>")
	if err != nil {
		t.Fatal(err)
	}
	svcReplies, err := svc.Subscribe("chat.send.>", func(m *nats.Msg) { _ = m.Respond([]byte("ack")) })
	if err != nil {
		t.Fatal(err)
	}
	defer svcReplies.Unsubscribe()
	svc.Flush()
	reply, err := nc.Request("chat.send.7."+aid, []byte("hi"), 5*time.Second)
	if err != nil || string(reply.Data) != "ack" {
		t.Fatalf("send as self: %v", err)
	}
	if m, err := sends.NextMsg(5 * time.Second); err != nil || m.Subject != "chat.send.7."+aid {
		t.Fatalf("service did not see the send: %v", err)
	}
	deliveries, err := nc.SubscribeSync("chat.user." + aid + ".>")
	if err != nil {
		t.Fatal(err)
	}
	nc.Flush()
	if err := svc.Publish("chat.user."+aid+".msg", []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if _, err := deliveries.NextMsg(5 * time.Second); err != nil {
		t.Fatalf("own delivery not received: %v", err)
	}

	// Denied, each named.
	denied := []struct {
		name    string
		subject string
		do      func() error
	}{
		{"publish as another user", "chat.send.7." + bid, func() error { return nc.Publish("chat.send.7."+bid, []byte("spoof")) }},
		{"publish on the history subject", "chat.room.7", func() error { return nc.Publish("chat.room.7", []byte("x")) }},
		{"api as another user", "chat.api." + bid + ".history", func() error { return nc.Publish("chat.api."+bid+".history", nil) }},
		{"subscribe to another user's deliveries", "chat.user." + bid + ".>", func() error {
			_, err := nc.SubscribeSync("chat.user." + bid + ".>")
			return err
		}},
		{"subscribe to another user's inbox", "_INBOX." + bid + ".>", func() error {
			_, err := nc.SubscribeSync("_INBOX." + bid + ".>")
			return err
		}},
		{"subscribe to room history", "chat.room.>", func() error {
			_, err := nc.SubscribeSync("chat.room.>")
			return err
		}},
	}
	for _, d := range denied {
		t.Run(d.name, func(t *testing.T) {
			if err := d.do(); err != nil {
				t.Fatal(err)
			}
			nc.Flush()
			waitPermissionViolation(t, errs, d.subject)
		})
	}
	if !nc.IsConnected() {
		t.Fatal("permission violations closed the connection")
	}
}

func TestRevocationClosesLiveConnectionAndRefusesReconnect(t *testing.T) {
	db := sqltest.OpenSQLite(t)
	ctx := context.Background()
	a := openAuthority(t, db, randomMasterKey(t))
	u := createUser(t, db, "frank")
	ns := startNATS(t, a)
	wireServices(t, a, ns.ClientURL())
	// The kicker is deliberately a no-op: the server itself must close the
	// connection when it applies the account JWT with the revocation.
	kicked := make(chan string, 1)
	a.SetKicker(func(_ context.Context, _ int64, pub string) error { kicked <- pub; return nil })

	ic, err := a.IssueUserCredential(ctx, u.ID, "", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	credsPath := writeCreds(t, ic.Creds)
	closed := connectWatched(t, ns.ClientURL(), credsPath)
	if err := a.RevokeUserCredential(ctx, u.ID); err != nil {
		t.Fatal(err)
	}
	closedWithinASecond(t, closed, "the revoked key's live connection")
	if got := <-kicked; got != ic.PublicKey {
		t.Errorf("kicker got %s", got)
	}
	_, err = nats.Connect(ns.ClientURL(), nats.UserCredentials(credsPath), nats.NoReconnect())
	if err == nil {
		t.Fatal("revoked credential connected")
	}
	t.Logf("reconnect refused: %v", err)

	// A server started later from the stored account JWTs refuses it too.
	ns2 := startNATS(t, a)
	if _, err := nats.Connect(ns2.ClientURL(), nats.UserCredentials(credsPath), nats.NoReconnect()); err == nil {
		t.Fatal("revoked credential accepted by a freshly preloaded server")
	}
}

func TestExpiredCredentialRefused(t *testing.T) {
	db := sqltest.OpenSQLite(t)
	ctx := context.Background()
	key := randomMasterKey(t)
	a := openAuthority(t, db, key)
	// An authority whose clock is two hours behind signs a one-hour JWT
	// that is already expired by the real clock.
	past := openAuthority(t, db, key, func(c *Config) { c.Now = func() time.Time { return time.Now().Add(-2 * time.Hour) } })
	u := createUser(t, db, "gina")
	ns := startNATS(t, a)
	ic, err := past.IssueUserCredential(ctx, u.ID, "", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	_, err = nats.Connect(ns.ClientURL(), nats.UserCredentials(writeCreds(t, ic.Creds)), nats.NoReconnect())
	if err == nil {
		t.Fatal("expired credential connected")
	}
	t.Logf("expired refused: %v", err)
	v, err := a.VerifyCreds(ctx, ic.Creds)
	if err != nil {
		t.Fatal(err)
	}
	if !v.Expired || v.Valid() {
		t.Errorf("verification of expired creds: %+v", v)
	}
}

func TestServerConfigAcceptedByStockServer(t *testing.T) {
	db := sqltest.OpenSQLite(t)
	ctx := context.Background()
	a := openAuthority(t, db, randomMasterKey(t))
	u := createUser(t, db, "hank")
	dir := t.TempDir()
	text, err := a.ServerConfig(ctx, ServerConfigOptions{
		Host: "127.0.0.1", Port: -1, WSPort: -1,
		ResolverDir:  filepath.Join(dir, "resolver"),
		JetStreamDir: filepath.Join(dir, "js"),
		ServerName:   "mulchat-test",
	})
	if err != nil {
		t.Fatal(err)
	}
	if seedPattern.MatchString(text) {
		t.Error("server config contains something shaped like a seed")
	}
	path := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		t.Fatalf("stock nats-server refuses the config: %v\n%s", err, text)
	}
	opts.NoSigs, opts.NoLog = true, true
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	defer func() { s.Shutdown(); s.WaitForShutdown() }()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("server from config not ready")
	}
	ic, err := a.IssueUserCredential(ctx, u.ID, "", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(s.ClientURL(), nats.UserCredentials(writeCreds(t, ic.Creds)))
	if err != nil {
		t.Fatalf("issued creds refused by the configured server: %v", err)
	}
	defer nc.Close()
	sub, err := nc.SubscribeSync(mulchat.UserSubject(u.ID, "msg"))
	if err != nil {
		t.Fatal(err)
	}
	nc.Flush()
	_, svc := wireServices(t, a, s.ClientURL())
	if err := svc.Publish(mulchat.UserSubject(u.ID, "msg"), []byte("hi")); err != nil {
		t.Fatal(err)
	}
	if _, err := sub.NextMsg(5 * time.Second); err != nil {
		t.Fatalf("delivery through the configured server: %v", err)
	}
	// JetStream is available to the chat account's services.
	js, err := svc.JetStream()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.AccountInfo(); err != nil {
		t.Fatalf("JetStream not enabled for the chat account: %v", err)
	}
	// The push path works against it too (full resolver).
	if err := a.PushAccounts(ctx); err != nil {
		t.Fatalf("PushAccounts: %v", err)
	}
}

func TestServiceCredentials(t *testing.T) {
	db := sqltest.OpenSQLite(t)
	ctx := context.Background()
	a := openAuthority(t, db, randomMasterKey(t))
	ns := startNATS(t, a)
	for _, system := range []bool{false, true} {
		token, seed, err := a.ServiceCredentials(ctx, "svc", system)
		if err != nil {
			t.Fatal(err)
		}
		uc, err := jwt.DecodeUserClaims(token)
		if err != nil {
			t.Fatal(err)
		}
		want := a.ChatAccountPublicKey()
		if system {
			want = a.SystemAccountPublicKey()
		}
		if uc.IssuerAccount != want {
			t.Errorf("system=%v: account %s, want %s", system, uc.IssuerAccount, want)
		}
		nc, err := nats.Connect(ns.ClientURL(), nats.UserJWTAndSeed(token, string(seed)))
		if err != nil {
			t.Fatalf("system=%v: %v", system, err)
		}
		if system {
			// Only the system account may ask the servers about themselves.
			if _, err := nc.Request("$SYS.REQ.SERVER.PING", nil, 5*time.Second); err != nil {
				t.Errorf("SYS user cannot ping servers: %v", err)
			}
		} else {
			js, _ := nc.JetStream()
			if _, err := js.AccountInfo(); err != nil {
				t.Errorf("chat service user has no JetStream: %v", err)
			}
		}
		nc.Close()
	}
	if _, _, err := a.ServiceCredentials(ctx, "", false); mulchat.ErrorCode(err) != mulchat.EINVALID {
		t.Errorf("empty service name: err = %v", err)
	}
}

func TestVerifyCreds(t *testing.T) {
	db := sqltest.OpenSQLite(t)
	ctx := context.Background()
	key := randomMasterKey(t)
	a := openAuthority(t, db, key)
	past := openAuthority(t, db, key, func(c *Config) { c.Now = func() time.Time { return time.Now().Add(-2 * time.Hour) } })
	mk := func(name string) *mulchat.User { return createUser(t, db, name) }

	valid, _ := a.IssueUserCredential(ctx, mk("valid").ID, "", time.Hour)
	revokedUser := mk("revoked")
	revoked, _ := a.IssueUserCredential(ctx, revokedUser.ID, "", time.Hour)
	if err := a.RevokeUserCredential(ctx, revokedUser.ID); err != nil {
		t.Fatal(err)
	}
	expired, _ := past.IssueUserCredential(ctx, mk("expired").ID, "", time.Hour)
	replacedUser := mk("replaced")
	replaced, _ := a.IssueUserCredential(ctx, replacedUser.ID, "", time.Hour)
	if _, err := a.IssueUserCredential(ctx, replacedUser.ID, "", time.Hour); err != nil {
		t.Fatal(err)
	}
	// A credential signed outside this authority: right shape, unknown account.
	foreignAcct, _ := nkeys.CreateAccount()
	foreignUser, _ := nkeys.CreateUser()
	fpub, _ := foreignUser.PublicKey()
	fuc := jwt.NewUserClaims(fpub)
	fuc.Expires = time.Now().Add(time.Hour).Unix()
	foreignJWT, _ := fuc.Encode(foreignAcct)
	foreignSeed, _ := foreignUser.Seed()
	foreign, _ := CredsFile(foreignJWT, foreignSeed)

	otherKP, _ := nkeys.CreateUser()
	otherSeed, _ := otherKP.Seed()
	// CredsFile refuses to pair a JWT with another key's seed, so the file
	// is edited as an attacker would.
	mismatched := []byte(strings.Replace(string(valid.Creds), string(valid.Seed), string(otherSeed), 1))

	tamperedJWT := flipChar(valid.JWT, len(valid.JWT)/2)
	tampered := []byte(strings.Replace(string(valid.Creds), valid.JWT, tamperedJWT, 1))
	tamperedSig := []byte(strings.Replace(string(valid.Creds), valid.JWT, flipChar(valid.JWT, len(valid.JWT)-3), 1))

	type want struct {
		err                                bool
		expired, revoked, current, isValid bool
		problem                            string
	}
	cases := []struct {
		name  string
		creds []byte
		want  want
	}{
		{"valid", valid.Creds, want{current: true, isValid: true}},
		{"tampered payload", tampered, want{err: true}},
		{"tampered signature", tamperedSig, want{err: true}},
		{"truncated", valid.Creds[:len(valid.Creds)/2], want{err: true}},
		{"truncated jwt", []byte(valid.JWT[:len(valid.JWT)-10]), want{err: true}},
		{"garbage", []byte("hello, this is not a creds file"), want{err: true}},
		{"empty", nil, want{err: true}},
		{"oversize", []byte(strings.Repeat("A", MaxCredsSize+1)), want{err: true}},
		{"jwt without seed", []byte(valid.JWT), want{err: true}},
		{"seed not matching", mismatched, want{current: true, problem: "seed does not belong"}},
		{"revoked", revoked.Creds, want{revoked: true}},
		{"expired", expired.Creds, want{expired: true, current: true}},
		{"not current", replaced.Creds, want{revoked: true, problem: "no user holds this key"}},
		{"foreign account", foreign, want{problem: "account this server does not know"}},
	}
	secrets := [][]byte{valid.Seed, revoked.Seed, expired.Seed, replaced.Seed, otherSeed, foreignSeed}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v, err := a.VerifyCreds(ctx, c.creds)
			if c.want.err {
				if mulchat.ErrorCode(err) != mulchat.EINVALID {
					t.Fatalf("err = %v, want EINVALID", err)
				}
				for _, s := range secrets {
					if strings.Contains(err.Error(), string(s)) {
						t.Fatal("error contains a seed")
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if v.Expired != c.want.expired || v.Revoked != c.want.revoked || v.Current != c.want.current || v.Valid() != c.want.isValid {
				t.Errorf("got expired=%v revoked=%v current=%v valid=%v problems=%v", v.Expired, v.Revoked, v.Current, v.Valid(), v.Problems)
			}
			if c.want.problem != "" && !strings.Contains(strings.Join(v.Problems, "; "), c.want.problem) {
				t.Errorf("problems %v lack %q", v.Problems, c.want.problem)
			}
			for _, p := range v.Problems {
				for _, s := range secrets {
					if strings.Contains(p, string(s)) {
						t.Fatal("problem contains a seed")
					}
				}
			}
		})
	}
	v, _ := a.VerifyCreds(ctx, valid.Creds)
	if v.Username != "valid" || v.UserID == 0 || v.Account != a.ChatAccountPublicKey() || v.PublicKey != valid.PublicKey {
		t.Errorf("valid verification: %+v", v)
	}
}

// seedPattern matches an encoded nkey seed (operator, account or user).
var seedPattern = regexp.MustCompile(`\bS[OAU][A-Z2-7]{56}\b`)

func flipChar(s string, i int) string {
	b := []byte(s)
	if b[i] == 'A' {
		b[i] = 'B'
	} else {
		b[i] = 'A'
	}
	return string(b)
}

// TestNoSecretsInLogs runs issue/renew/revoke with debug logging captured and
// checks no seed appears.
func TestNoSecretsInLogs(t *testing.T) {
	db := sqltest.OpenSQLite(t)
	ctx := context.Background()
	var buf testenv.LogBuffer
	logger := buf.Logger(slog.LevelDebug)
	key := randomMasterKey(t)
	a := openAuthority(t, db, key, func(c *Config) { c.Logger = logger })
	u := createUser(t, db, "ivy")
	ic, err := a.IssueUserCredential(ctx, u.ID, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	ic2, err := a.IssueUserCredential(ctx, u.ID, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.RenewUserCredential(ctx, u.ID, 0); err != nil {
		t.Fatal(err)
	}
	if err := a.RevokeUserCredential(ctx, u.ID); err != nil {
		t.Fatal(err)
	}
	_, sysSeed, _ := a.ServiceCredentials(ctx, "x", true)
	logs := buf.String()
	if !strings.Contains(logs, "revoked nats credential") {
		t.Fatalf("logs not captured: %q", logs)
	}
	for _, s := range [][]byte{ic.Seed, ic2.Seed, sysSeed, []byte(hex.EncodeToString(key))} {
		if strings.Contains(logs, string(s)) {
			t.Fatal("a secret appears in the log")
		}
	}
	if seedPattern.MatchString(logs) {
		t.Error("something shaped like a seed appears in the log")
	}
}

// TestConcurrentRevocationsAllLand revokes many credentials at once: each
// revocation rewrites the one account JWT, and none may be lost to a
// concurrent rewrite, on either database.
func TestConcurrentRevocationsAllLand(t *testing.T) {
	sqltest.ForEachDB(t, func(t *testing.T, db *sqlstore.DB) {
		ctx := context.Background()
		key := randomMasterKey(t)
		// Two authorities on one database, as two mulchat instances.
		auths := []*Authority{openAuthority(t, db, key), openAuthority(t, db, key)}
		const n = 12
		users := make([]*mulchat.User, n)
		keys := make([]string, n)
		for i := range users {
			users[i] = createUser(t, db, fmt.Sprintf("conc%d", i))
			ic, err := auths[0].IssueUserCredential(ctx, users[i].ID, "", time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			keys[i] = ic.PublicKey
		}
		var wg sync.WaitGroup
		for i, u := range users {
			wg.Go(func() {
				if err := auths[i%2].RevokeUserCredential(ctx, u.ID); err != nil {
					t.Errorf("revoke %d: %v", i, err)
				}
			})
		}
		wg.Wait()
		revs := chatRevocations(t, db, auths[0])
		for i, k := range keys {
			if !revs[k] {
				t.Errorf("revocation of user %d lost", i)
			}
		}
	})
}

// TestReplacingCredentialClosesOldKeysConnection: a user holds one
// credential, so issuing a new key revokes the old one on the servers too.
func TestReplacingCredentialClosesOldKeysConnection(t *testing.T) {
	db := sqltest.OpenSQLite(t)
	ctx := context.Background()
	a := openAuthority(t, db, randomMasterKey(t))
	u := createUser(t, db, "jack")
	ns := startNATS(t, a)
	wireServices(t, a, ns.ClientURL())
	old, err := a.IssueUserCredential(ctx, u.ID, "", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	closed := connectWatched(t, ns.ClientURL(), writeCreds(t, old.Creds))
	fresh, err := a.IssueUserCredential(ctx, u.ID, "", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	closedWithinASecond(t, closed, "the replaced credential's connection")
	nc2, err := nats.Connect(ns.ClientURL(), nats.UserCredentials(writeCreds(t, fresh.Creds)))
	if err != nil {
		t.Fatalf("new credential refused: %v", err)
	}
	nc2.Close()
}

func TestServiceUserResignsBeforeExpiry(t *testing.T) {
	db := sqltest.OpenSQLite(t)
	clk := newClock(time.Now())
	a := openAuthority(t, db, randomMasterKey(t), func(c *Config) { c.Now = clk.Now; c.MaxTTL = 4 * time.Hour; c.DefaultTTL = time.Hour })
	su, err := a.NewServiceUser("router", false)
	if err != nil {
		t.Fatal(err)
	}
	first, _ := su.JWT()
	clk.Add(time.Hour)
	if again, _ := su.JWT(); again != first {
		t.Error("re-signed with most of the lifetime left")
	}
	clk.Add(90 * time.Minute)
	renewed, _ := su.JWT()
	if renewed == first {
		t.Fatal("not re-signed with less than half of the lifetime left")
	}
	uc, err := jwt.DecodeUserClaims(renewed)
	if err != nil {
		t.Fatal(err)
	}
	if uc.Subject != su.PublicKey() || uc.Expires != clk.Now().Add(4*time.Hour).Unix() {
		t.Errorf("renewed claims: subject %s expires %d", uc.Subject, uc.Expires)
	}
}
