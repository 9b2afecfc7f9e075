package router

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mulchat/mulchat"
)

// Delivery.
//
// One durable pull consumer (ConsumerName) over the whole CHAT stream drives
// delivery. It uses the "pinned client" priority policy: the server hands
// messages to one pinned instance only, so exactly one deliverer is active and
// it receives new messages in stream order. A message is acknowledged only
// after it has been published to every member's chat.user.<uid>.msg, so a
// crash between store and delivery loses nothing: the message stays
// unacknowledged and is delivered by whoever holds the pin next.
//
// Fan-out in parallel. The pinned instance's consumer callback (the
// dispatcher) does no fan-out itself: it hands each message to one of
// DeliveryWorkers workers chosen by room id, so every room's messages (and
// its membership markers) are fanned out by one worker, in stream order,
// while different rooms proceed in parallel. Each worker publishes on its
// own NATS connection, so the server processes the workers' publishes on as
// many connections in parallel and they do not queue behind each other's
// writes or the send path's.
//
// Acknowledgements in stream order. Workers finish out of order, but a
// message is acknowledged only when it and every message dispatched before
// it are done (the tracker's contiguous prefix); one acker goroutine sends
// the acks in stream order. The consumer's ack floor is therefore exactly
// "everything up to here has been fanned out", as with one serial deliverer.
//
// Ordering across a failover needs care: messages the crashed deliverer held
// unacknowledged are redelivered only after AckWait, while new messages go to
// the new pinned instance at once. The dispatcher therefore works strictly by
// sequence: it keeps the highest sequence it dispatched (high), and when a
// message arrives past high+1 it first dispatches the gap itself, reading the
// messages directly from the stream starting after the consumer's ack floor.
// A redelivery at or below high is acknowledged once its first dispatch is
// done, without a second fan-out. The cost is at-least-once delivery: after a
// crash, messages the old deliverer fanned out but had not acked are fanned
// out again, with the same seq; clients drop a message whose seq is not above
// the last seq they have seen in that room.

// deliveryQueue is how many messages wait for one worker; when a worker's
// queue is full the dispatcher waits (backpressure on the consumer).
const deliveryQueue = 1024

type deliverer struct {
	r *Router
	// high is the highest sequence dispatched (dispatcher goroutine only).
	high uint64
	// dead is set by a test hook (behave like a crashed process) or when a
	// delivery connection is closed: nothing more is fanned out or acked.
	dead atomic.Bool
	// closing makes failing fan-outs and flushes give up instead of
	// retrying (Close); what they hold stays unacknowledged.
	closing atomic.Bool
	workers []*deliveryWorker
	// own are the connections this deliverer opened (closed by stop).
	own []*nats.Conn
	wg  sync.WaitGroup
	// closeMu guards sending to the workers against stop closing their
	// queues (a callback still running after Close gave up waiting).
	closeMu sync.RWMutex
	closed  bool

	mu    sync.Mutex
	queue []*slot // dispatched, not yet acknowledged, in stream order
	acks  []jetstream.Msg
	// ackSignal wakes the acker when acks are waiting.
	ackSignal chan struct{}
	ackDone   chan struct{}
	stopping  bool
}

// slot is one dispatched message.
type slot struct {
	seq  uint64
	msgs []jetstream.Msg // consumer deliveries to ack when done (none for a gap fill)
	done bool
}

type deliveryJob struct {
	slot   *slot
	data   []byte
	roomID int64 // 0: not a room record (skipped)
	marker bool  // a membership marker of the room
}

type deliveryWorker struct {
	d  *deliverer
	nc *nats.Conn
	in chan deliveryJob
	// buf holds the delivery being published (fanout).
	buf []byte
	// stopped: a delivery or flush gave up (dead or closing). The worker
	// then delivers nothing more, so that no later message of a room
	// overtakes one left unacknowledged for the next deliverer.
	stopped bool
}

func (r *Router) startDelivery(ctx context.Context) error {
	cons, err := r.js.CreateOrUpdateConsumer(ctx, StreamName, jetstream.ConsumerConfig{
		Durable:        ConsumerName,
		Description:    "mulchat router: fan-out to chat.user.<uid>.msg",
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        r.cfg.DeliveryAckWait,
		MaxAckPending:  r.cfg.MaxAckPending,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		FilterSubject:  "chat.room.>",
		PriorityPolicy: jetstream.PriorityPolicyPinned,
		PriorityGroups: []string{PriorityGroup},
		PinnedTTL:      r.cfg.PinnedTTL,
		MaxDeliver:     -1,
	})
	if err != nil {
		return mulchat.WrapError(mulchat.EUNAVAILABLE, err, "router: create delivery consumer")
	}
	r.cons = cons
	d := &deliverer{r: r, ackSignal: make(chan struct{}, 1), ackDone: make(chan struct{})}
	go d.acker()
	for i := 0; i < r.cfg.DeliveryWorkers; i++ {
		nc := r.nc
		if i < r.cfg.DeliveryConns {
			opts := r.nc.Opts
			opts.Name = fmt.Sprintf("%s-deliver-%d", opts.Name, i)
			c, err := opts.Connect()
			if err != nil {
				d.stop() // the workers started so far, the acker, the connections
				return mulchat.WrapError(mulchat.EUNAVAILABLE, err, "router: delivery connection")
			}
			d.own = append(d.own, c)
			nc = c
		}
		w := &deliveryWorker{d: d, nc: nc, in: make(chan deliveryJob, deliveryQueue)}
		d.workers = append(d.workers, w)
		d.wg.Add(1)
		go w.run()
	}
	r.deliverer = d
	// Pull requests must come more often than PinnedTTL, or the pin lapses
	// while this instance is healthy but idle.
	expiry := r.cfg.PinnedTTL / 2
	if expiry < time.Second {
		expiry = time.Second
	}
	cc, err := cons.Consume(d.handle,
		jetstream.PullPriorityGroup(PriorityGroup),
		jetstream.PullMaxMessages(1000),
		jetstream.PullExpiry(expiry),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			// Not being pinned is the normal state of a standby instance.
			if errors.Is(err, jetstream.ErrPinIDMismatch) || errors.Is(err, jetstream.ErrNoHeartbeat) {
				r.log.Debug("delivery consumer", "err", err)
				return
			}
			r.log.Warn("delivery consumer", "err", err)
		}))
	if err != nil {
		d.stop()
		return mulchat.WrapError(mulchat.EUNAVAILABLE, err, "router: consume")
	}
	r.consume = cc
	return nil
}

// stop finishes the dispatched work: the workers fan out what they hold, the
// acker acknowledges it, and the deliverer's own connections are closed. The
// consumer must be stopped first (no more dispatches).
func (d *deliverer) stop() {
	d.closing.Store(true)
	d.closeMu.Lock()
	d.closed = true
	for _, w := range d.workers {
		close(w.in)
	}
	d.closeMu.Unlock()
	d.wg.Wait()
	d.mu.Lock()
	d.stopping = true
	d.mu.Unlock()
	d.signalAcker()
	select {
	case <-d.ackDone:
	case <-time.After(5 * time.Second):
	}
	d.closeConns()
}

func (d *deliverer) closeConns() {
	for _, c := range d.own {
		// Flush what the worker published before closing.
		_ = c.FlushTimeout(2 * time.Second)
		c.Close()
	}
}

// handle is the dispatcher: it runs on the consumer's single callback
// goroutine, one message at a time, in the order the server delivers them.
func (d *deliverer) handle(m jetstream.Msg) {
	r := d.r
	if d.dead.Load() {
		return
	}
	meta, err := m.Metadata()
	if err != nil {
		_ = m.Term()
		return
	}
	seq := meta.Sequence.Stream
	if seq <= d.high {
		// A redelivery of something this instance dispatched (after a gap
		// fill, or a worker slower than AckWait): acknowledge it once that
		// dispatch is done, without a second fan-out.
		d.ackWhenDone(seq, m)
		return
	}
	if seq != d.high+1 {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := d.fillGap(ctx, seq)
		cancel()
		if err != nil {
			r.log.Warn("delivery gap fill failed; will retry", "seq", seq, "err", err)
			_ = m.NakWithDelay(time.Second)
			return
		}
	}
	d.dispatch(seq, m.Subject(), m.Data(), m)
}

// dispatch queues one stored record to the worker of its room.
func (d *deliverer) dispatch(seq uint64, subject string, data []byte, m jetstream.Msg) {
	d.closeMu.RLock()
	defer d.closeMu.RUnlock()
	if d.closed {
		return
	}
	s := &slot{seq: seq}
	if m != nil {
		s.msgs = []jetstream.Msg{m}
	}
	d.mu.Lock()
	d.queue = append(d.queue, s)
	d.mu.Unlock()
	d.high = seq
	roomID, marker := roomOfSubject(subject)
	w := d.workers[uint64(roomID)%uint64(len(d.workers))]
	w.in <- deliveryJob{slot: s, data: data, roomID: roomID, marker: marker}
}

// ackWhenDone acknowledges m (a redelivery of seq) when seq's first dispatch
// is done: at once if it is, else together with it.
func (d *deliverer) ackWhenDone(seq uint64, m jetstream.Msg) {
	d.mu.Lock()
	for _, s := range d.queue {
		if s.seq == seq {
			s.msgs = append(s.msgs, m)
			d.mu.Unlock()
			return
		}
		if s.seq > seq {
			break
		}
	}
	// Not in the queue: done and acknowledged already (or never
	// dispatched by this instance because it was deleted from the stream).
	d.acks = append(d.acks, m)
	d.mu.Unlock()
	d.signalAcker()
}

// complete marks slots fanned out and moves the contiguous done prefix of
// the queue to the acker.
func (d *deliverer) complete(slots ...*slot) {
	d.mu.Lock()
	for _, s := range slots {
		s.done = true
	}
	n := 0
	for n < len(d.queue) && d.queue[n].done {
		d.acks = append(d.acks, d.queue[n].msgs...)
		d.queue[n] = nil
		n++
	}
	if n > 0 {
		d.queue = d.queue[n:]
	}
	d.mu.Unlock()
	if n > 0 {
		d.signalAcker()
	}
}

func (d *deliverer) signalAcker() {
	select {
	case d.ackSignal <- struct{}{}:
	default:
	}
}

// acker sends acknowledgements in stream order, as they become due.
func (d *deliverer) acker() {
	defer close(d.ackDone)
	var batch []jetstream.Msg
	for range d.ackSignal {
		d.mu.Lock()
		batch, d.acks = d.acks, batch[:0]
		stopping := d.stopping
		d.mu.Unlock()
		for _, m := range batch {
			_ = m.Ack()
		}
		clear(batch)
		if stopping {
			d.mu.Lock()
			left := len(d.acks)
			d.mu.Unlock()
			if left == 0 {
				return
			}
		}
	}
}

// fillGap dispatches, in order, the messages between what is known to be
// dispatched and seq (exclusive): everything after max(high, ack floor).
func (d *deliverer) fillGap(ctx context.Context, seq uint64) error {
	r := d.r
	info, err := r.cons.Info(ctx)
	if err != nil {
		return err
	}
	from := max(d.high, info.AckFloor.Stream) + 1
	for s := from; s < seq; s++ {
		sm, err := r.stream.GetMsg(ctx, s)
		if err != nil {
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				continue // deleted or aged out
			}
			return err
		}
		d.dispatch(s, sm.Subject, sm.Data, nil)
	}
	if d.high < seq-1 {
		d.high = seq - 1
	}
	return nil
}

// Under load a worker waits lingerFor before taking its next batch when the
// last one held at least lingerAfter messages: more of each room's messages
// are then delivered together, so the server writes more of them per system
// call to each member (about 10 % less CPU per message in the 100 rooms × 10
// members benchmark). Below that load batches hold a message or two and
// nothing waits.
const (
	lingerAfter = 64
	lingerFor   = 2 * time.Millisecond
)

// maxWorkerBatch bounds how many queued messages a worker takes at once.
const maxWorkerBatch = 1024

// run fans out the worker's messages. It takes whatever is queued (up to
// maxWorkerBatch) and delivers it room by room: a room's messages keep their
// stream order, and consecutive deliveries to the same member reach the
// server together, so it writes them to the member's connection in one
// system call instead of one per message (under load, the dominant cost of
// a fan-out to many connections). A failed fan-out (the member list could
// not be read) is retried in place, so the room's later messages never
// overtake it.
func (w *deliveryWorker) run() {
	d := w.d
	defer d.wg.Done()
	batch := make([]deliveryJob, 0, maxWorkerBatch)
	slots := make([]*slot, 0, maxWorkerBatch)
	last := 0 // size of the previous batch
	for job := range w.in {
		batch = append(batch[:0], job)
		if last >= lingerAfter {
			time.Sleep(lingerFor)
		}
	drain:
		for len(batch) < maxWorkerBatch {
			select {
			case j, ok := <-w.in:
				if !ok {
					break drain
				}
				batch = append(batch, j)
			default:
				break drain
			}
		}
		if w.stopped || d.dead.Load() {
			continue
		}
		// Stable: a room's messages stay in dispatch (stream) order.
		slices.SortStableFunc(batch, func(a, b deliveryJob) int { return cmp.Compare(a.roomID, b.roomID) })
		for {
			reconnects := w.nc.Stats().Reconnects
			slots = slots[:0]
			for _, job := range batch {
				if !w.deliver(job) {
					w.stopped = true
					break
				}
				slots = append(slots, job.slot)
			}
			if len(slots) > 0 && w.nc != d.r.nc && !w.flush() {
				w.stopped = true
				slots = slots[:0]
			}
			// A reconnect during the batch may have lost publishes still in
			// the old socket (nats.go does not resend them), and the flush
			// only covers the new one: deliver the batch again before it is
			// acknowledged (members drop repeats by seq).
			if w.nc.Stats().Reconnects == reconnects {
				break
			}
			if w.stopped {
				slots = slots[:0]
				break
			}
		}
		if len(slots) > 0 {
			d.complete(slots...)
		}
		last = len(batch)
		clear(batch)
		clear(slots)
	}
}

// flush waits until the server has processed everything the worker
// published on its own connection (a PING/PONG round trip, once per batch).
// The acks go out on the router's connection, so without it an ack could
// reach the server before the deliveries it stands for, and a crash in
// between would lose them. (Acks sent on this connection would be ordered
// after the deliveries only within one socket: across a reconnect nats.go
// sends them from its reconnect buffer while deliveries written to the old
// socket may be lost; docs/realtime.md, Delivery performance.) It retries
// until it succeeds; false means this instance is going away and the batch
// stays unacknowledged.
func (w *deliveryWorker) flush() bool {
	return w.d.retry(func() error { return w.nc.FlushTimeout(5 * time.Second) },
		"delivery connection flush failed; retrying")
}

// retry runs op until it succeeds (true). A closed connection stops this
// instance's delivery (fail) and a closing instance gives up; both return
// false and leave the job unacknowledged for the next deliverer.
func (d *deliverer) retry(op func() error, msg string, attrs ...any) bool {
	for attempt := 0; ; attempt++ {
		err := op()
		if err == nil {
			return true
		}
		if errors.Is(err, nats.ErrConnectionClosed) || d.dead.Load() {
			d.fail()
			return false
		}
		if d.closing.Load() {
			return false
		}
		if attempt%10 == 0 {
			d.r.log.Warn(msg, append(attrs, "err", err)...)
		}
		time.Sleep(time.Second)
	}
}

// fail stops this instance's delivery for good (a delivery connection was
// closed): nothing more is fanned out or acknowledged, and pulling stops so
// the pin lapses and another instance takes over.
func (d *deliverer) fail() {
	if d.dead.Swap(true) {
		return
	}
	r := d.r
	go func() {
		r.mu.Lock()
		cc := r.consume
		r.mu.Unlock()
		if cc != nil {
			cc.Stop()
		}
	}()
}

// deliver fans one job out, retrying until it succeeds; false means this
// instance is going away (or a test crashed it) and the job stays
// unacknowledged.
func (w *deliveryWorker) deliver(job deliveryJob) bool {
	d := w.d
	r := d.r
	if d.dead.Load() {
		return false
	}
	if r.hookBeforeFanout != nil && r.hookBeforeFanout(job.slot.seq) {
		d.dead.Store(true)
		return false
	}
	if !d.retry(func() error { return w.fanout(job) }, "delivery failed; retrying", "seq", job.slot.seq) {
		return false
	}
	if r.hookBeforeAck != nil && r.hookBeforeAck(job.slot.seq) {
		d.dead.Store(true)
		return false
	}
	return true
}

// roomOfSubject parses chat.room.<id> and chat.room.<id>.membership
// (marker); roomID is 0 for anything else.
func roomOfSubject(subject string) (roomID int64, marker bool) {
	rest, ok := strings.CutPrefix(subject, "chat.room.")
	if !ok {
		return 0, false
	}
	if roomStr, ok := strings.CutSuffix(rest, markerSuffix); ok {
		rest, marker = roomStr, true
	}
	id, err := strconv.ParseInt(rest, 10, 64)
	if err != nil || id <= 0 {
		return 0, false
	}
	return id, marker
}

// fanout delivers one stored record: a chat message goes to every member; a
// membership marker refreshes the room's member list first.
func (w *deliveryWorker) fanout(job deliveryJob) error {
	r := w.d.r
	if job.roomID == 0 {
		return nil
	}
	if job.marker {
		r.cache.invalidateRoomMembers(job.roomID)
		return nil
	}
	// Publish copies the payload, so the worker's buffer is reused.
	out, ok := appendWithSeq(w.buf[:0], job.data, job.roomID, job.slot.seq)
	w.buf = out
	if !ok {
		r.log.Warn("skipping undecodable stored message", "seq", job.slot.seq)
		return nil
	}
	subjects, ok := r.cache.cachedRoomSubjects(job.roomID)
	if !ok {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		var err error
		subjects, err = r.cache.roomSubjects(ctx, job.roomID)
		cancel()
		if err != nil {
			return err
		}
	}
	for _, subj := range subjects {
		if err := w.nc.Publish(subj, out); err != nil {
			return err
		}
	}
	r.m.deliveries.Add(float64(len(subjects)))
	r.m.delivered.Inc()
	return nil
}

// appendWithSeq appends the delivery form of a stored message to dst: the
// stored JSON with its seq. The router stores messages with "seq":0 right
// after room_id (encodeMessage), so the common case is a splice; anything
// else is decoded and encoded again. false means undecodable.
func appendWithSeq(dst, data []byte, roomID int64, seq uint64) ([]byte, bool) {
	const head = `{"room_id":`
	var num [20]byte
	id := strconv.AppendInt(num[:0], roomID, 10)
	if rest, ok := bytes.CutPrefix(data, []byte(head)); ok {
		if rest, ok = bytes.CutPrefix(rest, id); ok {
			if rest, ok = bytes.CutPrefix(rest, []byte(`,"seq":0,`)); ok {
				dst = append(dst, head...)
				dst = append(dst, id...)
				dst = append(dst, `,"seq":`...)
				dst = strconv.AppendUint(dst, seq, 10)
				dst = append(dst, ',')
				return append(dst, rest...), true
			}
		}
	}
	var msg mulchat.Message
	if err := json.Unmarshal(data, &msg); err != nil {
		return dst, false
	}
	msg.Seq, msg.RoomID = seq, roomID
	out, err := encodeMessage(&msg)
	if err != nil {
		return dst, false
	}
	return append(dst, out...), true
}

// storedMessage reads one message of the stream by sequence.
func (r *Router) storedMessage(ctx context.Context, seq uint64) (*mulchat.Message, error) {
	sm, err := r.stream.GetMsg(ctx, seq)
	if err != nil {
		return nil, err
	}
	var m mulchat.Message
	if err := json.Unmarshal(sm.Data, &m); err != nil {
		return nil, err
	}
	m.Seq = seq
	return &m, nil
}
