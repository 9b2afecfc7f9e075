package router

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mulchat/mulchat"
)

// Delivery.
//
// One durable pull consumer (ConsumerName) over the whole CHAT stream drives
// delivery. It uses the "pinned client" priority policy: the server hands
// messages to one pinned instance only, so exactly one deliverer is active and
// it sees new messages in stream order. It publishes each message to every
// member's chat.user.<uid>.msg and only then acks it, so a crash between store
// and delivery loses nothing: the message stays unacknowledged and is
// delivered by whoever holds the pin next.
//
// Ordering across a failover needs care: messages the crashed deliverer held
// unacknowledged are redelivered only after AckWait, while new messages go to
// the new pinned instance at once. The deliverer therefore processes the
// stream strictly by sequence: it keeps the highest sequence it delivered
// (high), and when a message arrives past high+1 it first delivers the gap
// itself, reading the messages directly from the stream starting after the
// consumer's ack floor. Messages at or below high are acknowledged without a
// second fan-out. The cost is at-least-once delivery: after a crash, messages
// the old deliverer fanned out but had not acked are fanned out again, with
// the same seq; clients drop a message whose seq is not above the last seq
// they have seen in that room.

type deliverer struct {
	r    *Router
	high uint64
	dead bool // set by a test hook: behave like a crashed process
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
	d := &deliverer{r: r}
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
		return mulchat.WrapError(mulchat.EUNAVAILABLE, err, "router: consume")
	}
	r.consume = cc
	return nil
}

// handle runs on the consumer's single callback goroutine, one message at a
// time, in the order the server delivers them.
func (d *deliverer) handle(m jetstream.Msg) {
	r := d.r
	if d.dead {
		return
	}
	meta, err := m.Metadata()
	if err != nil {
		_ = m.Term()
		return
	}
	seq := meta.Sequence.Stream
	if seq <= d.high {
		// Already fanned out by this instance (a redelivery after a gap fill).
		_ = m.Ack()
		return
	}
	if r.hookBeforeFanout != nil && r.hookBeforeFanout(seq) {
		d.dead = true
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if seq != d.high+1 {
		if err := d.fillGap(ctx, seq); err != nil {
			r.log.Warn("delivery gap fill failed; will retry", "seq", seq, "err", err)
			_ = m.NakWithDelay(time.Second)
			return
		}
	}
	if err := d.fanout(ctx, m.Subject(), m.Data(), seq); err != nil {
		r.log.Warn("delivery failed; will retry", "seq", seq, "err", err)
		_ = m.NakWithDelay(time.Second)
		return
	}
	d.high = seq
	if r.hookBeforeAck != nil && r.hookBeforeAck(seq) {
		d.dead = true
		return
	}
	_ = m.Ack()
}

// fillGap delivers, in order, the messages between what is known to be
// delivered and seq (exclusive): everything after max(high, ack floor).
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
		if err := d.fanout(ctx, sm.Subject, sm.Data, s); err != nil {
			return err
		}
		d.high = s
	}
	if d.high < seq-1 {
		d.high = seq - 1
	}
	return nil
}

// fanout delivers one stored record: a chat message goes to every member; a
// membership marker refreshes the room's member list first.
func (d *deliverer) fanout(ctx context.Context, subject string, data []byte, seq uint64) error {
	r := d.r
	rest, ok := strings.CutPrefix(subject, "chat.room.")
	if !ok {
		return nil
	}
	if roomStr, ok := strings.CutSuffix(rest, markerSuffix); ok {
		if roomID, err := strconv.ParseInt(roomStr, 10, 64); err == nil {
			r.cache.invalidateRoomMembers(roomID)
		}
		return nil
	}
	roomID, err := strconv.ParseInt(rest, 10, 64)
	if err != nil {
		return nil
	}
	out := withSeq(data, roomID, seq)
	if out == nil {
		r.log.Warn("skipping undecodable stored message", "seq", seq)
		return nil
	}
	members, err := r.cache.roomMembers(ctx, roomID)
	if err != nil {
		return err
	}
	for _, uid := range members {
		if err := r.nc.Publish(mulchat.UserSubject(uid, "msg"), out); err != nil {
			return err
		}
	}
	r.m.deliveries.Add(float64(len(members)))
	r.m.delivered.Inc()
	return nil
}

// withSeq returns the delivery form of a stored message: the stored JSON
// with its seq. The router stores messages with "seq":0 right after room_id
// (json.Marshal of mulchat.Message), so the common case is a splice; anything
// else is decoded and encoded again. nil means undecodable.
func withSeq(data []byte, roomID int64, seq uint64) []byte {
	prefix := []byte(`{"room_id":` + strconv.FormatInt(roomID, 10) + `,"seq":0,`)
	if bytes.HasPrefix(data, prefix) {
		out := make([]byte, 0, len(data)+20)
		out = append(out, prefix[:len(prefix)-2]...)
		out = strconv.AppendUint(out, seq, 10)
		out = append(out, ',')
		return append(out, data[len(prefix):]...)
	}
	var msg mulchat.Message
	if err := json.Unmarshal(data, &msg); err != nil {
		return nil
	}
	msg.Seq, msg.RoomID = seq, roomID
	out, err := json.Marshal(&msg)
	if err != nil {
		return nil
	}
	return out
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
