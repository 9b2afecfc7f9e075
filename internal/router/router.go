// Package router is mulchat's message router: a NATS service in a queue group
// that validates sends from chat.send.<room>.<uid>, stores them in the
// JetStream stream CHAT on chat.room.<room>, delivers every stored message to
// each member's chat.user.<uid>.msg in stream order from a durable consumer,
// answers history requests, and publishes membership, presence and credential
// events on chat.user.<uid>.event. Any number of instances may run against one
// database and one NATS system; docs/realtime.md explains how they cooperate.
package router

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mulchat/mulchat"
)

// Names shared by every router instance.
const (
	StreamName = "CHAT"
	// ConsumerName is the durable pull consumer that drives delivery.
	ConsumerName = "router-delivery"
	// PriorityGroup is the consumer's pinned priority group: the server pins
	// one instance, which is the single active deliverer.
	PriorityGroup = "deliver"
	// QueueGroup is the queue group of the send and API services.
	QueueGroup = "mulchat-router"
	// InvalidateSubject carries cache invalidations (membership, user rows)
	// between instances and from the admin CLI (Notifier). Users cannot reach it: their permissions allow only their own
	// chat.send/chat.api subjects.
	InvalidateSubject = "mulchat.router.membership"
	// markerSuffix makes chat.room.<room>.membership: a record stored in the
	// CHAT stream when membership changes, so the deliverer sees the change
	// exactly in stream order with the messages around it.
	markerSuffix = ".membership"
	// historyConcurrency bounds the history pages read at once.
	historyConcurrency = 32
	// shardQueue is how many sends wait for one worker; beyond it a send is
	// refused (rate_limited) rather than queued.
	shardQueue = 256
	// pendingMsgs and pendingBytes bound what a service subscription holds
	// before its handler takes it; beyond them nats.go drops messages (a
	// slow consumer) instead of growing without bound. The handlers only
	// parse, check and hand off, so this fills only under a flood.
	pendingMsgs  = 64 * 1024
	pendingBytes = 64 << 20
)

// Config configures a Router. Store and Conn are required.
type Config struct {
	Store mulchat.Store
	// Conn is a connection of a chat-account service user. It needs pub/sub on
	// chat.>, mulchat.>, _INBOX.> and $JS.API.> in that account.
	Conn       *nats.Conn
	Logger     *slog.Logger
	Registerer prometheus.Registerer

	// AccountPublicKey, when set, is the chat account: a sender whose
	// credential names another account is refused (EFORBIDDEN).
	AccountPublicKey string

	// Stream settings, used when the stream is created or updated.
	Replicas        int           // default 1
	DuplicateWindow time.Duration // default 2m
	MaxAge          time.Duration // 0 = keep forever
	DeliveryAckWait time.Duration // default 30s
	PinnedTTL       time.Duration // default 10s: failover time after a crashed deliverer
	MaxAckPending   int           // default 10000
	// DeliveryWorkers is how many rooms the pinned deliverer fans out in
	// parallel (a room always goes to the same worker, so per-room order
	// holds); default GOMAXPROCS/2, at least 1 and at most 8.
	DeliveryWorkers int
	// DeliveryConns is how many of the workers publish on a NATS
	// connection of their own, opened with Conn's options and closed by
	// Close (the others publish on Conn); default DeliveryWorkers, <0 =
	// none.
	DeliveryConns     int
	DisableDelivery   bool          // run only the send/history services
	DeliveryOnly      bool          // run only delivery (no send/history services)
	RateLimit         float64       // sends per second per user; default 20; <0 = unlimited
	RateBurst         int           // default 40
	CacheTTL          time.Duration // membership/user cache lifetime, default 30s (a backstop; changes invalidate at once)
	Workers           int           // send worker shards, default 16
	HistoryMaxLimit   int           // default 100
	HistoryDefaultLim int           // default 50
	Now               func() time.Time
}

// Router is one router instance.
type Router struct {
	cfg    Config
	log    *slog.Logger
	nc     *nats.Conn
	js     jetstream.JetStream
	store  mulchat.Store
	now    func() time.Time
	cache  *cache
	limits *limiter
	// notifier publishes membership and user changes to every instance.
	notifier *Notifier
	m        *metrics

	mu      sync.Mutex
	started bool
	closed  bool
	subs    []*nats.Subscription
	consume jetstream.ConsumeContext
	cons    jetstream.Consumer
	stream  jetstream.Stream
	shards  []chan *sendReq
	// shardsMu guards sending on shards against Close closing them.
	shardsMu     sync.RWMutex
	shardsClosed bool
	cancel       context.CancelFunc
	wg           sync.WaitGroup
	deliverer    *deliverer
	// historySem bounds concurrent history requests.
	historySem chan struct{}
	// rateLimited is the encoded answer to a send over the rate limit.
	rateLimited []byte

	// test hooks (internal tests only).
	hookBeforeFanout func(seq uint64) bool // return true to stop as if crashed (then every later message is ignored)
	hookBeforeAck    func(seq uint64) bool
	hookSendWorker   func() // called by a send worker before it handles a send
}

// New validates cfg and returns a Router; Start begins serving.
func New(cfg Config) (*Router, error) {
	if cfg.Store == nil || cfg.Conn == nil {
		return nil, mulchat.Errorf(mulchat.EINVALID, "router: Store and Conn are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Replicas <= 0 {
		cfg.Replicas = 1
	}
	if cfg.DuplicateWindow <= 0 {
		cfg.DuplicateWindow = 2 * time.Minute
	}
	if cfg.DeliveryAckWait <= 0 {
		cfg.DeliveryAckWait = 30 * time.Second
	}
	if cfg.PinnedTTL <= 0 {
		cfg.PinnedTTL = 10 * time.Second
	}
	if cfg.MaxAckPending <= 0 {
		cfg.MaxAckPending = 10000
	}
	if cfg.DeliveryWorkers <= 0 {
		cfg.DeliveryWorkers = min(max(runtime.GOMAXPROCS(0)/2, 1), 8)
	}
	if cfg.DeliveryConns == 0 {
		cfg.DeliveryConns = cfg.DeliveryWorkers
	}
	if cfg.RateLimit == 0 {
		cfg.RateLimit = 20
	}
	if cfg.RateBurst <= 0 {
		cfg.RateBurst = 40
	}
	if cfg.CacheTTL <= 0 {
		cfg.CacheTTL = 30 * time.Second
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 16
	}
	if cfg.HistoryMaxLimit <= 0 {
		cfg.HistoryMaxLimit = 100
	}
	if cfg.HistoryDefaultLim <= 0 {
		cfg.HistoryDefaultLim = 50
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.DisableDelivery && cfg.DeliveryOnly {
		return nil, mulchat.Errorf(mulchat.EINVALID, "router: DisableDelivery and DeliveryOnly exclude each other")
	}
	// The timeout resolves publish futures even when the connection dies, so
	// a waiting sender gets an answer and Close never hangs.
	js, err := jetstream.New(cfg.Conn, jetstream.WithPublishAsyncTimeout(10*time.Second))
	if err != nil {
		return nil, fmt.Errorf("router: jetstream: %w", err)
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	r := &Router{
		cfg:   cfg,
		log:   cfg.Logger.With("component", "router"),
		nc:    cfg.Conn,
		js:    js,
		store: cfg.Store,
		now:   cfg.Now,
		m:     m,
	}
	r.notifier = &Notifier{nc: cfg.Conn, js: js, now: cfg.Now}
	r.historySem = make(chan struct{}, historyConcurrency)
	r.rateLimited, err = json.Marshal(&mulchat.SendReply{Error: errorBody(mulchat.Errorf(mulchat.ERATELIMITED, "too many messages; slow down"))})
	if err != nil {
		return nil, fmt.Errorf("router: %w", err)
	}
	r.cache = newCache(cfg.Store, cfg.CacheTTL, cfg.Now)
	r.limits = newLimiter(cfg.RateLimit, cfg.RateBurst, cfg.Now)
	return r, nil
}

// StreamConfig is the CHAT stream's configuration for cfg; `mulchat nats
// server-config` users with an external cluster get the same stream.
func StreamConfig(cfg Config) jetstream.StreamConfig {
	replicas := cfg.Replicas
	if replicas <= 0 {
		replicas = 1
	}
	dup := cfg.DuplicateWindow
	if dup <= 0 {
		dup = 2 * time.Minute
	}
	return jetstream.StreamConfig{
		Name:        StreamName,
		Description: "mulchat messages: chat.room.<room_id> (and .membership markers)",
		Subjects:    []string{"chat.room.>"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      cfg.MaxAge,
		Duplicates:  dup,
		Replicas:    replicas,
		AllowDirect: true,
		// Messages are at most 4000 characters of UTF-8 plus the envelope.
		MaxMsgSize: 64 * 1024,
	}
}

// Start creates or updates the stream and the delivery consumer, subscribes
// the send, API and invalidation subjects, and starts delivery. It returns
// once everything is subscribed (flushed to the server).
func (r *Router) Start(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.started {
		return mulchat.Errorf(mulchat.EINVALID, "router already started")
	}
	r.started = true
	stream, err := r.js.CreateOrUpdateStream(ctx, StreamConfig(r.cfg))
	if err != nil {
		return mulchat.WrapError(mulchat.EUNAVAILABLE, err, "router: create stream CHAT")
	}
	r.stream = stream

	runCtx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel

	// Invalidation first, so no change published after Start returns is missed.
	sub, err := r.nc.Subscribe(InvalidateSubject, r.handleInvalidate)
	if err != nil {
		return fmt.Errorf("router: subscribe invalidations: %w", err)
	}
	r.subs = append(r.subs, sub)

	r.shards = make([]chan *sendReq, r.cfg.Workers)
	for i := range r.shards {
		ch := make(chan *sendReq, shardQueue)
		pending := make(chan *pendingSend, 1024)
		r.shards[i] = ch
		r.wg.Add(2)
		go r.sendWorker(runCtx, ch, pending)
		go r.replier(pending)
	}
	if !r.cfg.DeliveryOnly {
		sub, err = r.nc.QueueSubscribe("chat.send.*.*", QueueGroup, r.handleSend)
		if err != nil {
			return fmt.Errorf("router: subscribe sends: %w", err)
		}
		if err := sub.SetPendingLimits(pendingMsgs, pendingBytes); err != nil {
			return fmt.Errorf("router: subscribe sends: %w", err)
		}
		r.subs = append(r.subs, sub)
		sub, err = r.nc.QueueSubscribe("chat.api.*.*", QueueGroup, r.handleAPI)
		if err != nil {
			return fmt.Errorf("router: subscribe api: %w", err)
		}
		if err := sub.SetPendingLimits(pendingMsgs, pendingBytes); err != nil {
			return fmt.Errorf("router: subscribe api: %w", err)
		}
		r.subs = append(r.subs, sub)
	}

	if !r.cfg.DisableDelivery {
		if err := r.startDelivery(ctx); err != nil {
			return err
		}
	}
	if err := r.flush(ctx); err != nil {
		return mulchat.WrapError(mulchat.EUNAVAILABLE, err, "router: flush subscriptions")
	}
	r.log.Info("router started", "delivery", !r.cfg.DisableDelivery)
	return nil
}

// Close stops the services and delivery, releases the deliverer's pin so
// another instance takes over at once, and waits for in-flight sends. It does
// not close Conn, which the caller owns.
func (r *Router) Close() error {
	r.mu.Lock()
	if r.closed || !r.started {
		r.closed = true
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	subs := r.subs
	consume := r.consume
	d := r.deliverer
	shards := r.shards
	r.mu.Unlock()

	var errs []error
	for _, s := range subs {
		if err := s.Drain(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
			errs = append(errs, err)
		}
	}
	if consume != nil && r.nc.IsClosed() {
		consume.Stop()
		d.stop()
	} else if consume != nil {
		consume.Drain()
		select {
		case <-consume.Closed():
		case <-time.After(5 * time.Second):
			consume.Stop()
		}
		// What was dispatched is fanned out and acknowledged before the
		// pin is released.
		d.stop()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		// Releasing the pin lets another instance deliver without waiting for
		// PinnedTTL; failure only delays failover.
		if !r.nc.IsClosed() {
			_ = r.stream.UnpinConsumer(ctx, ConsumerName, PriorityGroup)
		}
		cancel()
	}
	// Wait until the subscriptions' callbacks are done before closing the
	// worker channels they feed.
	deadline := time.Now().Add(5 * time.Second)
	for _, s := range subs {
		for s.IsValid() && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
	}
	// A callback still running after the deadline must not send on a
	// closed channel.
	r.shardsMu.Lock()
	r.shardsClosed = true
	for _, ch := range shards {
		close(ch)
	}
	r.shardsMu.Unlock()
	r.wg.Wait()
	r.cancel()
	r.log.Info("router stopped")
	return errors.Join(errs...)
}

// flush waits until the server has processed everything published so far
// (flushConn).
func (r *Router) flush(ctx context.Context) error { return flushConn(ctx, r.nc) }

// flushConn waits until the server has processed everything published on nc
// so far, bounded by ctx or, without a deadline, by five seconds.
func flushConn(ctx context.Context, nc *nats.Conn) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
	}
	return nc.FlushWithContext(ctx)
}

// Healthy reports an error when this instance's delivery has stopped for
// good (a delivery connection was closed, see deliverer.fail): sends are
// still stored, but this instance fans nothing out until it restarts, so
// readiness should say so. Another instance, if any, takes the pin over.
func (r *Router) Healthy() error {
	if d := r.deliverer; d != nil && d.dead.Load() && !d.closing.Load() {
		return errors.New("router delivery stopped (a delivery connection closed); restart this instance")
	}
	return nil
}
