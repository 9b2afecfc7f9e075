package web_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/mulchat/mulchat"
	"github.com/mulchat/mulchat/internal/app"
)

// benchMessages is how many messages the latency benchmarks send, one at a
// time; benchGap keeps sends under the router's per-user rate limit (20/s).
const (
	benchMessages = 100
	benchGap      = 60 * time.Millisecond
)

// BenchmarkBrowserSendToDisplay measures, once per run, the time from a send
// in one browser to its display in another (median and p99 over 100
// messages sent one at a time), on SQLite. The figures are reported as
// metrics; BENCHMARKS.md records them.
func BenchmarkBrowserSendToDisplay(b *testing.B) {
	browserTools(b)
	m := startServer(b, filepath.Join(b.TempDir(), "mulchat.db"))
	var lat struct {
		N        int     `json:"n"`
		MedianMS float64 `json:"median_ms"`
		P99MS    float64 `json:"p99_ms"`
	}
	for b.Loop() {
		res := runScript(b, m, "bench", "E2E_BENCH_N="+strconv.Itoa(benchMessages))
		if !res.OK {
			b.Fatalf("browser benchmark failed at %q: %s", res.Step, res.Error)
		}
		if err := json.Unmarshal(res.BrowserLatency, &lat); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(lat.MedianMS, "median-ms")
	b.ReportMetric(lat.P99MS, "p99-ms")
	fmt.Fprintf(os.Stderr, "browser → browser send→display over %d messages: median %.2f ms, p99 %.2f ms\n", lat.N, lat.MedianMS, lat.P99MS)
}

// BenchmarkGoSendToDeliver is the same path from the Go client (nats.go over
// TCP, the way `mulchat chat` talks): one user sends a request on
// chat.send.<room>.<uid>, the other receives the delivery on
// chat.user.<uid>.msg. Median and p99 over 100 messages, on SQLite.
func BenchmarkGoSendToDeliver(b *testing.B) {
	m := startServer(b, filepath.Join(b.TempDir(), "mulchat.db"))
	alice := newGoUser(b, m, "alice")
	bob := newGoUser(b, m, "bob")
	var room struct {
		ID int64 `json:"id"`
	}
	alice.api(b, "POST", "/rooms", map[string]any{"name": "bench", "is_public": true}, &room)
	bob.api(b, "POST", "/rooms/"+strconv.FormatInt(room.ID, 10)+"/join", map[string]any{}, nil)

	deliveries := make(chan *nats.Msg, 64)
	if _, err := bob.nc.ChanSubscribe(mulchat.UserSubject(bob.id, "msg"), deliveries); err != nil {
		b.Fatal(err)
	}
	if err := bob.nc.Flush(); err != nil {
		b.Fatal(err)
	}
	send := func(text string) time.Duration {
		body, _ := json.Marshal(mulchat.SendRequest{Text: text, ClientMsgID: text})
		t0 := time.Now()
		reply, err := alice.nc.Request(mulchat.SendSubject(room.ID, alice.id), body, 5*time.Second)
		if err != nil {
			b.Fatalf("send: %v", err)
		}
		var ack mulchat.SendReply
		if err := json.Unmarshal(reply.Data, &ack); err != nil || ack.Error != nil {
			b.Fatalf("send refused: %s", reply.Data)
		}
		for {
			select {
			case msg := <-deliveries:
				var got mulchat.Message
				if json.Unmarshal(msg.Data, &got) == nil && got.Text == text {
					return time.Since(t0)
				}
			case <-time.After(10 * time.Second):
				b.Fatalf("no delivery of %q", text)
			}
		}
	}
	for i := range 10 { // warm up connections and caches
		send(fmt.Sprintf("warm-%d", i))
		time.Sleep(benchGap)
	}
	var lat []time.Duration
	for b.Loop() {
		lat = lat[:0]
		for i := range benchMessages {
			lat = append(lat, send(fmt.Sprintf("lat-%d-%d", b.N, i)))
			time.Sleep(benchGap)
		}
	}
	slices.Sort(lat)
	median, p99 := percentile(lat, 0.50), percentile(lat, 0.99)
	b.ReportMetric(ms(median), "median-ms")
	b.ReportMetric(ms(p99), "p99-ms")
	fmt.Fprintf(os.Stderr, "Go → Go send→deliver over %d messages: median %.2f ms, p99 %.2f ms\n", len(lat), ms(median), ms(p99))
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	i := int(p*float64(len(sorted))+0.999999) - 1
	return sorted[max(0, min(len(sorted)-1, i))]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// goUser is a registered user with an API token and a NATS connection made
// with a key generated here (the seed never leaves the test, as in the page).
type goUser struct {
	base  string
	token string
	id    int64
	nc    *nats.Conn
}

func newGoUser(b testing.TB, m *app.Main, name string) *goUser {
	b.Helper()
	u := &goUser{base: m.HTTPURL() + "/api/v1"}
	const pw = "correct horse battery"
	u.api(b, "POST", "/users", map[string]any{"username": name, "password": pw}, nil)
	var login struct {
		Token string `json:"token"`
		User  struct {
			ID int64 `json:"id"`
		} `json:"user"`
	}
	u.api(b, "POST", "/login", map[string]any{"username": name, "password": pw}, &login)
	u.token, u.id = login.Token, login.User.ID
	kp, err := nkeys.CreateUser()
	if err != nil {
		b.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	var cred struct {
		JWT      string   `json:"jwt"`
		NATSURLs []string `json:"nats_urls"`
	}
	u.api(b, "POST", "/me/credentials", map[string]any{"public_key": pub}, &cred)
	var url string
	for _, v := range cred.NATSURLs {
		if strings.HasPrefix(v, "nats://") {
			url = v
		}
	}
	u.nc, err = nats.Connect(url,
		nats.UserJWT(func() (string, error) { return cred.JWT, nil }, kp.Sign),
		nats.CustomInboxPrefix(mulchat.UserInboxPrefix(u.id)))
	if err != nil {
		b.Fatalf("connect %s: %v", name, err)
	}
	b.Cleanup(u.nc.Close)
	return u
}

func (u *goUser) api(b testing.TB, method, path string, body, out any) {
	b.Helper()
	data, _ := json.Marshal(body)
	req, _ := http.NewRequest(method, u.base+path, bytes.NewReader(data))
	req.Header.Set("Content-Type", "application/json")
	if u.token != "" {
		req.Header.Set("Authorization", "Bearer "+u.token)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode >= 300 {
		var e bytes.Buffer
		e.ReadFrom(res.Body) //nolint:errcheck // best effort for the message
		b.Fatalf("%s %s: %d %s", method, path, res.StatusCode, e.String())
	}
	if out != nil {
		if err := json.NewDecoder(res.Body).Decode(out); err != nil {
			b.Fatal(err)
		}
	}
}
