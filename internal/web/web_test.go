package web

import (
	"bytes"
	"compress/gzip"
	"crypto/sha512"
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func get(t *testing.T, h http.Handler, method, target string, hdr map[string]string) *http.Response {
	t.Helper()
	r := httptest.NewRequest(method, target, nil)
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w.Result()
}

func body(t *testing.T, res *http.Response) []byte {
	t.Helper()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	if res.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		if b, err = io.ReadAll(zr); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

func TestHandlerServesPageAndAssets(t *testing.T) {
	h := Handler(WithNATSWebSocketURLs("nats://127.0.0.1:4222", "ws://127.0.0.1:8222"))
	tests := []struct {
		path        string
		contentType string
		contains    string
	}{
		{"/", "text/html; charset=utf-8", "<div id=\"app\""},
		{"/index.html", "text/html; charset=utf-8", "<div id=\"app\""},
		{"/assets/app.js", "text/javascript; charset=utf-8", "chat.send."},
		{"/assets/app.css", "text/css; charset=utf-8", ".composer"},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			for _, enc := range []string{"", "gzip, deflate, br"} {
				res := get(t, h, "GET", tc.path, map[string]string{"Accept-Encoding": enc})
				if res.StatusCode != 200 {
					t.Fatalf("status %d", res.StatusCode)
				}
				if got := res.Header.Get("Content-Type"); got != tc.contentType {
					t.Errorf("Content-Type = %q, want %q", got, tc.contentType)
				}
				if got := res.Header.Get("X-Content-Type-Options"); got != "nosniff" {
					t.Errorf("X-Content-Type-Options = %q", got)
				}
				if gz := res.Header.Get("Content-Encoding") == "gzip"; gz != (enc != "") {
					t.Errorf("Accept-Encoding %q: Content-Encoding = %q", enc, res.Header.Get("Content-Encoding"))
				}
				if b := body(t, res); !bytes.Contains(b, []byte(tc.contains)) {
					t.Errorf("body lacks %q", tc.contains)
				}
			}
		})
	}
}

func TestHandlerPageHeaders(t *testing.T) {
	h := Handler(WithNATSWebSocketURLs("nats://127.0.0.1:4222", "ws://127.0.0.1:8222"))
	res := get(t, h, "GET", "/", nil)
	csp := res.Header.Get("Content-Security-Policy")
	for _, want := range []string{
		"default-src 'none'",
		"script-src 'self'",
		"style-src 'self'",
		"connect-src 'self' ws://127.0.0.1:8222",
		"frame-ancestors 'none'",
		"base-uri 'none'",
	} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
	}
	if strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "unsafe-eval") || strings.Contains(csp, "nats://") {
		t.Errorf("CSP too loose: %q", csp)
	}
	if got := res.Header.Get("Cache-Control"); got != "no-cache" {
		t.Errorf("page Cache-Control = %q, want no-cache", got)
	}
	if res.Header.Get("X-Frame-Options") != "DENY" {
		t.Error("X-Frame-Options missing")
	}
}

func TestContentSecurityPolicyConnectSources(t *testing.T) {
	tests := []struct {
		urls []string
		want string
	}{
		{nil, "connect-src 'self' ws: wss:"},
		{[]string{"nats://127.0.0.1:4222"}, "connect-src 'self' ws: wss:"},
		{[]string{"ws://127.0.0.1:8222", "nats://x:1"}, "connect-src 'self' ws://127.0.0.1:8222"},
		{[]string{"wss://chat.example.com", "ws://0.0.0.0:8222"}, "connect-src 'self' ws://*:8222 wss://chat.example.com"},
		{[]string{"ws://[::1]:9000", "ws://[::1]:9000"}, "connect-src 'self' ws://[::1]:9000"},
		{[]string{"ws://[::]:9000"}, "connect-src 'self' ws://*:9000"},
		{[]string{"ws://a b:1; script-src *"}, "connect-src 'self' ws: wss:"},
		{[]string{"ws://a;script-src:1"}, "connect-src 'self' ws: wss:"},
		{[]string{"ws://a'b:1"}, "connect-src 'self' ws: wss:"},
	}
	for _, tc := range tests {
		csp := contentSecurityPolicy(tc.urls)
		if !strings.Contains(csp, tc.want+";") {
			t.Errorf("%v: CSP %q lacks %q", tc.urls, csp, tc.want)
		}
	}
}

// The page references its assets with a content hash (cacheable for good)
// and an integrity digest that matches what the handler serves.
func TestHandlerVersionedAssetsAndIntegrity(t *testing.T) {
	h := Handler()
	page := string(body(t, get(t, h, "GET", "/", nil)))
	re := regexp.MustCompile(`(?:src|href)="(/assets/app\.(?:js|css))\?v=([0-9a-f]+)" integrity="sha384-([^"]+)"`)
	matches := re.FindAllStringSubmatch(page, -1)
	if len(matches) != 2 {
		t.Fatalf("want 2 versioned assets in the page, got %d:\n%s", len(matches), page)
	}
	for _, m := range matches {
		path, v, sri := m[1], m[2], m[3]
		res := get(t, h, "GET", path+"?v="+v, nil)
		if got := res.Header.Get("Cache-Control"); got != "public, max-age=31536000, immutable" {
			t.Errorf("%s?v=: Cache-Control = %q", path, got)
		}
		b := body(t, res)
		sum := sha512.Sum384(b)
		if base64.StdEncoding.EncodeToString(sum[:]) != sri {
			t.Errorf("%s: integrity digest does not match the served body", path)
		}
		// A stale or missing version must be revalidated, not cached.
		for _, target := range []string{path, path + "?v=0000"} {
			if got := get(t, h, "GET", target, nil).Header.Get("Cache-Control"); got != "no-cache" {
				t.Errorf("%s: Cache-Control = %q, want no-cache", target, got)
			}
		}
	}
}

func TestHandlerConditionalAndMethods(t *testing.T) {
	h := Handler()
	for _, enc := range []string{"", "gzip"} {
		res := get(t, h, "GET", "/assets/app.js", map[string]string{"Accept-Encoding": enc})
		etag := res.Header.Get("ETag")
		if etag == "" {
			t.Fatal("no ETag")
		}
		res = get(t, h, "GET", "/assets/app.js", map[string]string{"Accept-Encoding": enc, "If-None-Match": etag})
		if res.StatusCode != http.StatusNotModified {
			t.Errorf("If-None-Match (%q): status %d, want 304", enc, res.StatusCode)
		}
	}
	res := get(t, h, "HEAD", "/", nil)
	if res.StatusCode != 200 || len(body(t, res)) != 0 || res.Header.Get("Content-Length") == "" {
		t.Errorf("HEAD: status %d, Content-Length %q", res.StatusCode, res.Header.Get("Content-Length"))
	}
	if res := get(t, h, "POST", "/", nil); res.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /: status %d, want 405", res.StatusCode)
	}
	for _, p := range []string{"/nope", "/assets/", "/assets/../web.go", "/dist/app.js"} {
		if res := get(t, h, "GET", p, nil); res.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: status %d, want 404", p, res.StatusCode)
		}
	}
}

func TestAcceptsGzip(t *testing.T) {
	tests := map[string]bool{
		"":                   false,
		"gzip":               true,
		"GZIP":               true,
		"br, gzip;q=0.5":     true,
		"gzip;q=0":           false,
		"gzip; q=0.000":      false,
		"deflate, identity":  false,
		"x-gzip-ish, br":     false,
		"gzip;q=1.0, br;q=0": true,
	}
	for header, want := range tests {
		if got := acceptsGzip(header); got != want {
			t.Errorf("acceptsGzip(%q) = %v, want %v", header, got, want)
		}
	}
}

// The committed bundle must stay under the page-weight goal of 100 KB
// gzipped (issue 5); BENCHMARKS.md records the actual figure.
func TestBundleWeight(t *testing.T) {
	h := Handler()
	total := 0
	for _, p := range []string{"/", "/assets/app.js", "/assets/app.css"} {
		res := get(t, h, "GET", p, map[string]string{"Accept-Encoding": "gzip"})
		b, _ := io.ReadAll(res.Body)
		t.Logf("%s: %d bytes gzipped", p, len(b))
		total += len(b)
	}
	t.Logf("page weight: %d bytes gzipped (html + js + css)", total)
	if total > 100*1024 {
		t.Errorf("page weighs %d bytes gzipped, over the 100 KB goal", total)
	}
}
