package legacygen

import (
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
)

// The fast path builds exactly the library's token.
func TestUserJWTMatchesLibrary(t *testing.T) {
	g, err := newGenerator(Options{Now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)})
	if err != nil {
		t.Fatal(err)
	}
	sub := "UC52MCLT76MI4LDV4PLZMJQXCP65YJ2ZRUUU42WACJMMT3RVPYFRXLU5"
	iat := time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)
	for _, exp := range []int64{0, iat.Add(time.Hour).Unix()} {
		uc := jwt.NewUserClaims(sub)
		uc.Name = "legacy"
		uc.Expires = exp
		want, err := EncodeUserJWT(uc, g.account, iat)
		if err != nil {
			t.Fatal(err)
		}
		got, err := g.userJWT(sub, iat.Unix(), exp)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Fatalf("fast JWT differs:\n got  %s\n want %s", got, want)
		}
		if _, err := jwt.DecodeUserClaims(got); err != nil {
			t.Fatal(err)
		}
	}
}
