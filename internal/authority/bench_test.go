package authority

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/mulchat/mulchat"
	"github.com/mulchat/mulchat/internal/sqlstore/sqltest"
	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
)

// BenchmarkIssueUserCredential measures issuance end to end in the
// authority: read the user and grants, sign, write the seven users.nats_*
// columns in a transaction. Compare with BenchmarkRawUserClaimsEncode, the
// signing alone.
//
//   - generated: the server generates the key pair (one fresh user per
//     iteration, so no previous credential has to be revoked);
//   - client_key: a client re-requests a JWT for its own key (the same user
//     and key each iteration), which adds the revocation-list check;
//   - new_key: one user gets a generated key every iteration (a new chat
//     session), so every issue revokes the previous key and rewrites the
//     account JWT. Simulated time moves one minute per iteration with a 1 h
//     TTL, so the revocation list holds what a busy hour leaves in it.
func BenchmarkIssueUserCredential(b *testing.B) {
	for _, dbName := range []string{"sqlite", "postgres"} {
		b.Run(dbName+"/generated", func(b *testing.B) {
			db := benchStore(b, dbName)
			a := openAuthority(b, db, randomMasterKey(b))
			ctx := context.Background()
			users := make([]int64, b.N)
			for i := range users {
				users[i] = createUser(b, db, fmt.Sprintf("bench%d", i)).ID
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := a.IssueUserCredential(ctx, users[i], "", time.Hour); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(dbName+"/new_key", func(b *testing.B) {
			db := benchStore(b, dbName)
			clk := newClock(time.Now())
			a := openAuthority(b, db, randomMasterKey(b), func(c *Config) { c.Now = clk.Now })
			ctx := context.Background()
			u := createUser(b, db, "bench")
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				clk.Add(time.Minute)
				if _, err := a.IssueUserCredential(ctx, u.ID, "", time.Hour); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(len(chatRevocations(b, db, a))), "revocations")
		})
		b.Run(dbName+"/client_key", func(b *testing.B) {
			db := benchStore(b, dbName)
			a := openAuthority(b, db, randomMasterKey(b))
			ctx := context.Background()
			u := createUser(b, db, "bench")
			kp, _ := nkeys.CreateUser()
			pub, _ := kp.PublicKey()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := a.IssueUserCredential(ctx, u.ID, pub, time.Hour); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func benchStore(b *testing.B, name string) mulchat.Store {
	if name == "postgres" {
		return sqltest.OpenPostgres(b)
	}
	return sqltest.OpenSQLite(b)
}

// BenchmarkRawUserClaimsEncode is the floor for issuance: building and
// signing the same user JWT with an account signing key, nothing else.
func BenchmarkRawUserClaimsEncode(b *testing.B) {
	signer, _ := nkeys.CreateAccount()
	acct, _ := nkeys.CreateAccount()
	acctPub, _ := acct.PublicKey()
	kp, _ := nkeys.CreateUser()
	pub, _ := kp.PublicKey()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		uc := jwt.NewUserClaims(pub)
		uc.Name = "bench"
		uc.IssuerAccount = acctPub
		uc.Expires = time.Now().Add(time.Hour).Unix()
		uc.Pub.Allow.Add("chat.send.*.42", "chat.api.42.>")
		uc.Sub.Allow.Add("chat.user.42.>", "_INBOX.42.>")
		uc.Limits.Payload = UserMaxPayload
		uc.Limits.Subs = UserMaxSubs
		if _, err := uc.Encode(signer); err != nil {
			b.Fatal(err)
		}
	}
}
