// Package rttest starts a real, in-process nats-server in operator mode for the
// real-time tests (router, tracker): an operator, a SYS account, a chat account
// with JetStream, a full resolver so account updates ($SYS.REQ.CLAIMS.UPDATE)
// are accepted, and helpers that sign user JWTs with the same permission set
// mulchat's authority writes (DESIGN.md). It signs with nkeys directly so the
// real-time packages can be tested independently of internal/authority.
package rttest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/mulchat/mulchat"
)

// Env is a running operator-mode server with a SYS and a chat account.
type Env struct {
	Server *server.Server
	URL    string

	operator nkeys.KeyPair
	sys      nkeys.KeyPair
	chat     nkeys.KeyPair
	other    nkeys.KeyPair

	mu        sync.Mutex
	chatClaim *jwt.AccountClaims
}

// SysAccount is the SYS account's public key; ChatAccount the chat account's;
// OtherAccount a third account, for "wrong account" tests.
func (e *Env) SysAccount() string   { return pub(e.sys) }
func (e *Env) ChatAccount() string  { return pub(e.chat) }
func (e *Env) OtherAccount() string { return pub(e.other) }

func pub(kp nkeys.KeyPair) string {
	p, err := kp.PublicKey()
	if err != nil {
		panic(err)
	}
	return p
}

// Start starts the server on a random port with JetStream under t.TempDir()
// and shuts it down at cleanup.
func Start(t testing.TB) *Env {
	t.Helper()
	e := &Env{}
	var err error
	if e.operator, err = nkeys.CreateOperator(); err != nil {
		t.Fatal(err)
	}
	e.sys, _ = nkeys.CreateAccount()
	e.chat, _ = nkeys.CreateAccount()
	e.other, _ = nkeys.CreateAccount()

	oc := jwt.NewOperatorClaims(pub(e.operator))
	oc.Name = "test-operator"
	oc.SystemAccount = pub(e.sys)
	opJWT, err := oc.Encode(e.operator)
	if err != nil {
		t.Fatal(err)
	}

	sc := jwt.NewAccountClaims(pub(e.sys))
	sc.Name = mulchat.SystemAccountName
	sysJWT := e.encodeAccount(t, sc)

	e.chatClaim = jwt.NewAccountClaims(pub(e.chat))
	e.chatClaim.Name = mulchat.ChatAccountName
	e.chatClaim.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
	chatJWT := e.encodeAccount(t, e.chatClaim)

	ocl := jwt.NewAccountClaims(pub(e.other))
	ocl.Name = "other"
	otherJWT := e.encodeAccount(t, ocl)

	dir := t.TempDir()
	conf := fmt.Sprintf(`
listen: "127.0.0.1:-1"
server_name: "rttest"
operator: %q
system_account: %q
jetstream { store_dir: %q }
resolver {
  type: full
  dir: %q
  allow_delete: false
  interval: "2m"
}
resolver_preload {
  %s: %q
  %s: %q
  %s: %q
}
`, opJWT, pub(e.sys), filepath.Join(dir, "js"), filepath.Join(dir, "jwt"),
		pub(e.sys), sysJWT, pub(e.chat), chatJWT, pub(e.other), otherJWT)
	confFile := filepath.Join(dir, "server.conf")
	if err := os.WriteFile(confFile, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(confFile)
	if err != nil {
		t.Fatal(err)
	}
	opts.NoLog, opts.NoSigs = true, true
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(s.Shutdown)
	e.Server = s
	e.URL = s.ClientURL()
	return e
}

func (e *Env) encodeAccount(t testing.TB, ac *jwt.AccountClaims) string {
	t.Helper()
	s, err := ac.Encode(e.operator)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// User is a signed user credential.
type User struct {
	ID        int64
	PublicKey string
	JWT       string
	Seed      []byte
	Account   string
}

// UserOptions tune a user JWT.
type UserOptions struct {
	Expires time.Time // zero = 1 hour from now
	Other   bool      // sign in the "other" account instead of chat
}

// NewUser signs a user JWT for uid with DESIGN.md's permission set: pub
// chat.send.*.<uid> and chat.api.<uid>.>, sub chat.user.<uid>.> and
// _INBOX.<uid>.>.
func (e *Env) NewUser(t testing.TB, uid int64, o UserOptions) *User {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := kp.Seed()
	u := &User{ID: uid, PublicKey: pub(kp), Seed: seed}
	u.JWT = e.SignUser(t, u.PublicKey, uid, o)
	u.Account = pub(e.chat)
	if o.Other {
		u.Account = pub(e.other)
	}
	return u
}

// SignUser signs a JWT for an existing public key.
func (e *Env) SignUser(t testing.TB, publicKey string, uid int64, o UserOptions) string {
	t.Helper()
	uc := jwt.NewUserClaims(publicKey)
	uc.Name = fmt.Sprintf("user-%d", uid)
	id := fmt.Sprint(uid)
	uc.Pub.Allow.Add("chat.send.*."+id, "chat.api."+id+".>")
	uc.Sub.Allow.Add("chat.user."+id+".>", "_INBOX."+id+".>")
	exp := o.Expires
	if exp.IsZero() {
		exp = time.Now().Add(time.Hour)
	}
	uc.Expires = exp.Unix()
	signer := e.chat
	if o.Other {
		signer = e.other
		uc.IssuerAccount = ""
	}
	s, err := uc.Encode(signer)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Connect connects u with its custom inbox prefix. Extra options are appended.
func (e *Env) Connect(t testing.TB, u *User, extra ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := e.TryConnect(u, extra...)
	if err != nil {
		t.Fatalf("connect user %d: %v", u.ID, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// TryConnect is Connect returning the error.
func (e *Env) TryConnect(u *User, extra ...nats.Option) (*nats.Conn, error) {
	opts := []nats.Option{
		nats.UserJWTAndSeed(u.JWT, string(u.Seed)),
		nats.CustomInboxPrefix(mulchat.UserInboxPrefix(u.ID)),
		nats.Name(fmt.Sprintf("test-user-%d", u.ID)),
		nats.MaxReconnects(0),
	}
	return nats.Connect(e.URL, append(opts, extra...)...)
}

// ServiceConn connects an unrestricted service user of the chat account.
func (e *Env) ServiceConn(t testing.TB, name string) *nats.Conn {
	t.Helper()
	return e.serviceConn(t, e.chat, name)
}

// SysConn connects a service user of the SYS account.
func (e *Env) SysConn(t testing.TB, name string) *nats.Conn {
	t.Helper()
	return e.serviceConn(t, e.sys, name)
}

func (e *Env) serviceConn(t testing.TB, acc nkeys.KeyPair, name string) *nats.Conn {
	t.Helper()
	nc, err := e.TryServiceConn(acc == e.sys, name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// TryServiceConn connects a service user (SYS when system), not closed at
// cleanup: for tests that close it themselves to simulate a crash.
func (e *Env) TryServiceConn(system bool, name string, extra ...nats.Option) (*nats.Conn, error) {
	acc := e.chat
	if system {
		acc = e.sys
	}
	kp, _ := nkeys.CreateUser()
	seed, _ := kp.Seed()
	uc := jwt.NewUserClaims(pub(kp))
	uc.Name = name
	s, err := uc.Encode(acc)
	if err != nil {
		return nil, err
	}
	opts := append([]nats.Option{nats.UserJWTAndSeed(s, string(seed)), nats.Name(name)}, extra...)
	return nats.Connect(e.URL, opts...)
}

// Revoke adds publicKey to the chat account's revocation list and pushes the
// new account JWT with $SYS.REQ.CLAIMS.UPDATE, as the authority does.
func (e *Env) Revoke(t testing.TB, publicKey string) {
	t.Helper()
	e.mu.Lock()
	e.chatClaim.Revoke(publicKey)
	token := e.encodeAccount(t, e.chatClaim)
	e.mu.Unlock()
	nc := e.SysConn(t, "rttest-pusher")
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := nc.RequestWithContext(ctx, "$SYS.REQ.CLAIMS.UPDATE", []byte(token))
	if err != nil {
		t.Fatalf("claims update: %v", err)
	}
	if strings.Contains(string(resp.Data), `"error"`) {
		t.Fatalf("claims update: %s", resp.Data)
	}
}
