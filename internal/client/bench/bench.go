// Package bench is the load generator behind `mulchat bench`: it registers a
// set of throw-away users on a running mulchat server, puts them in private
// rooms, connects each with its own credential (exactly as real clients do,
// through internal/client), drives sends at a chosen rate and measures
// throughput, send→ack and send→delivery latency and connects per second.
//
// Every run is bounded: a fixed number of users and messages, a maximum send
// duration and a maximum drain time. It talks only to the server it is given
// (and to the NATS URLs that server hands out, or the ones given instead).
package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mulchat/mulchat"
	"github.com/mulchat/mulchat/internal/client"
)

// Config describes one run. Zero values take the defaults noted.
type Config struct {
	ServerURL string
	// Rooms × Members users are created; each user is a member of one room.
	Rooms   int // default 1
	Members int // per room, default 2
	// Senders per room (at most Members; default 1) each send Messages
	// messages (default 100).
	Senders  int
	Messages int
	// Rate is the target of sends per second over all senders; 0 sends as
	// fast as acks come back (each sender waits for its ack).
	Rate float64
	// MaxDuration bounds the send phase (default 2 minutes); Drain bounds
	// the wait for outstanding deliveries after it (default 10 s).
	MaxDuration time.Duration
	Drain       time.Duration
	// Concurrency of the setup phases (register, log in, connect); default 8.
	Concurrency int
	// SetupTimeout bounds the setup (registering, logging in, connecting);
	// default 10 minutes.
	SetupTimeout time.Duration
	// Prefix of user and room names; default "bench-" and 6 random hex
	// digits. Password of the bench users; default random.
	Prefix   string
	Password string
	// NATSURLs overrides the NATS URLs the server hands out.
	NATSURLs []string
	// KeepRooms keeps the bench rooms; by default they are deleted at the
	// end. The users always stay (the API cannot delete users); their names
	// start with Prefix.
	KeepRooms bool
	// Padding adds bytes to each message text (default 0).
	Padding int
	// Hold keeps every connection open this long after the drain and then
	// counts how many are still connected (concurrent connections held).
	Hold time.Duration

	Progress io.Writer // progress lines; nil = silent
	Logger   *slog.Logger
}

// Latency summarises a set of durations, in milliseconds.
type Latency struct {
	Count int     `json:"count"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	Max   float64 `json:"max_ms"`
	Mean  float64 `json:"mean_ms"`
}

// Phase is a timed setup phase.
type Phase struct {
	Count   int     `json:"count"`
	Seconds float64 `json:"seconds"`
	PerSec  float64 `json:"per_sec"`
	Errors  int     `json:"errors"`
}

// Report is the outcome of a run, printed as a table and written as JSON.
type Report struct {
	Server    string    `json:"server"`
	Prefix    string    `json:"prefix"`
	StartedAt time.Time `json:"started_at"`
	Rooms     int       `json:"rooms"`
	Members   int       `json:"members_per_room"`
	Senders   int       `json:"senders_per_room"`
	Messages  int       `json:"messages_per_sender"`
	Rate      float64   `json:"target_rate"`
	Users     int       `json:"users"`

	Register   Phase `json:"register"`
	Login      Phase `json:"login"`
	Credential Phase `json:"credential"`
	Connect    Phase `json:"connect"`

	Sent        int            `json:"sent"`
	Acked       int            `json:"acked"`
	Failed      int            `json:"failed"`
	FailedBy    map[string]int `json:"failed_by_code,omitempty"`
	SendSeconds float64        `json:"send_seconds"`
	// MessagesPerSec is acked sends per second of the send phase;
	// DeliveriesPerSec deliveries per second up to the last delivery.
	MessagesPerSec   float64 `json:"messages_per_sec"`
	Expected         int     `json:"deliveries_expected"`
	Delivered        int     `json:"deliveries"`
	DeliveriesPerSec float64 `json:"deliveries_per_sec"`
	Complete         bool    `json:"complete"`

	Ack      Latency `json:"send_to_ack"`
	Delivery Latency `json:"send_to_delivery"`

	// HoldSeconds and Held: how many of the Users connections were still
	// connected after holding them (only with Config.Hold).
	HoldSeconds float64 `json:"hold_seconds,omitempty"`
	Held        int     `json:"held_connections,omitempty"`
}

func (c *Config) defaults() error {
	if c.Rooms <= 0 {
		c.Rooms = 1
	}
	if c.Members <= 0 {
		c.Members = 2
	}
	if c.Senders <= 0 {
		c.Senders = 1
	}
	c.Senders = min(c.Senders, c.Members)
	if c.Messages <= 0 {
		c.Messages = 100
	}
	if c.MaxDuration <= 0 {
		c.MaxDuration = 2 * time.Minute
	}
	if c.Drain <= 0 {
		c.Drain = 10 * time.Second
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 8
	}
	if c.SetupTimeout <= 0 {
		c.SetupTimeout = 10 * time.Minute
	}
	if c.Prefix == "" {
		c.Prefix = "bench-" + randomHex(3)
	}
	if c.Password == "" {
		c.Password = randomHex(16)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
	if c.Rate < 0 || math.IsNaN(c.Rate) || math.IsInf(c.Rate, 0) {
		return mulchat.Errorf(mulchat.EINVALID, "rate must be a positive number of messages per second (0 = as fast as possible)")
	}
	if c.Padding < 0 || c.Padding > mulchat.MessageMaxChars-64 {
		return mulchat.Errorf(mulchat.EINVALID, "padding must be 0 to %d", mulchat.MessageMaxChars-64)
	}
	if n := c.Rooms * c.Members; n > 100000 {
		return mulchat.Errorf(mulchat.EINVALID, "rooms × members = %d users; the bench creates at most 100000", n)
	}
	if len(c.Prefix)+len("-u")+len(strconv.Itoa(c.Rooms*c.Members)) > mulchat.UsernameMaxLen {
		return mulchat.Errorf(mulchat.EINVALID, "prefix %q is too long for the usernames", c.Prefix)
	}
	if err := mulchat.ValidateUsername(c.Prefix + "-u0"); err != nil {
		return mulchat.Errorf(mulchat.EINVALID, "prefix %q does not make valid usernames: %s", c.Prefix, mulchat.ErrorMessage(err))
	}
	return nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// member is one bench user.
type member struct {
	name string
	room int // index into rooms
	c    *client.Client
}

// run holds the state of one run.
type run struct {
	cfg   Config
	users []*member
	rooms []*client.Room
	col   collector
}

// collector gathers latencies and counts from many goroutines.
type collector struct {
	mu         sync.Mutex
	ack        []time.Duration
	delivery   []time.Duration
	failedBy   map[string]int
	lastDeliv  time.Time
	delivered  atomic.Int64
	sendsStart time.Time
}

// Run performs one bench run and returns its report. An error means the run
// could not be set up; failures during the send phase are counted instead.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	r := &run{cfg: cfg, col: collector{failedBy: map[string]int{}}}
	rep := &Report{Server: cfg.ServerURL, Prefix: cfg.Prefix, StartedAt: time.Now().UTC(), Rooms: cfg.Rooms,
		Members: cfg.Members, Senders: cfg.Senders, Messages: cfg.Messages, Rate: cfg.Rate, Users: cfg.Rooms * cfg.Members}
	defer r.close()
	sctx, cancel := context.WithTimeout(ctx, cfg.SetupTimeout)
	err := r.setup(sctx, rep)
	cancel()
	if err != nil {
		if !cfg.KeepRooms {
			r.deleteRooms()
		}
		return nil, err
	}
	r.send(ctx, rep)
	r.drain(ctx, rep)
	r.summarise(rep)
	r.hold(ctx, rep)
	if !cfg.KeepRooms {
		r.deleteRooms()
	}
	return rep, nil
}

func (r *run) progress(format string, args ...any) {
	fmt.Fprintf(r.cfg.Progress, format+"\n", args...)
}

// parallel runs fn for every user with the configured concurrency, returns
// the phase timing and the first error.
func (r *run) parallel(ctx context.Context, fn func(ctx context.Context, m *member) error) (Phase, error) {
	start := time.Now()
	var (
		mu       sync.Mutex
		firstErr error
		errs     int
		wg       sync.WaitGroup
	)
	work := make(chan *member)
	for range min(r.cfg.Concurrency, len(r.users)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for m := range work {
				if err := fn(ctx, m); err != nil {
					mu.Lock()
					errs++
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	for _, m := range r.users {
		select {
		case work <- m:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
	}
	close(work)
	wg.Wait()
	secs := time.Since(start).Seconds()
	p := Phase{Count: len(r.users) - errs, Seconds: secs, Errors: errs}
	if secs > 0 {
		p.PerSec = float64(p.Count) / secs
	}
	if firstErr == nil && ctx.Err() != nil {
		firstErr = mulchat.WrapError(mulchat.EUNAVAILABLE, ctx.Err(), "bench setup cancelled or past --setup-timeout")
	}
	return p, firstErr
}

// withRetry retries fn while the server rate-limits it (logins are limited
// per address), with backoff, until ctx ends.
func withRetry(ctx context.Context, fn func() error) error {
	wait := 500 * time.Millisecond
	for {
		err := fn()
		if mulchat.ErrorCode(err) != mulchat.ERATELIMITED {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		wait = min(wait*2, 10*time.Second)
	}
}

func (r *run) setup(ctx context.Context, rep *Report) error {
	cfg := r.cfg
	for i := range cfg.Rooms * cfg.Members {
		m := &member{name: fmt.Sprintf("%s-u%d", cfg.Prefix, i), room: i / cfg.Members}
		c, err := client.New(client.Config{
			ServerURL: cfg.ServerURL,
			Logger:    cfg.Logger,
			Name:      "mulchat-bench",
			NATSURLs:  cfg.NATSURLs,
			OnMessage: r.onMessage,
		})
		if err != nil {
			return err
		}
		m.c = c
		r.users = append(r.users, m)
	}
	phase := func(name string, dst *Phase, fn func(ctx context.Context, m *member) error) error {
		r.progress("%-11s %d users…", name, len(r.users))
		p, err := r.parallel(ctx, fn)
		*dst = p
		if err != nil {
			return fmt.Errorf("bench %s: %w", name, err)
		}
		r.progress("%-11s %d in %.2fs (%.0f/s)", name, p.Count, p.Seconds, p.PerSec)
		return nil
	}
	if err := phase("register", &rep.Register, func(ctx context.Context, m *member) error {
		return withRetry(ctx, func() error {
			_, err := m.c.Register(ctx, m.name, cfg.Password, "")
			if mulchat.ErrorCode(err) == mulchat.ECONFLICT {
				// A user of an earlier run with this prefix: reused (the
				// login fails unless the password is the same).
				return nil
			}
			return err
		})
	}); err != nil {
		return err
	}
	if err := phase("login", &rep.Login, func(ctx context.Context, m *member) error {
		return withRetry(ctx, func() error { return m.c.Login(ctx, m.name, cfg.Password) })
	}); err != nil {
		return err
	}
	if err := phase("credential", &rep.Credential, func(ctx context.Context, m *member) error {
		return withRetry(ctx, func() error { _, err := m.c.EnsureCredential(ctx); return err })
	}); err != nil {
		return err
	}

	r.progress("rooms       %d private rooms of %d members…", cfg.Rooms, cfg.Members)
	r.rooms = make([]*client.Room, cfg.Rooms)
	for i := range cfg.Rooms {
		owner := r.users[i*cfg.Members]
		name := fmt.Sprintf("%s-r%d", cfg.Prefix, i)
		room, err := owner.c.CreateRoom(ctx, name, "mulchat bench room", false)
		if mulchat.ErrorCode(err) == mulchat.ECONFLICT { // kept by an earlier run
			room, err = owner.c.RoomByName(ctx, name)
		}
		if err != nil {
			return fmt.Errorf("bench: %w", err)
		}
		r.rooms[i] = room
		for _, m := range r.users[i*cfg.Members+1 : (i+1)*cfg.Members] {
			if err := owner.c.AddMember(ctx, room.ID, m.name); err != nil && mulchat.ErrorCode(err) != mulchat.ECONFLICT {
				return fmt.Errorf("bench: %w", err)
			}
		}
	}
	return phase("connect", &rep.Connect, func(ctx context.Context, m *member) error { return m.c.Connect(ctx) })
}

// benchPrefix marks bench message texts: "bench <unix-nanos> <padding>".
const benchPrefix = "bench "

func (r *run) onMessage(m mulchat.Message) {
	now := time.Now()
	rest, ok := strings.CutPrefix(m.Text, benchPrefix)
	if !ok {
		return
	}
	ns, _, _ := strings.Cut(rest, " ")
	sent, err := strconv.ParseInt(ns, 10, 64)
	if err != nil {
		return
	}
	r.col.delivered.Add(1)
	r.col.mu.Lock()
	r.col.delivery = append(r.col.delivery, now.Sub(time.Unix(0, sent)))
	if now.After(r.col.lastDeliv) {
		r.col.lastDeliv = now
	}
	r.col.mu.Unlock()
}

// send drives the send phase: every sender sends its messages, paced so that
// all senders together approach the target rate.
func (r *run) send(ctx context.Context, rep *Report) {
	cfg := r.cfg
	var senders []*member
	for i := range cfg.Rooms {
		senders = append(senders, r.users[i*cfg.Members:i*cfg.Members+cfg.Senders]...)
	}
	var interval time.Duration
	if cfg.Rate > 0 {
		interval = time.Duration(float64(len(senders)) / cfg.Rate * float64(time.Second))
	}
	r.progress("send        %d senders × %d messages (target %s)…", len(senders), cfg.Messages, rateString(cfg.Rate))
	sctx, cancel := context.WithTimeout(ctx, cfg.MaxDuration)
	defer cancel()
	var sent, acked atomic.Int64
	start := time.Now()
	r.col.sendsStart = start
	var wg sync.WaitGroup
	for si, s := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			room := r.rooms[s.room].ID
			pad := strings.Repeat("x", cfg.Padding)
			// Stagger the senders over one interval so paced sends spread.
			next := start
			if interval > 0 {
				next = start.Add(interval * time.Duration(si) / time.Duration(len(senders)))
			}
			for range cfg.Messages {
				if interval > 0 {
					if d := time.Until(next); d > 0 {
						select {
						case <-sctx.Done():
							return
						case <-time.After(d):
						}
					}
					next = next.Add(interval)
				}
				if sctx.Err() != nil {
					return
				}
				t0 := time.Now()
				text := benchPrefix + strconv.FormatInt(t0.UnixNano(), 10)
				if pad != "" {
					text += " " + pad
				}
				sent.Add(1)
				_, err := s.c.Send(sctx, room, text)
				if err != nil {
					r.col.mu.Lock()
					r.col.failedBy[mulchat.ErrorCode(err)]++
					r.col.mu.Unlock()
					if mulchat.ErrorCode(err) == mulchat.ERATELIMITED {
						// Back off like a polite client; the failure counts.
						select {
						case <-sctx.Done():
							return
						case <-time.After(100 * time.Millisecond):
						}
					}
					continue
				}
				acked.Add(1)
				d := time.Since(t0)
				r.col.mu.Lock()
				r.col.ack = append(r.col.ack, d)
				r.col.mu.Unlock()
			}
		}()
	}
	wg.Wait()
	rep.SendSeconds = time.Since(start).Seconds()
	rep.Sent, rep.Acked = int(sent.Load()), int(acked.Load())
	rep.Failed = rep.Sent - rep.Acked
	if rep.SendSeconds > 0 {
		rep.MessagesPerSec = float64(rep.Acked) / rep.SendSeconds
	}
	r.progress("send        %d acked, %d failed in %.2fs (%.0f msgs/s)", rep.Acked, rep.Failed, rep.SendSeconds, rep.MessagesPerSec)
}

// drain waits until every acked message reached every member of its room,
// or the drain time is up.
func (r *run) drain(ctx context.Context, rep *Report) {
	rep.Expected = rep.Acked * r.cfg.Members
	deadline := time.Now().Add(r.cfg.Drain)
	for int(r.col.delivered.Load()) < rep.Expected && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
	rep.Delivered = int(r.col.delivered.Load())
	rep.Complete = rep.Delivered >= rep.Expected
	if !rep.Complete {
		r.progress("drain       %d of %d deliveries arrived within %s", rep.Delivered, rep.Expected, r.cfg.Drain)
	}
}

// hold keeps the connections open for Config.Hold and counts the survivors.
func (r *run) hold(ctx context.Context, rep *Report) {
	if r.cfg.Hold <= 0 {
		return
	}
	r.progress("hold        %d connections for %s…", len(r.users), r.cfg.Hold)
	select {
	case <-ctx.Done():
	case <-time.After(r.cfg.Hold):
	}
	for _, m := range r.users {
		if nc := m.c.Conn(); nc != nil && nc.IsConnected() {
			rep.Held++
		}
	}
	rep.HoldSeconds = r.cfg.Hold.Seconds()
	r.progress("hold        %d of %d still connected", rep.Held, len(r.users))
}

func (r *run) summarise(rep *Report) {
	r.col.mu.Lock()
	defer r.col.mu.Unlock()
	rep.Ack = summarise(r.col.ack)
	rep.Delivery = summarise(r.col.delivery)
	if len(r.col.failedBy) > 0 {
		rep.FailedBy = r.col.failedBy
	}
	if secs := r.col.lastDeliv.Sub(r.col.sendsStart).Seconds(); secs > 0 {
		rep.DeliveriesPerSec = float64(rep.Delivered) / secs
	}
}

// summarise computes nearest-rank percentiles.
func summarise(ds []time.Duration) Latency {
	if len(ds) == 0 {
		return Latency{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	ms := func(d time.Duration) float64 { return math.Round(float64(d)/float64(time.Microsecond)) / 1000 }
	rank := func(p float64) time.Duration {
		i := int(math.Ceil(p*float64(len(s)))) - 1
		return s[max(0, min(i, len(s)-1))]
	}
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	return Latency{Count: len(s), P50: ms(rank(0.50)), P90: ms(rank(0.90)), P99: ms(rank(0.99)),
		Max: ms(s[len(s)-1]), Mean: ms(sum / time.Duration(len(s)))}
}

func (r *run) deleteRooms() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i, room := range r.rooms {
		if room == nil {
			continue
		}
		if err := r.users[i*r.cfg.Members].c.DeleteRoom(ctx, room.ID); err != nil {
			r.cfg.Logger.Warn("bench: deleting a room failed", "room", room.Name, "error", mulchat.ErrorMessageForCLI(err))
		}
	}
}

// close closes every client, several at a time.
func (r *run) close() {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for _, m := range r.users {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			_ = m.c.Close()
			<-sem
		}()
	}
	wg.Wait()
}

func rateString(r float64) string {
	if r <= 0 {
		return "as fast as acks return"
	}
	return fmt.Sprintf("%.0f msgs/s", r)
}

// WriteTable prints the report as a human-readable table.
func (rep *Report) WriteTable(w io.Writer) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	p("mulchat bench against %s (prefix %s)", rep.Server, rep.Prefix)
	p("  %d rooms × %d members (%d users), %d senders/room × %d messages, target %s",
		rep.Rooms, rep.Members, rep.Users, rep.Senders, rep.Messages, rateString(rep.Rate))
	p("")
	p("  %-22s %10s %10s %10s", "phase", "count", "seconds", "per sec")
	for _, ph := range []struct {
		name string
		p    Phase
	}{{"register", rep.Register}, {"login", rep.Login}, {"credential (JWT)", rep.Credential}, {"NATS connect", rep.Connect}} {
		p("  %-22s %10d %10.2f %10.1f", ph.name, ph.p.Count, ph.p.Seconds, ph.p.PerSec)
	}
	p("")
	p("  sent %d, acked %d, failed %d%s", rep.Sent, rep.Acked, rep.Failed, failedString(rep.FailedBy))
	p("  throughput            %10.1f msgs/s acked over %.2fs", rep.MessagesPerSec, rep.SendSeconds)
	complete := "complete"
	if !rep.Complete {
		complete = "INCOMPLETE"
	}
	p("  deliveries            %10d of %d expected (%s), %.1f/s", rep.Delivered, rep.Expected, complete, rep.DeliveriesPerSec)
	if rep.HoldSeconds > 0 {
		p("  connections held      %10d of %d after %.0fs", rep.Held, rep.Users, rep.HoldSeconds)
	}
	p("")
	p("  %-22s %10s %10s %10s %10s %10s", "latency (ms)", "p50", "p90", "p99", "max", "count")
	for _, l := range []struct {
		name string
		l    Latency
	}{{"send → ack", rep.Ack}, {"send → delivery", rep.Delivery}} {
		p("  %-22s %10.3f %10.3f %10.3f %10.3f %10d", l.name, l.l.P50, l.l.P90, l.l.P99, l.l.Max, l.l.Count)
	}
}

func failedString(by map[string]int) string {
	if len(by) == 0 {
		return ""
	}
	codes := make([]string, 0, len(by))
	for c := range by {
		codes = append(codes, c)
	}
	slices.Sort(codes)
	parts := make([]string, len(codes))
	for i, c := range codes {
		parts[i] = fmt.Sprintf("%s: %d", c, by[c])
	}
	return " (" + strings.Join(parts, ", ") + ")"
}
