package httpapi

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// TestWriteCredentialJSONMatchesWriteJSON: the hand-written credential
// response must be byte for byte what writeJSON writes, headers included,
// and values it cannot write by hand must go through writeJSON.
func TestWriteCredentialJSONMatchesWriteJSON(t *testing.T) {
	exp := time.Date(2030, 1, 2, 3, 4, 5, 6000, time.UTC)
	key := "UBK5ZYULCWUH72P3EE3D5TZZE3L6LWIBAULVUR4BPRWP23VJYIFZSCEA"
	cases := []credentialResponse{
		{JWT: "eyJ0eXAi.eyJleHAi.sig-_", PublicKey: key, ExpiresAt: exp, NATSURLs: []string{"nats://127.0.0.1:4222", "ws://h:8080"}},
		{JWT: "a", PublicKey: key, ExpiresAt: exp.Truncate(time.Second), NATSURLs: []string{}},
		{JWT: "a", PublicKey: key, ExpiresAt: exp, NATSURLs: nil},
		{JWT: "a", PublicKey: key, ExpiresAt: exp, NATSURLs: []string{"nats://x?a=1&b=<2>"}},
		{JWT: "a", PublicKey: key, ExpiresAt: exp, Seed: "SUAB", Creds: "-----BEGIN NATS USER JWT-----\na\n"},
		{JWT: "a\"b\\é\u2028", PublicKey: key, ExpiresAt: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)},
		{JWT: "a", PublicKey: key, ExpiresAt: exp, Seed: "SUAB"},
	}
	for i, c := range cases {
		want := httptest.NewRecorder()
		writeJSON(want, http.StatusCreated, c)
		got := httptest.NewRecorder()
		writeCredentialJSON(got, http.StatusCreated, c)
		if got.Code != want.Code || got.Body.String() != want.Body.String() {
			t.Errorf("case %d:\n got %d %q\nwant %d %q", i, got.Code, got.Body, want.Code, want.Body)
		}
		for _, h := range []string{"Content-Type", "X-Content-Type-Options"} {
			if got.Header().Get(h) != want.Header().Get(h) {
				t.Errorf("case %d: %s = %q, want %q", i, h, got.Header().Get(h), want.Header().Get(h))
			}
		}
	}
}

// TestRefreshBodyMatchesDecodeBody: a body refreshBody takes must decode to
// the same request through decodeBody; the bodies it leaves alone include
// every variation that decodeBody treats differently.
func TestRefreshBodyMatchesDecodeBody(t *testing.T) {
	key := "UBK5ZYULCWUH72P3EE3D5TZZE3L6LWIBAULVUR4BPRWP23VJYIFZSCEA"
	got, ok := refreshBody([]byte(`{"public_key":"` + key + `"}`))
	var req issueRequest
	if err := decodeBody([]byte(`{"public_key":"`+key+`"}`), &req); err != nil || !ok || got != req.PublicKey || req.TTL != 0 {
		t.Fatalf("refreshBody = %q %v; decodeBody = %+v %v", got, ok, req, err)
	}
	for _, body := range []string{
		`{"public_key":"` + key + `","ttl":60}`,
		`{"public_key": "` + key + `"}`,
		`{"public_key":"` + key[:55] + `"}`,
		`{"public_key":"` + key + `A"}`,
		`{"public_key":"` + key[:55] + `1"}`,
		`{"public_key":"` + key[:55] + `\u"}`,
		`{"public_key":"` + key + `"} `,
		`{"PUBLIC_KEY":"` + key + `"}`,
		``,
	} {
		if _, ok := refreshBody([]byte(body)); ok {
			t.Errorf("refreshBody took %q", body)
		}
	}
}
