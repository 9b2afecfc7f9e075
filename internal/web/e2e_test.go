package web_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mulchat/mulchat/internal/app"
	"github.com/mulchat/mulchat/internal/sqlstore/sqltest"
	"github.com/mulchat/mulchat/internal/testenv"
	"github.com/mulchat/mulchat/internal/web"
)

// chromiumPath is Debian's chromium package; the tests never download a
// browser.
const chromiumPath = "/usr/bin/chromium"

// webDir is the repository's web/ directory (sources, node_modules, e2e).
func webDir(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate the test file")
	}
	return filepath.Join(filepath.Dir(file), "..", "..", "web")
}

// nodeTools returns node's path and web/, or skips (fails under
// MULCHAT_TEST_REQUIRE_ALL=1) when node or web/node_modules is missing;
// web/ci.sh installs them.
func nodeTools(t testing.TB) (node, dir string) {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		testenv.Skip(t, "page tests need node (apt-get install nodejs npm)")
	}
	dir = webDir(t)
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "playwright-core")); err != nil {
		testenv.Skip(t, "page tests need web/node_modules (cd web && npm ci)")
	}
	return node, dir
}

// browserTools is nodeTools plus Debian's Chromium.
func browserTools(t testing.TB) (node, dir string) {
	t.Helper()
	node, dir = nodeTools(t)
	if _, err := os.Stat(chromiumPath); err != nil {
		testenv.Skip(t, "browser tests need %s (apt-get install chromium)", chromiumPath)
	}
	return node, dir
}

// TestPageUnits runs the page's JavaScript unit tests (web/test) with node's
// test runner.
func TestPageUnits(t *testing.T) {
	node, dir := nodeTools(t)
	cmd := exec.Command(node, "--test", "test/")
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node --test: %v\n%s", err, out)
	}
}

// artifactsDir is where screenshots go: $MULCHAT_TEST_ARTIFACTS/<test name>,
// or a temporary directory.
func artifactsDir(t testing.TB) string {
	t.Helper()
	base := os.Getenv("MULCHAT_TEST_ARTIFACTS")
	if base == "" {
		base = t.TempDir()
	}
	dir := filepath.Join(base, strings.ReplaceAll(t.Name(), "/", "-"))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshots in %s", dir)
	return dir
}

// databases are the stores the page is tested on.
var databases = []struct {
	name string
	url  func(t testing.TB) string
}{
	{"sqlite", func(t testing.TB) string { return filepath.Join(t.TempDir(), "mulchat.db") }},
	{"postgres", func(t testing.TB) string {
		testenv.PostgresURL(t)
		return sqltest.NewPostgresDatabaseURL(t)
	}},
}

// startServer starts a whole mulchat (HTTP API with the page, embedded NATS
// with WebSocket, router, tracker) on free ports.
func startServer(t testing.TB, databaseURL string) *app.Main {
	t.Helper()
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, err := app.Start(ctx, app.Config{
		DataDir:     t.TempDir(),
		DatabaseURL: databaseURL,
		HTTPAddr:    "127.0.0.1:0",
		NATSPort:    -1,
		NATSWSPort:  -1,
		MasterKey:   key,
		// Short credentials, so the page's renewal is exercised (the
		// script runs the page's clock forward; the server's runs for real).
		CredentialTTL: 2 * time.Minute,
		Web: func(natsURLs []string) http.Handler {
			return web.Handler(web.WithNATSWebSocketURLs(natsURLs...))
		},
	})
	if err != nil {
		t.Fatalf("start mulchat: %v", err)
	}
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Logf("close mulchat: %v", err)
		}
	})
	return m
}

// e2eResult is the script's final "@@result" line.
type e2eResult struct {
	OK              bool            `json:"ok"`
	Error           string          `json:"error"`
	Step            string          `json:"step"`
	Problems        []string        `json:"problems"`
	SignedOutNotice string          `json:"signed_out_notice"`
	BrowserLatency  json.RawMessage `json:"browser_latency"`
	TimingsMS       map[string]int  `json:"timings_ms"`
}

// runScript runs web/e2e/chat.e2e.mjs against m and serves its requests
// ("@@revoke NAME": revoke the user's credential through the authority, as
// `mulchat creds revoke` does).
func runScript(t testing.TB, m *app.Main, mode string, extraEnv ...string) e2eResult {
	t.Helper()
	node, dir := browserTools(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, filepath.Join("e2e", "chat.e2e.mjs"))
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"MULCHAT_URL="+m.HTTPURL(),
		"MULCHAT_ARTIFACTS="+artifactsDir(t),
		"E2E_MODE="+mode,
		"E2E_DRIVEN=1",
		"CHROMIUM="+chromiumPath,
	)
	cmd.Env = append(cmd.Env, extraEnv...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start node: %v", err)
	}
	var res e2eResult
	var gotResult bool
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "@@result "):
				if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "@@result ")), &res); err != nil {
					t.Errorf("bad result line %q: %v", line, err)
				}
				gotResult = true
			case strings.HasPrefix(line, "@@revoke "):
				reply := "@@ok"
				if err := revoke(ctx, m, strings.TrimPrefix(line, "@@revoke ")); err != nil {
					reply = "@@err " + strings.ReplaceAll(err.Error(), "\n", " ")
				}
				io.WriteString(stdin, reply+"\n") //nolint:errcheck // the script's exit reports a failure
			default:
				t.Log(line)
			}
		}
	}()
	wg.Wait()
	stdin.Close()
	err = cmd.Wait()
	if s := stderr.String(); s != "" {
		t.Logf("node stderr:\n%s", s)
	}
	if !gotResult {
		t.Fatalf("the browser script ended without a result: %v", err)
	}
	return res
}

func revoke(ctx context.Context, m *app.Main, username string) error {
	u, err := m.Store.UserByUsername(ctx, username)
	if err != nil {
		return err
	}
	return m.Authority.RevokeUserCredential(ctx, u.ID)
}

// TestBrowserChat is issue 5's end-to-end test: two people register in two
// browser contexts (a desktop and a phone), one creates a room, the other
// joins, they exchange messages both ways (markup stays text, long lines
// wrap), unread counts show, a reload keeps history and scrolling back loads
// older pages, a third person's lost ack is retried with the same
// client_msg_id and a dropped connection is filled from history, and a
// credential revoked as `mulchat creds revoke` does signs the page out. On
// SQLite and on PostgreSQL.
func TestBrowserChat(t *testing.T) {
	browserTools(t)
	for _, db := range databases {
		t.Run(db.name, func(t *testing.T) {
			// Each run has its own server and browser; they overlap their
			// waits (timeouts, pacing) rather than their CPU.
			t.Parallel()
			m := startServer(t, db.url(t))
			res := runScript(t, m, "test")
			if !res.OK {
				t.Fatalf("browser scenario failed at %q: %s\nproblems: %v", res.Step, res.Error, res.Problems)
			}
			t.Logf("signed-out notice: %q", res.SignedOutNotice)
			t.Logf("step timings (ms): %v", res.TimingsMS)
		})
	}
}

// TestServePageWithoutNPM checks the page a running server serves: the
// embedded bundle (no npm at run time) with a CSP naming the server's
// WebSocket listener.
func TestServePageWithoutNPM(t *testing.T) {
	m := startServer(t, filepath.Join(t.TempDir(), "mulchat.db"))
	res, err := http.Get(m.HTTPURL() + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != 200 || !strings.Contains(string(b), "/assets/app.js?v=") {
		t.Fatalf("GET /: %d\n%s", res.StatusCode, b)
	}
	var ws string
	for _, u := range m.NATSURLs() {
		if strings.HasPrefix(u, "ws://") {
			ws = u
		}
	}
	if ws == "" {
		t.Fatalf("server hands out no ws:// URL: %v", m.NATSURLs())
	}
	csp := res.Header.Get("Content-Security-Policy")
	if want := "connect-src 'self' " + strings.TrimSuffix(ws, "/"); !strings.Contains(csp, want) {
		t.Errorf("CSP %q lacks %q", csp, want)
	}
	api, err := http.Get(m.HTTPURL() + "/api/v1/nope")
	if err != nil {
		t.Fatal(err)
	}
	api.Body.Close()
	if ct := api.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("API 404 is served by the page handler (Content-Type %q)", ct)
	}
}
