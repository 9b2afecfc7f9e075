// Package web serves mulchat's chat page: the bundle built from the sources in
// web/ (npm run build) and committed under dist/, embedded in the binary so
// that `mulchat serve` and `go run ./cmd/mulchat serve` need no npm.
//
// The page talks to the HTTP API on the same origin and to NATS over
// WebSocket with its own credential, so the Content-Security-Policy allows
// scripts, styles and connections from the page's origin plus the NATS
// WebSocket listener, and nothing else.
package web

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"crypto/sha512"
	"embed"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
)

// dist holds the built page. dist/index.html references /assets/app.js and
// /assets/app.css; Handler rewrites those references to carry a content hash
// and a subresource-integrity digest.
//
//go:embed dist/index.html dist/app.js dist/app.css
var dist embed.FS

// Option configures Handler.
type Option func(*options)

type options struct {
	natsWebSocketURLs []string
}

// WithNATSWebSocketURLs names the NATS WebSocket URLs the page may connect to
// (the ws:// or wss:// entries of the nats_urls that POST /me/credentials
// returns). They go into the connect-src of the Content-Security-Policy. A URL
// whose host is unspecified (0.0.0.0, ::) allows that port on any host,
// because the page then connects to the host it was loaded from. Without this
// option connect-src allows any ws: and wss: URL.
func WithNATSWebSocketURLs(urls ...string) Option {
	return func(o *options) { o.natsWebSocketURLs = append(o.natsWebSocketURLs, urls...) }
}

// asset is one embedded file, ready to serve.
type asset struct {
	body        []byte
	contentType string
	etag        string
	// hash is the short content hash used in the versioned URL.
	hash string
	// gzipped is body compressed, served to clients that accept gzip.
	gzipped []byte
}

// handler serves the page. It holds only immutable data built at
// construction.
type handler struct {
	index  asset
	assets map[string]asset // by path, e.g. "/assets/app.js"
	csp    string
}

// Handler returns the http.Handler that serves the page at "/" and its
// assets under "/assets/". It answers GET and HEAD only; any other path is a
// 404, so the handler can be mounted at "/" behind the API routes.
func Handler(opts ...Option) http.Handler {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	h, err := newHandler(dist, o)
	if err != nil {
		// The embedded files are part of the binary; a failure here is a
		// build defect, caught by the package's tests.
		panic(fmt.Sprintf("web: embedded page is broken: %v", err))
	}
	return h
}

func newHandler(fsys fs.FS, o options) (*handler, error) {
	read := func(name, contentType string) (asset, error) {
		b, err := fs.ReadFile(fsys, "dist/"+name)
		if err != nil {
			return asset{}, err
		}
		sum := sha256.Sum256(b)
		return asset{
			body:        b,
			contentType: contentType,
			etag:        `"` + hex.EncodeToString(sum[:16]) + `"`,
			hash:        hex.EncodeToString(sum[:8]),
		}, nil
	}
	js, err := read("app.js", "text/javascript; charset=utf-8")
	if err != nil {
		return nil, err
	}
	css, err := read("app.css", "text/css; charset=utf-8")
	if err != nil {
		return nil, err
	}
	index, err := read("index.html", "text/html; charset=utf-8")
	if err != nil {
		return nil, err
	}
	// Point the page at versioned asset URLs (so they can be cached for
	// good) and pin them with integrity digests.
	body := index.body
	for _, a := range []struct {
		path string
		attr string
		asset
	}{{"/assets/app.js", "src", js}, {"/assets/app.css", "href", css}} {
		old := a.attr + `="` + a.path + `"`
		if !bytes.Contains(body, []byte(old)) {
			return nil, fmt.Errorf("index.html does not reference %s", a.path)
		}
		sri := sha512.Sum384(a.body)
		repl := fmt.Sprintf(`%s="%s?v=%s" integrity="sha384-%s"`, a.attr, a.path, a.hash, base64.StdEncoding.EncodeToString(sri[:]))
		body = bytes.Replace(body, []byte(old), []byte(repl), 1)
	}
	index.body = body
	sum := sha256.Sum256(body)
	index.etag = `"` + hex.EncodeToString(sum[:16]) + `"`
	for _, a := range []*asset{&js, &css, &index} {
		a.gzipped = gzipBytes(a.body)
	}
	return &handler{
		index:  index,
		assets: map[string]asset{"/assets/app.js": js, "/assets/app.css": css},
		csp:    contentSecurityPolicy(o.natsWebSocketURLs),
	}, nil
}

// contentSecurityPolicy builds the page's policy: nothing from anywhere but
// the page's origin, no inline script or style, no framing, and WebSocket
// connections only to the NATS listener.
func contentSecurityPolicy(wsURLs []string) string {
	connect := []string{"'self'"}
	seen := map[string]bool{}
	for _, raw := range wsURLs {
		src := connectSource(raw)
		if src != "" && !seen[src] {
			seen[src] = true
			connect = append(connect, src)
		}
	}
	if len(seen) == 0 {
		connect = append(connect, "ws:", "wss:")
	}
	sort.Strings(connect[1:])
	return strings.Join([]string{
		"default-src 'none'",
		"script-src 'self'",
		"style-src 'self'",
		"img-src 'self' data:",
		"connect-src " + strings.Join(connect, " "),
		"base-uri 'none'",
		"form-action 'self'",
		"frame-ancestors 'none'",
	}, "; ")
}

// connectSource turns a NATS WebSocket URL into a CSP source expression, or
// "" when it is not a ws:// or wss:// URL.
func connectSource(raw string) string {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" {
		return ""
	}
	host, port := u.Hostname(), u.Port()
	// Only plain host names and addresses may reach the policy header.
	for _, r := range host + port {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == ':') {
			return ""
		}
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		host = "*"
	} else if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if port == "" {
		return u.Scheme + "://" + host
	}
	return u.Scheme + "://" + host + ":" + port
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var a asset
	var page, immutable bool
	switch p := r.URL.Path; p {
	case "/", "/index.html":
		a, page = h.index, true
	default:
		var ok bool
		if a, ok = h.assets[p]; !ok {
			http.NotFound(w, r)
			return
		}
		// Only a URL naming the current content may be cached for good; an
		// old or missing version is revalidated.
		immutable = r.URL.Query().Get("v") == a.hash
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	hd := w.Header()
	hd.Set("Content-Type", a.contentType)
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("Vary", "Accept-Encoding")
	if immutable {
		hd.Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		hd.Set("Cache-Control", "no-cache")
	}
	if page {
		hd.Set("Content-Security-Policy", h.csp)
		hd.Set("X-Frame-Options", "DENY")
	}
	// Each representation has its own entity tag.
	body, etag := a.body, a.etag
	if acceptsGzip(r.Header.Get("Accept-Encoding")) {
		body, etag = a.gzipped, strings.TrimSuffix(a.etag, `"`)+`-gz"`
		hd.Set("Content-Encoding", "gzip")
	}
	hd.Set("ETag", etag)
	if etagMatches(r.Header.Get("If-None-Match"), etag) {
		hd.Del("Content-Encoding")
		w.WriteHeader(http.StatusNotModified)
		return
	}
	hd.Set("Content-Length", strconv.Itoa(len(body)))
	if r.Method == http.MethodHead {
		return
	}
	w.Write(body) //nolint:errcheck // the client went away; nothing to do
}

// etagMatches reports whether an If-None-Match header names etag.
func etagMatches(header, etag string) bool {
	for _, t := range strings.Split(header, ",") {
		t = strings.TrimPrefix(strings.TrimSpace(t), "W/")
		if t == etag || t == "*" {
			return true
		}
	}
	return false
}

// acceptsGzip reports whether an Accept-Encoding header allows gzip (and does
// not refuse it with q=0).
func acceptsGzip(header string) bool {
	for _, part := range strings.Split(header, ",") {
		name, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		if !strings.EqualFold(strings.TrimSpace(name), "gzip") {
			continue
		}
		q := strings.ReplaceAll(strings.TrimSpace(params), " ", "")
		return q != "q=0" && q != "q=0.0" && q != "q=0.00" && q != "q=0.000"
	}
	return false
}

// gzipBytes compresses b at the best level; it is done once per asset at
// construction.
func gzipBytes(b []byte) []byte {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression) // the level is valid
	zw.Write(b)                                              //nolint:errcheck // writes to a bytes.Buffer do not fail
	zw.Close()                                               //nolint:errcheck // likewise
	return buf.Bytes()
}
