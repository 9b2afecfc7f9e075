package natsd

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mulchat/mulchat"
	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// identity is a minimal operator-mode setup built with the jwt library
// directly, so these tests do not depend on the authority or a store.
type identity struct {
	op                  nkeys.KeyPair
	opJWT               string
	sysPub, sysJWT      string
	sysKP               nkeys.KeyPair
	acctKP              nkeys.KeyPair
	acctPub, acctJWT    string
	userJWT, sysUserJWT string
	userSeed, sysSeed   []byte
	userPub             string
}

func newIdentity(t *testing.T) *identity {
	t.Helper()
	id := &identity{}
	id.op, _ = nkeys.CreateOperator()
	opPub, _ := id.op.PublicKey()
	id.sysKP, _ = nkeys.CreateAccount()
	id.sysPub, _ = id.sysKP.PublicKey()
	id.acctKP, _ = nkeys.CreateAccount()
	id.acctPub, _ = id.acctKP.PublicKey()

	oc := jwt.NewOperatorClaims(opPub)
	oc.SystemAccount = id.sysPub
	id.opJWT = must(oc.Encode(id.op))
	id.sysJWT = must(jwt.NewAccountClaims(id.sysPub).Encode(id.op))
	ac := jwt.NewAccountClaims(id.acctPub)
	ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
	id.acctJWT = must(ac.Encode(id.op))

	ukp, _ := nkeys.CreateUser()
	id.userPub, _ = ukp.PublicKey()
	id.userSeed, _ = ukp.Seed()
	uc := jwt.NewUserClaims(id.userPub)
	id.userJWT = must(uc.Encode(id.acctKP))

	skp, _ := nkeys.CreateUser()
	spub, _ := skp.PublicKey()
	id.sysSeed, _ = skp.Seed()
	id.sysUserJWT = must(jwt.NewUserClaims(spub).Encode(id.sysKP))
	return id
}

// must panics on setup errors that cannot happen with valid keys.
func must(s string, err error) string {
	if err != nil {
		panic(err)
	}
	return s
}

func (id *identity) options(dir string) Options {
	return Options{
		DataDir: dir, Port: -1, WSPort: -1,
		OperatorJWT: id.opJWT, SystemAccount: id.sysPub,
		AccountJWTs: map[string]string{id.sysPub: id.sysJWT, id.acctPub: id.acctJWT},
		JetStream:   true, ServerName: "natsd-test",
	}
}

func TestStartOperatorModeWithWebSocketAndJetStream(t *testing.T) {
	id := newIdentity(t)
	dir := t.TempDir()
	s, err := Start(id.options(dir))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown()
	if !strings.HasPrefix(s.ClientURL(), "nats://127.0.0.1:") || strings.HasSuffix(s.ClientURL(), ":-1") {
		t.Errorf("client URL %q", s.ClientURL())
	}
	if !strings.HasPrefix(s.WebSocketURL(), "ws://127.0.0.1:") || strings.HasSuffix(s.WebSocketURL(), ":-1") {
		t.Errorf("websocket URL %q", s.WebSocketURL())
	}
	for _, url := range []string{s.ClientURL(), s.WebSocketURL()} {
		nc, err := nats.Connect(url, nats.UserJWTAndSeed(id.userJWT, string(id.userSeed)))
		if err != nil {
			t.Fatalf("connect %s: %v", url, err)
		}
		js, _ := nc.JetStream()
		if _, err := js.AccountInfo(); err != nil {
			t.Errorf("JetStream via %s: %v", url, err)
		}
		nc.Close()
	}
	// Without credentials, operator mode refuses.
	if _, err := nats.Connect(s.ClientURL(), nats.NoReconnect()); err == nil {
		t.Error("anonymous connection accepted")
	}
	// The resolver directory and JetStream store live under DataDir/nats.
	for _, p := range []string{"nats/resolver", "nats/jetstream"} {
		if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
}

func TestClaimsUpdateIsAppliedAndPersisted(t *testing.T) {
	id := newIdentity(t)
	dir := t.TempDir()
	s, err := Start(id.options(dir))
	if err != nil {
		t.Fatal(err)
	}
	user, err := nats.Connect(s.ClientURL(), nats.UserJWTAndSeed(id.userJWT, string(id.userSeed)), nats.NoReconnect())
	if err != nil {
		t.Fatal(err)
	}
	closed := make(chan struct{})
	user.SetClosedHandler(func(*nats.Conn) { close(closed) })
	sys, err := nats.Connect(s.ClientURL(), nats.UserJWTAndSeed(id.sysUserJWT, string(id.sysSeed)))
	if err != nil {
		t.Fatal(err)
	}
	defer sys.Close()

	ac, _ := jwt.DecodeAccountClaims(id.acctJWT)
	ac.Revoke(id.userPub)
	// The revocation covers JWTs issued up to now; make sure "now" is not
	// the same second the user JWT was issued in a way that matters.
	updated := must(ac.Encode(id.op))
	msg, err := sys.Request("$SYS.REQ.CLAIMS.UPDATE", []byte(updated), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(msg.Data), `"error"`) {
		t.Fatalf("claims update refused: %s", msg.Data)
	}
	select {
	case <-closed:
	case <-time.After(time.Second):
		t.Fatal("revoked user's connection not closed within a second")
	}
	sys.Close()
	s.Shutdown()

	// Restart with the stale preload: the newer pushed JWT in the resolver
	// directory wins, so the user stays revoked.
	s2, err := Start(id.options(dir))
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Shutdown()
	if _, err := nats.Connect(s2.ClientURL(), nats.UserJWTAndSeed(id.userJWT, string(id.userSeed)), nats.NoReconnect()); err == nil {
		t.Fatal("a restart with an older preload brought the revoked user back")
	}
}

func TestStartRejectsBadOptions(t *testing.T) {
	id := newIdentity(t)
	cases := map[string]func(*Options){
		"no data dir":         func(o *Options) { o.DataDir = "" },
		"no operator":         func(o *Options) { o.OperatorJWT = "" },
		"no system account":   func(o *Options) { o.SystemAccount = "" },
		"bad operator jwt":    func(o *Options) { o.OperatorJWT = "eyJnot.a.jwt" },
		"bad account preload": func(o *Options) { o.AccountJWTs = map[string]string{id.acctPub: "garbage"} },
		"tls cert without key": func(o *Options) {
			o.WSTLSCert = "/nonexistent/cert.pem"
		},
		"missing tls files": func(o *Options) {
			o.WSTLSCert, o.WSTLSKey = "/nonexistent/cert.pem", "/nonexistent/key.pem"
		},
	}
	for name, mod := range cases {
		t.Run(name, func(t *testing.T) {
			o := id.options(t.TempDir())
			mod(&o)
			s, err := Start(o)
			if err == nil {
				s.Shutdown()
				t.Fatal("started")
			}
			if mulchat.ErrorCode(err) != mulchat.EINVALID {
				t.Errorf("err = %v, want EINVALID", err)
			}
		})
	}
}

func TestStartPortInUseIsClearError(t *testing.T) {
	id := newIdentity(t)
	s, err := Start(id.options(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown()
	o := id.options(t.TempDir())
	o.Port = s.NATS().Addr().(*net.TCPAddr).Port
	s2, err := Start(o)
	if err == nil {
		s2.Shutdown()
		t.Fatal("second server started on a port in use")
	}
	if mulchat.ErrorCode(err) != mulchat.EUNAVAILABLE || !strings.Contains(err.Error(), strconv.Itoa(o.Port)) {
		t.Errorf("err = %v, want EUNAVAILABLE naming the port", err)
	}
}
