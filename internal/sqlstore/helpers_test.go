package sqlstore_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/mulchat/mulchat"
	"github.com/mulchat/mulchat/internal/sqlstore"
)

// wantCode fails the test unless err carries the mulchat error code want.
func wantCode(t *testing.T, err error, want string) {
	t.Helper()
	if got := mulchat.ErrorCode(err); got != want {
		t.Fatalf("error code = %q (%v), want %q", got, err, want)
	}
}

func mustNil(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func newUser(t *testing.T, db *sqlstore.DB, name string) *mulchat.User {
	t.Helper()
	u := &mulchat.User{Username: name, HashedPassword: "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA", IsActive: true}
	if err := db.CreateUser(context.Background(), u); err != nil {
		t.Fatalf("create user %q: %v", name, err)
	}
	return u
}

func newAccount(t *testing.T, db *sqlstore.DB, name string) *mulchat.NATSAccount {
	t.Helper()
	a := &mulchat.NATSAccount{Name: name, PublicKey: "A" + name + "PUBLICKEY", JWT: "jwt-" + name}
	if err := db.CreateNATSAccount(context.Background(), a); err != nil {
		t.Fatalf("create account %q: %v", name, err)
	}
	return a
}

func newRoom(t *testing.T, db *sqlstore.DB, name string, public bool, owner int64) *mulchat.Room {
	t.Helper()
	r := &mulchat.Room{Name: name, IsPublic: public, Description: "about " + name}
	if err := db.CreateRoom(context.Background(), r, owner); err != nil {
		t.Fatalf("create room %q: %v", name, err)
	}
	return r
}

// ts is a fixed time at microsecond precision, as the store keeps it.
func ts(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t.UTC()
}

func ptr[T any](v T) *T { return &v }

func eqTimePtr(a, b *time.Time) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Equal(*b)
}

func usernames(us []*mulchat.User) []string {
	out := make([]string, len(us))
	for i, u := range us {
		out[i] = u.Username
	}
	return out
}

func roomNames(rs []*mulchat.Room) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.Name
	}
	return out
}

func fmtSlice[T any](s []T) string { return fmt.Sprint(s) }
