// Package rttest starts mulchat's real-time stack for tests: a migrated
// store, the authority and the embedded nats-server (operator mode, full
// resolver, JetStream) it configures, with helpers to create users with
// credentials, rooms, and connections. The router and tracker tests start
// their services on top of it.
package rttest

import (
	"context"
	"crypto/rand"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/mulchat/mulchat"
	"github.com/mulchat/mulchat/internal/authority"
	"github.com/mulchat/mulchat/internal/natsd"
)

// Stack is mulchat's real-time stack without the router and tracker, which
// the tests start themselves: a store, the authority, and the embedded
// nats-server (operator mode, full resolver, JetStream) it configures.
type Stack struct {
	Store     mulchat.Store
	Authority *authority.Authority
	NATS      *natsd.Server
	URL       string

	// clockOffset shifts the authority's clock, to sign already-expired
	// JWTs in expiry tests.
	clockOffset atomic.Int64
}

// NewStack starts the stack on store (a fresh migrated database).
func NewStack(t testing.TB, store mulchat.Store) *Stack {
	t.Helper()
	ctx := context.Background()
	key := make([]byte, authority.MasterKeySize)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	s := &Stack{Store: store}
	a, err := authority.Open(ctx, authority.Config{
		Store:     store,
		MasterKey: key,
		Now:       func() time.Time { return time.Now().Add(time.Duration(s.clockOffset.Load())) },
	})
	if err != nil {
		t.Fatalf("authority: %v", err)
	}
	s.Authority = a
	accounts, err := a.AccountJWTs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ns, err := natsd.Start(natsd.Options{
		DataDir:       t.TempDir(),
		Port:          -1,
		OperatorJWT:   a.OperatorJWT(),
		SystemAccount: a.SystemAccountPublicKey(),
		AccountJWTs:   accounts,
		JetStream:     true,
		ServerName:    "rttest",
	})
	if err != nil {
		t.Fatalf("natsd: %v", err)
	}
	t.Cleanup(ns.Shutdown)
	s.NATS = ns
	s.URL = ns.ClientURL()
	pusher := s.ServiceConn(t, "pusher", true)
	a.SetPusher(authority.NewClaimsPusher(pusher))
	return s
}

// ShiftClock moves the authority's clock by d (negative: the past).
func (s *Stack) ShiftClock(d time.Duration) { s.clockOffset.Store(int64(d)) }

// ServiceConn connects a fresh service user (system: SYS account, else chat),
// closed at cleanup.
func (s *Stack) ServiceConn(t testing.TB, name string, system bool) *nats.Conn {
	t.Helper()
	nc, err := s.TryServiceConn(name, system)
	if err != nil {
		t.Fatalf("service connect %s: %v", name, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// TryServiceConn is ServiceConn without cleanup, for tests that close the
// connection themselves to simulate a crash.
func (s *Stack) TryServiceConn(name string, system bool) (*nats.Conn, error) {
	su, err := s.Authority.NewServiceUser(name, system)
	if err != nil {
		return nil, err
	}
	return nats.Connect(s.URL, su.Option(), nats.Name("mulchat-"+name), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
}

// StackUser is a mulchat user with a server-generated credential.
type StackUser struct {
	*mulchat.User
	Cred *authority.IssuedCredential
}

// NewUser creates user name and issues a credential with ttl (0 = default).
func (s *Stack) NewUser(t testing.TB, name string, ttl time.Duration) *StackUser {
	t.Helper()
	ctx := context.Background()
	u := &mulchat.User{Username: name, HashedPassword: "x", IsActive: true}
	if err := s.Store.CreateUser(ctx, u); err != nil {
		t.Fatalf("create user %s: %v", name, err)
	}
	cred, err := s.Authority.IssueUserCredential(ctx, u.ID, "", ttl)
	if err != nil {
		t.Fatalf("issue credential for %s: %v", name, err)
	}
	return &StackUser{User: u, Cred: cred}
}

// Connect connects u with its credential and inbox prefix, closed at cleanup.
func (s *Stack) Connect(t testing.TB, u *StackUser, extra ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := s.TryConnect(u, extra...)
	if err != nil {
		t.Fatalf("connect %s: %v", u.Username, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// TryConnect connects u without retries.
func (s *Stack) TryConnect(u *StackUser, extra ...nats.Option) (*nats.Conn, error) {
	opts := []nats.Option{
		nats.UserJWTAndSeed(u.Cred.JWT, string(u.Cred.Seed)),
		nats.CustomInboxPrefix(mulchat.UserInboxPrefix(u.ID)),
		nats.Name(fmt.Sprintf("mulchat-test/%s", u.Username)),
		nats.MaxReconnects(0),
	}
	return nats.Connect(s.URL, append(opts, extra...)...)
}

// NewRoom creates a room owned by owner and adds members with RoleMember.
func (s *Stack) NewRoom(t testing.TB, name string, owner *StackUser, members ...*StackUser) *mulchat.Room {
	t.Helper()
	ctx := context.Background()
	r := &mulchat.Room{Name: name, IsPublic: true}
	if err := s.Store.CreateRoom(ctx, r, owner.ID); err != nil {
		t.Fatalf("create room %s: %v", name, err)
	}
	for _, m := range members {
		if err := s.Store.AddRoomMember(ctx, r.ID, m.ID, mulchat.RoleMember); err != nil {
			t.Fatalf("add member: %v", err)
		}
	}
	return r
}
