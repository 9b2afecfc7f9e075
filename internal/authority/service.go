package authority

import (
	"context"
	"sync"
	"time"

	"github.com/mulchat/mulchat"
	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// ServiceCredentials signs a NATS user for one of mulchat's own services
// (router, tracker, authority pusher): in the chat account with unrestricted
// publish and subscribe (the router needs chat.>, $JS.API.> and _INBOX.>), or
// with system=true in the system account ($SYS.REQ.*, server events). The key
// pair is generated on each call and the JWT expires after MaxTTL; nothing is
// stored, so each process start gets fresh service users. A process that runs
// longer than MaxTTL should connect with ServiceUser.Option instead, which
// re-signs on reconnect.
func (a *Authority) ServiceCredentials(ctx context.Context, name string, system bool) (string, []byte, error) {
	if err := ctx.Err(); err != nil {
		return "", nil, err
	}
	su, err := a.NewServiceUser(name, system)
	if err != nil {
		return "", nil, err
	}
	token, err := su.JWT()
	if err != nil {
		return "", nil, err
	}
	seed, err := su.kp.Seed()
	if err != nil {
		return "", nil, mulchat.WrapError(mulchat.EINTERNAL, err, "cannot read the service seed")
	}
	return token, seed, nil
}

// ServiceUser is a service's NATS identity whose JWT is re-signed when less
// than half of its lifetime is left, so a long-running connection survives
// the server closing it at expiry: the client reconnects with a fresh JWT.
type ServiceUser struct {
	a      *Authority
	name   string
	system bool
	kp     nkeys.KeyPair
	pub    string

	mu    sync.Mutex
	token string
	exp   time.Time
}

// NewServiceUser creates a service identity with a new key pair.
func (a *Authority) NewServiceUser(name string, system bool) (*ServiceUser, error) {
	if name == "" || len(name) > 64 {
		return nil, mulchat.Errorf(mulchat.EINVALID, "a service name must be 1 to 64 characters")
	}
	kp, err := nkeys.CreateUser()
	if err != nil {
		return nil, mulchat.WrapError(mulchat.EINTERNAL, err, "cannot generate a service key")
	}
	pub, _ := kp.PublicKey()
	return &ServiceUser{a: a, name: name, system: system, kp: kp, pub: pub}, nil
}

// PublicKey returns the service user's public key.
func (s *ServiceUser) PublicKey() string { return s.pub }

// JWT returns a valid JWT for the service user, re-signing when needed.
func (s *ServiceUser) JWT() (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.a.now()
	if s.token != "" && now.Before(s.exp.Add(-s.a.maxTTL/2)) {
		return s.token, nil
	}
	acct := s.a.chat
	if s.system {
		acct = s.a.sys
	}
	exp := expiry(now, s.a.maxTTL)
	uc := jwt.NewUserClaims(s.pub)
	uc.Name = "mulchat-" + s.name
	uc.IssuerAccount = acct.pub
	uc.Expires = exp.Unix()
	token, err := uc.Encode(acct.signer)
	if err != nil {
		return "", mulchat.WrapError(mulchat.EINTERNAL, err, "cannot sign the service JWT")
	}
	s.token, s.exp = token, exp
	return token, nil
}

// Option returns the nats.go option that authenticates as this service user.
func (s *ServiceUser) Option() nats.Option {
	return nats.UserJWT(s.JWT, s.kp.Sign)
}
