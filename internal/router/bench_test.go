package router

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mulchat/mulchat"
	"github.com/mulchat/mulchat/internal/router/rttest"
	"github.com/mulchat/mulchat/internal/sqlstore/sqltest"
	"github.com/mulchat/mulchat/internal/testenv"
)

// Benchmarks of the router against raw NATS on the same embedded server, all
// in one process (server, router, clients): run with
//
//	go test -run '^$' -bench . -benchtime 3s ./internal/router/
//
// Each reports msgs/s (stored messages per second), and where it applies
// p50/p99 latency in microseconds: send→delivery for the router (time from
// the sender's publish to a member's receipt, over every delivery), request
// round trip for raw request-reply, and publish→ack for JetStream.

// window is how many sends each sender keeps in flight
// (MULCHAT_BENCH_WINDOW overrides it).
var window = testenv.PositiveInt("MULCHAT_BENCH_WINDOW", 64)

type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d)
	l.mu.Unlock()
}

func (l *latencies) report(b *testing.B) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.d) == 0 {
		return
	}
	slices.Sort(l.d)
	pct := func(p float64) float64 {
		return float64(l.d[int(float64(len(l.d)-1)*p)].Microseconds())
	}
	b.ReportMetric(pct(0.50), "p50-µs")
	b.ReportMetric(pct(0.99), "p99-µs")
}

// benchRoom is one room with its members' connections; members[0] sends.
type benchRoom struct {
	room    *mulchat.Room
	members []*rttest.StackUser
	conns   []*nats.Conn
}

func setupRooms(b *testing.B, st *rttest.Stack, rooms, members int) []*benchRoom {
	b.Helper()
	out := make([]*benchRoom, rooms)
	for r := range out {
		br := &benchRoom{}
		for m := 0; m < members; m++ {
			br.members = append(br.members, st.NewUser(b, fmt.Sprintf("u%d-%d", r, m), 0))
		}
		br.room = st.NewRoom(b, fmt.Sprintf("room-%d", r), br.members[0], br.members[1:]...)
		for i, u := range br.members {
			role := "member"
			if i == 0 {
				role = "sender"
			}
			withRole(role, func() { br.conns = append(br.conns, st.Connect(b, u)) })
		}
		out[r] = br
	}
	return out
}

// newBenchRouter starts a router for the benchmarks on st.
func newBenchRouter(b *testing.B, st *rttest.Stack) (r *Router) {
	b.Helper()
	withRole("router", func() { r = startBenchRouter(b, st) })
	return r
}

// withRole runs f with the pprof label role=role, which the goroutines f
// starts inherit (a connection's reader and flusher, a subscription's
// handler goroutine, the router's workers): a CPU profile of a benchmark
// then splits by role with -tagfocus, e.g. role=member for the members'
// clients, which a real deployment would not run on the server's machine.
// The server's goroutines (and the raw baseline's) carry no label.
func withRole(role string, f func()) {
	pprof.Do(context.Background(), pprof.Labels("role", role), func(context.Context) { f() })
}

func startBenchRouter(b *testing.B, st *rttest.Stack) *Router {
	cfg := Config{Store: st.Store, Conn: st.ServiceConn(b, "router", false), RateLimit: -1}
	// MULCHAT_BENCH_WORKERS / MULCHAT_BENCH_CONNS override the delivery
	// defaults, to compare settings.
	if n, err := strconv.Atoi(os.Getenv("MULCHAT_BENCH_WORKERS")); err == nil {
		cfg.DeliveryWorkers = n
	}
	if n, err := strconv.Atoi(os.Getenv("MULCHAT_BENCH_CONNS")); err == nil {
		cfg.DeliveryConns = n
	}
	r, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	if err := r.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = r.Close() })
	return r
}

// routerRig is rooms × members users, every member subscribed to its
// deliveries, and members[0] of each room sending.
//
// Every delivery is checked: each member must receive each message of its
// room exactly once and in stream order (a seq not above the member's last
// one fails the benchmark), and run waits until every member has every
// message sent so far.
type routerRig struct {
	b       *testing.B
	rooms   []*benchRoom
	members int
	// state holds one entry per member (room-major), touched only by the
	// goroutine that handles that member's deliveries.
	state     []memberState
	sent      []int64 // messages sent per room so far (run's goroutine)
	delivered atomic.Int64
	want      atomic.Int64
	done      chan struct{}
}

// memberState is what one member has received.
type memberState struct {
	last  uint64 // highest seq received
	count int64  // deliveries received
	bad   int64  // deliveries with a seq not above last (repeats, disorder)
	// lats are the send→delivery latencies recorded: a slice per member,
	// since 1,000 receivers contending for one lock would cost the machine
	// more than the router's work.
	lats []time.Duration
}

// receive records one delivery to member i.
func (g *routerRig) receive(i int, data []byte) {
	st := &g.state[i]
	now := time.Now().UnixNano()
	if seq, ok := deliverySeq(data); ok && seq > st.last {
		st.last = seq
	} else {
		st.bad++
	}
	st.count++
	if sent, ok := sentTime(data); ok {
		st.lats = append(st.lats, time.Duration(now-sent))
	}
	if g.delivered.Add(1) == g.want.Load() {
		g.done <- struct{}{}
	}
}

func newRouterRig(b *testing.B, st *rttest.Stack, rooms, members int) *routerRig {
	b.Helper()
	g := &routerRig{b: b, rooms: setupRooms(b, st, rooms, members), members: members, done: make(chan struct{}, 1)}
	g.state = make([]memberState, rooms*members)
	g.sent = make([]int64, rooms)
	for ri, br := range g.rooms {
		for i, c := range br.conns {
			subject := mulchat.UserSubject(br.members[i].ID, "msg")
			k := ri*members + i
			// A handler per subscription, as a client would have. (One
			// channel shared by every subscription and read by one
			// goroutine cost the same per delivery within the noise.)
			var err error
			withRole("member", func() {
				_, err = c.Subscribe(subject, func(m *nats.Msg) { g.receive(k, m.Data) })
			})
			if err != nil {
				b.Fatal(err)
			}
			_ = c.Flush()
		}
	}
	return g
}

// run sends n messages, split over the rooms' senders, waits until every
// member has every message, and checks what each member received.
func (g *routerRig) run(n int) time.Duration {
	b := g.b
	rooms := len(g.rooms)
	g.want.Add(int64(n * g.members))
	start := time.Now()
	var wg sync.WaitGroup
	var failed atomic.Int64
	for i, br := range g.rooms {
		k := n / rooms
		if i < n%rooms {
			k++
		}
		g.sent[i] += int64(k)
		wg.Add(1)
		go pprof.Do(context.Background(), pprof.Labels("role", "sender"), func(context.Context) {
			defer wg.Done()
			if err := sendWindowed(br.conns[0], br.room.ID, br.members[0].ID, k, max(8, window/rooms)); err != nil {
				failed.Add(1)
				b.Error(err)
			}
		})
	}
	wg.Wait()
	if failed.Load() == 0 {
		select {
		case <-g.done:
		case <-time.After(60 * time.Second):
			b.Fatalf("delivered %d of %d", g.delivered.Load(), g.want.Load())
		}
	}
	elapsed := time.Since(start)
	// Every delivery is counted by now (done fired on the last one), and
	// the goroutines that counted them wrote their state before that.
	for i := range g.state {
		st := &g.state[i]
		if want := g.sent[i/g.members]; st.count != want || st.bad != 0 {
			b.Fatalf("member %d of room %d: %d deliveries (want %d), %d repeated or out of order",
				i%g.members, i/g.members, st.count, want, st.bad)
		}
	}
	return elapsed
}

// report reports the latencies recorded.
func (g *routerRig) report() {
	var all latencies
	for i := range g.state {
		all.d = append(all.d, g.state[i].lats...)
	}
	all.report(g.b)
}

func benchRouter(b *testing.B, rooms, members int) {
	st := rttest.NewStack(b, sqltest.OpenSQLite(b))
	newBenchRouter(b, st)
	g := newRouterRig(b, st, rooms, members)
	b.ResetTimer()
	stopProfile := profileTimed(b)
	elapsed := g.run(b.N)
	b.StopTimer()
	stopProfile()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(float64(b.N*members)/elapsed.Seconds(), "deliveries/s")
	g.report()
}

// BenchmarkRouterVsRawAsync alternates, on one server in one process, raw
// asynchronous JetStream publishes (the throughput goal's baseline: one
// publisher, 4,000 acks pending, stream settings of CHAT) and the router
// case, in five rounds of b.N/5 messages each, so both see the same load
// from whatever else runs on the machine. It reports the median of each and
// the median of the per-round ratios (router msgs/s as a percentage of raw
// async msgs/s in the same round).
//
// The cases are the three, plus 100 rooms × 2 members: the goal's
// own setting, many concurrent senders (200) with each send costing the
// five hops of a two-member room, to tell the send path's cost from the
// fan-out's.
func BenchmarkRouterVsRawAsync(b *testing.B) {
	for _, c := range []struct{ rooms, members int }{{1, 2}, {100, 2}, {100, 10}, {1, 100}} {
		b.Run(fmt.Sprintf("%dx%d", c.rooms, c.members), func(b *testing.B) {
			st := rttest.NewStack(b, sqltest.OpenSQLite(b))
			newBenchRouter(b, st)
			g := newRouterRig(b, st, c.rooms, c.members)
			js := rawStream(b, st, st.ServiceConn(b, "pub", false))
			const rounds = 5
			n := max(b.N/rounds, 1)
			var raw, routed, pct []float64
			var rawCPU, routerCPU time.Duration
			var rawIO, routerIO ioCount
			b.ResetTimer()
			stopProfile := profileTimed(b)
			for range rounds {
				// Each half starts from a collected heap, so neither
				// pays for collecting the other's garbage (the router's
				// allocations otherwise slowed the raw half after it).
				runtime.GC()
				c0, io0 := testenv.ProcessCPU(), processIO()
				rawRate := float64(n) / rawAsync(b, js, n).Seconds()
				c1, io1 := testenv.ProcessCPU(), processIO()
				runtime.GC()
				c2, io2 := testenv.ProcessCPU(), processIO()
				routerRate := float64(n) / g.run(n).Seconds()
				c3, io3 := testenv.ProcessCPU(), processIO()
				rawCPU += c1 - c0
				routerCPU += c3 - c2
				rawIO = rawIO.add(io1.sub(io0))
				routerIO = routerIO.add(io3.sub(io2))
				raw, routed = append(raw, rawRate), append(routed, routerRate)
				pct = append(pct, 100*routerRate/rawRate)
			}
			b.StopTimer()
			stopProfile()
			b.ReportMetric(median(routed), "msgs/s")
			b.ReportMetric(median(raw), "raw-msgs/s")
			b.ReportMetric(median(pct), "%-of-raw")
			b.ReportMetric(slices.Min(pct), "min-%")
			// CPU time of the whole process (server, router, clients) per
			// message: how much work each case costs, whatever share of the
			// machine it got.
			b.ReportMetric(float64(routerCPU.Microseconds())/float64(n*rounds), "cpu-µs/msg")
			b.ReportMetric(float64(rawCPU.Microseconds())/float64(n*rounds), "raw-cpu-µs/msg")
			// Read and write system calls of the whole process per message
			// (Linux only; reads that found nothing and the store's file
			// writes count too): much of the CPU of a fan-out to many
			// connections is in them.
			if routerIO != (ioCount{}) {
				b.ReportMetric(float64(routerIO.reads)/float64(n*rounds), "reads/msg")
				b.ReportMetric(float64(routerIO.writes)/float64(n*rounds), "writes/msg")
				b.ReportMetric(float64(rawIO.reads+rawIO.writes)/float64(n*rounds), "raw-syscalls/msg")
			}
			g.report()
		})
	}
}

// ioCount is the process's read and write system calls (/proc/self/io).
type ioCount struct{ reads, writes int64 }

func (a ioCount) add(b ioCount) ioCount { return ioCount{a.reads + b.reads, a.writes + b.writes} }
func (a ioCount) sub(b ioCount) ioCount { return ioCount{a.reads - b.reads, a.writes - b.writes} }

// processIO reads the process's system call counts; zero where
// /proc/self/io does not exist.
func processIO() ioCount {
	data, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return ioCount{}
	}
	var c ioCount
	for line := range strings.SplitSeq(string(data), "\n") {
		name, value, ok := strings.Cut(line, ": ")
		if !ok {
			continue
		}
		v, _ := strconv.ParseInt(value, 10, 64)
		switch name {
		case "syscr":
			c.reads = v
		case "syscw":
			c.writes = v
		}
	}
	return c
}

func median(v []float64) float64 {
	s := slices.Sorted(slices.Values(v))
	return s[len(s)/2]
}

// rawAsync publishes n messages asynchronously (up to 4,000 acks pending,
// nats.go's default) and waits for every ack.
func rawAsync(b *testing.B, js jetstream.JetStream, n int) time.Duration {
	start := time.Now()
	for i := 0; i < n; i++ {
		if _, err := js.PublishAsync("raw.1", []byte(`{"text":"hello"}`), jetstream.WithStallWait(10*time.Second)); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(60 * time.Second):
		b.Fatal("acks missing")
	}
	return time.Since(start)
}

// profileTimed profiles only the timed part of a benchmark (the setup of
// 1,000 users and connections would otherwise dominate): with
// MULCHAT_BENCH_PROFILE=prefix it writes prefix.cpu, prefix.block and
// prefix.mutex for the last (largest) b.N run. It returns the stop function.
func profileTimed(b *testing.B) func() {
	prefix := os.Getenv("MULCHAT_BENCH_PROFILE")
	if prefix == "" || b.N < 100 {
		return func() {}
	}
	f, err := os.Create(prefix + ".cpu")
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		b.Fatal(err)
	}
	runtime.SetBlockProfileRate(10_000) // one sample per 10 µs blocked
	runtime.SetMutexProfileFraction(10)
	return func() {
		pprof.StopCPUProfile()
		_ = f.Close()
		for _, name := range []string{"block", "mutex"} {
			if pf, err := os.Create(prefix + "." + name); err == nil {
				_ = pprof.Lookup(name).WriteTo(pf, 0)
				_ = pf.Close()
			}
		}
		runtime.SetBlockProfileRate(0)
		runtime.SetMutexProfileFraction(0)
	}
}

// deliverySeq reads a delivery's seq (the router writes it right after
// room_id), scanning like sentTime.
func deliverySeq(data []byte) (uint64, bool) {
	i := bytes.Index(data, []byte(`"seq":`))
	if i < 0 {
		return 0, false
	}
	rest := data[i+6:]
	j := 0
	for j < len(rest) && rest[j] >= '0' && rest[j] <= '9' {
		j++
	}
	n, err := strconv.ParseUint(string(rest[:j]), 10, 64)
	return n, err == nil
}

// sentTime reads the send time the benchmark put in a delivery's text. It
// scans instead of decoding the JSON so the receivers, which share the
// machine with the router, cost about what the raw benchmarks' receivers do.
func sentTime(data []byte) (int64, bool) {
	i := bytes.Index(data, []byte(`"text":"`))
	if i < 0 {
		return 0, false
	}
	rest := data[i+8:]
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		return 0, false
	}
	n, err := strconv.ParseInt(string(rest[:j]), 10, 64)
	return n, err == nil
}

// sendWindowed sends n messages from one user with up to window requests in
// flight (the benchmarks keep about 64 in flight in all, split over the
// rooms' senders), each text being the send time in Unix nanoseconds.
func sendWindowed(nc *nats.Conn, roomID, userID int64, n, window int) error {
	if n == 0 {
		return nil
	}
	sem := make(chan struct{}, window)
	errc := make(chan error, 1)
	var replies sync.WaitGroup
	replies.Add(n)
	inbox := mulchat.UserInboxPrefix(userID) + ".bench." + strconv.FormatInt(roomID, 10)
	sub, err := nc.Subscribe(inbox, func(m *nats.Msg) {
		if bytes.Contains(m.Data, []byte(`"error"`)) {
			select {
			case errc <- fmt.Errorf("send failed: %s", m.Data):
			default:
			}
		}
		<-sem
		replies.Done()
	})
	if err != nil {
		return err
	}
	defer sub.Unsubscribe()
	subject := mulchat.SendSubject(roomID, userID)
	for i := 0; i < n; i++ {
		sem <- struct{}{}
		data := []byte(`{"text":"` + strconv.FormatInt(time.Now().UnixNano(), 10) + `"}`)
		if err := nc.PublishRequest(subject, inbox, data); err != nil {
			return err
		}
	}
	ok := make(chan struct{})
	go func() { replies.Wait(); close(ok) }()
	select {
	case <-ok:
	case err := <-errc:
		return err
	case <-time.After(60 * time.Second):
		return fmt.Errorf("replies missing")
	}
	select {
	case err := <-errc:
		return err
	default:
		return nil
	}
}

func BenchmarkRouter1Room2Members(b *testing.B)     { benchRouter(b, 1, 2) }
func BenchmarkRouter1Room100Members(b *testing.B)   { benchRouter(b, 1, 100) }
func BenchmarkRouter100Rooms10Members(b *testing.B) { benchRouter(b, 100, 10) }

// BenchmarkRouterLatencyAt1000 paces sends at 1,000 msgs/s (1 room, 2
// members) to show send→delivery latency below saturation. Use
// -benchtime 3000x for three seconds of load.
func BenchmarkRouterLatencyAt1000(b *testing.B) {
	st := rttest.NewStack(b, sqltest.OpenSQLite(b))
	r, err := New(Config{Store: st.Store, Conn: st.ServiceConn(b, "router", false), RateLimit: -1})
	if err != nil {
		b.Fatal(err)
	}
	if err := r.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	br := setupRooms(b, st, 1, 2)[0]
	var lat latencies
	var got atomic.Int64
	done := make(chan struct{})
	_, err = br.conns[1].Subscribe(mulchat.UserSubject(br.members[1].ID, "msg"), func(m *nats.Msg) {
		if sent, ok := sentTime(m.Data); ok {
			lat.add(time.Duration(time.Now().UnixNano() - sent))
		}
		if got.Add(1) == int64(b.N) {
			close(done)
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	_ = br.conns[1].Flush()
	inbox := mulchat.UserInboxPrefix(br.members[0].ID) + ".pace"
	if _, err := br.conns[0].Subscribe(inbox, func(*nats.Msg) {}); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	subject := mulchat.SendSubject(br.room.ID, br.members[0].ID)
	for i := 0; i < b.N; i++ {
		<-tick.C
		data := []byte(`{"text":"` + strconv.FormatInt(time.Now().UnixNano(), 10) + `"}`)
		if err := br.conns[0].PublishRequest(subject, inbox, data); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		b.Fatalf("delivered %d of %d", got.Load(), b.N)
	}
	b.StopTimer()
	lat.report(b)
}

// BenchmarkRawRequestReply: a NATS service that answers at once, on the same
// server, with the same concurrency as the router benchmarks (window
// in-flight requests per sender, 4 senders).
func BenchmarkRawRequestReply(b *testing.B) {
	st := rttest.NewStack(b, sqltest.OpenSQLite(b))
	svc := st.ServiceConn(b, "echo", false)
	if _, err := svc.QueueSubscribe("bench.echo", "q", func(m *nats.Msg) { _ = m.Respond(m.Data) }); err != nil {
		b.Fatal(err)
	}
	_ = svc.Flush()
	const senders = 4
	var lat latencies
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for s := 0; s < senders; s++ {
		n := b.N / senders
		if s < b.N%senders {
			n++
		}
		nc := st.ServiceConn(b, fmt.Sprint("client", s), false)
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem := make(chan struct{}, window)
			var replies sync.WaitGroup
			replies.Add(n)
			inbox := nats.NewInbox()
			sub, _ := nc.Subscribe(inbox, func(m *nats.Msg) {
				if sent, err := strconv.ParseInt(string(m.Data), 10, 64); err == nil {
					lat.add(time.Duration(time.Now().UnixNano() - sent))
				}
				<-sem
				replies.Done()
			})
			defer sub.Unsubscribe()
			for i := 0; i < n; i++ {
				sem <- struct{}{}
				_ = nc.PublishRequest("bench.echo", inbox, []byte(strconv.FormatInt(time.Now().UnixNano(), 10)))
			}
			replies.Wait()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
	lat.report(b)
}

func rawStream(b *testing.B, st *rttest.Stack, nc *nats.Conn) jetstream.JetStream {
	b.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	cfg := StreamConfig(Config{})
	cfg.Name, cfg.Subjects = "RAW", []string{"raw.>"}
	if _, err := js.CreateOrUpdateStream(context.Background(), cfg); err != nil {
		b.Fatal(err)
	}
	return js
}

// BenchmarkRawJetStreamPublishSync: one synchronous publish at a time per
// publisher, 4 publishers, same stream settings as CHAT.
func BenchmarkRawJetStreamPublishSync(b *testing.B) {
	st := rttest.NewStack(b, sqltest.OpenSQLite(b))
	const publishers = 4
	var lat latencies
	js := make([]jetstream.JetStream, publishers)
	for i := range js {
		js[i] = rawStream(b, st, st.ServiceConn(b, fmt.Sprint("pub", i), false))
	}
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for p := 0; p < publishers; p++ {
		n := b.N / publishers
		if p < b.N%publishers {
			n++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < n; i++ {
				t0 := time.Now()
				if _, err := js[p].Publish(context.Background(), "raw."+strconv.Itoa(p), []byte(`{"text":"hello"}`)); err != nil {
					b.Error(err)
					return
				}
				lat.add(time.Since(t0))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
	lat.report(b)
}

// BenchmarkRawJetStreamPublishAsync: asynchronous publishes with up to 4,000
// acks pending (nats.go's default), one publisher.
func BenchmarkRawJetStreamPublishAsync(b *testing.B) {
	st := rttest.NewStack(b, sqltest.OpenSQLite(b))
	js := rawStream(b, st, st.ServiceConn(b, "pub", false))
	b.ResetTimer()
	elapsed := rawAsync(b, js, b.N)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
}
