package app_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mulchat/mulchat"
	"github.com/mulchat/mulchat/internal/app"
	"github.com/nats-io/nats.go"
)

// testCert writes a certificate for 127.0.0.1 and localhost, signed by a
// throw-away CA, and its key to dir; it returns the files and a pool holding
// the CA.
func testCert(t *testing.T, dir string) (certFile, keyFile string, roots *x509.CertPool) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "mulchat test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leaf := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, leaf, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "ws.crt"), filepath.Join(dir, "ws.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	roots = x509.NewCertPool()
	roots.AddCert(ca)
	return certFile, keyFile, roots
}

// TestWebSocketTLS starts the server with a WebSocket certificate: nats_urls
// hand out a wss:// URL, a client trusting the CA connects over it with the
// issued credential, and neither a plain ws:// client nor one that does not
// trust the CA gets in.
func TestWebSocketTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, roots := testCert(t, t.TempDir())
	m, err := app.Start(context.Background(), app.Config{DataDir: dir, HTTPAddr: "127.0.0.1:0",
		NATSPort: -1, NATSWSPort: -1, NATSWSTLSCert: certFile, NATSWSTLSKey: keyFile})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	base := m.HTTPURL() + "/api/v1"
	alice := registerAndIssue(t, base, "alice")
	if len(alice.urls) != 2 || !strings.HasPrefix(alice.urls[1], "wss://") {
		t.Fatalf("nats_urls %v, want a wss:// URL second", alice.urls)
	}
	wss := alice.urls[1]
	auth := nats.UserJWTAndSeed(alice.jwt, alice.seed)

	nc, err := nats.Connect(wss, auth, nats.Secure(&tls.Config{RootCAs: roots}), nats.NoReconnect())
	if err != nil {
		t.Fatalf("connecting over wss with the test CA: %v", err)
	}
	if !strings.HasPrefix(nc.ConnectedUrl(), "wss://") {
		t.Fatalf("connected to %s, not over wss", nc.ConnectedUrl())
	}
	sub, err := nc.SubscribeSync(mulchat.UserSubject(1, "msg"))
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatalf("round trip over wss: %v", err)
	}
	sub.Unsubscribe()
	nc.Close()

	if nc, err := nats.Connect(wss, auth, nats.NoReconnect(), nats.Timeout(5*time.Second)); err == nil {
		nc.Close()
		t.Fatal("a client that does not trust the CA connected")
	} else if !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("untrusted CA: %v, want a certificate error", err)
	}
	plain := "ws://" + strings.TrimPrefix(wss, "wss://")
	if nc, err := nats.Connect(plain, auth, nats.NoReconnect(), nats.Timeout(5*time.Second)); err == nil {
		nc.Close()
		t.Fatal("a plain ws:// client connected to the TLS listener")
	} else {
		t.Logf("plain ws refused: %v", err)
	}
}

// TestWebSocketTLSBadConfig: a certificate without a WebSocket port, a
// certificate without its key, and an unreadable certificate stop the start
// with a clear error.
func TestWebSocketTLSBadConfig(t *testing.T) {
	certFile, keyFile, _ := testCert(t, t.TempDir())
	cases := []struct {
		name       string
		wsPort     int
		cert, key  string
		wantInText string
	}{
		{"no WebSocket port", 0, certFile, keyFile, "needs a WebSocket port"},
		{"certificate without key", -1, certFile, "", "go together"},
		{"missing certificate", -1, filepath.Join(t.TempDir(), "none.crt"), keyFile, "certificate"},
		{"key as certificate", -1, keyFile, keyFile, "certificate"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m, err := app.Start(context.Background(), app.Config{DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0",
				NATSPort: -1, NATSWSPort: c.wsPort, NATSWSTLSCert: c.cert, NATSWSTLSKey: c.key})
			if err == nil {
				m.Close()
				t.Fatal("started")
			}
			if mulchat.ErrorCode(err) != mulchat.EINVALID || !strings.Contains(err.Error(), c.wantInText) {
				t.Fatalf("got %v, want EINVALID with %q", err, c.wantInText)
			}
		})
	}
}
