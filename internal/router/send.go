package router

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mulchat/mulchat"
)

type sendReq struct {
	msg    *nats.Msg
	roomID int64
	userID int64
}

type pendingSend struct {
	reply  string
	future jetstream.PubAckFuture
	sentAt time.Time
	start  time.Time
}

// Reasons a request is dropped unanswered (mulchat_router_requests_dropped_total).
const (
	dropBadReply   = "bad_reply"
	dropBadSubject = "bad_subject"
)

// replyAllowed reports whether reply lies under userID's own inbox prefix
// (_INBOX.<uid>.…), the only place the router answers a user's request. The
// requester chooses the reply subject, and the router's connection may publish
// almost anywhere (chat.room.>, every user's chat.user.<uid>.>, $JS.API.>):
// answering any other subject would let a user make the router store a
// message in another room, write into another user's deliveries or inbox, or
// call the JetStream API. Wildcard tokens are refused too, so an answer
// reaches exactly one literal subject of the requester.
func replyAllowed(reply string, userID int64) bool {
	rest, ok := strings.CutPrefix(reply, mulchat.UserInboxPrefix(userID)+".")
	if !ok || rest == "" || strings.ContainsAny(rest, " \t\r\n") {
		return false
	}
	for tok := range strings.SplitSeq(rest, ".") {
		if tok == "" || tok == "*" || tok == ">" {
			return false
		}
	}
	return true
}

// drop counts and logs a request left unanswered on purpose.
func (r *Router) drop(msg *nats.Msg, reason string) {
	r.m.dropped.WithLabelValues(reason).Inc()
	r.log.Debug("request dropped", "reason", reason, "subject", msg.Subject, "reply", msg.Reply)
}

// handleSend runs on the subscription's goroutine. It first makes sure the
// reply subject is the sender's own inbox (nothing else is done for a request
// that fails this), then applies the sender's rate limit, and hands the
// request to the worker owning the user without waiting, so one user's sends
// are stored in the order they arrived while different users proceed in
// parallel, and a flood is refused here instead of queueing without bound.
func (r *Router) handleSend(msg *nats.Msg) {
	roomID, userID := parseSendSubject(msg.Subject)
	if userID <= 0 {
		r.drop(msg, dropBadSubject)
		return
	}
	if !replyAllowed(msg.Reply, userID) {
		r.drop(msg, dropBadReply)
		return
	}
	if !r.limits.allow(userID) {
		// A flood is answered here, so this is kept cheap: the answer is
		// encoded once.
		r.m.sends.WithLabelValues(mulchat.ERATELIMITED).Inc()
		if err := r.nc.Publish(msg.Reply, r.rateLimited); err != nil {
			r.log.Warn("reply failed", "err", err)
		}
		return
	}
	if roomID <= 0 {
		r.m.sends.WithLabelValues(mulchat.EINVALID).Inc()
		r.replyError(msg.Reply, mulchat.Errorf(mulchat.EINVALID, "bad send subject"))
		return
	}
	r.shardsMu.RLock()
	defer r.shardsMu.RUnlock()
	if r.shardsClosed {
		return // the router is closing; the client's request times out
	}
	select {
	case r.shards[userID%int64(len(r.shards))] <- &sendReq{msg: msg, roomID: roomID, userID: userID}:
	default:
		// The worker is behind (overload, or rate limiting disabled):
		// refusing keeps memory bounded and the client may retry.
		r.m.sends.WithLabelValues("queue_full").Inc()
		r.replyError(msg.Reply, mulchat.Errorf(mulchat.ERATELIMITED, "the server is busy; try again shortly"))
	}
}

// parseSendSubject parses chat.send.<room>.<uid>; an id that is missing, not
// numeric or not positive is returned as 0.
func parseSendSubject(subject string) (roomID, userID int64) {
	rest, found := strings.CutPrefix(subject, "chat.send.")
	if !found {
		return 0, 0
	}
	rs, us, found := strings.Cut(rest, ".")
	if !found {
		return 0, 0
	}
	if u, err := strconv.ParseInt(us, 10, 64); err == nil && u > 0 {
		userID = u
	}
	if r, err := strconv.ParseInt(rs, 10, 64); err == nil && r > 0 {
		roomID = r
	}
	return roomID, userID
}

func (r *Router) sendWorker(ctx context.Context, in <-chan *sendReq, pending chan<- *pendingSend) {
	defer r.wg.Done()
	defer close(pending)
	for req := range in {
		if r.hookSendWorker != nil {
			r.hookSendWorker()
		}
		start := r.now()
		p, err := r.prepareAndPublish(ctx, req)
		if err != nil {
			r.m.sends.WithLabelValues(mulchat.ErrorCode(err)).Inc()
			if mulchat.ErrorCode(err) == mulchat.EINTERNAL {
				r.log.Error("send failed", "room_id", req.roomID, "user_id", req.userID, "err", err)
			}
			r.replyError(req.msg.Reply, err)
			continue
		}
		p.start = start
		pending <- p
	}
}

// prepareAndPublish checks and validates one send (the rate limit was applied
// by handleSend) and publishes it to
// JetStream asynchronously; the replier answers when the store acknowledges.
func (r *Router) prepareAndPublish(ctx context.Context, req *sendReq) (*pendingSend, error) {
	body, err := decodeSend(req.msg.Data)
	if err != nil {
		return nil, err
	}
	sender, err := r.cache.user(ctx, req.userID)
	if err != nil {
		if mulchat.ErrorCode(err) == mulchat.ENOTFOUND {
			return nil, mulchat.Errorf(mulchat.EFORBIDDEN, "unknown user")
		}
		return nil, err
	}
	if !sender.IsActive {
		return nil, mulchat.Errorf(mulchat.EFORBIDDEN, "user is not active")
	}
	if r.cfg.AccountPublicKey != "" && sender.NATS.AccountPublicKey != "" && sender.NATS.AccountPublicKey != r.cfg.AccountPublicKey {
		return nil, mulchat.Errorf(mulchat.EFORBIDDEN, "credential belongs to another account")
	}
	member, err := r.cache.member(ctx, req.roomID, req.userID)
	if err != nil {
		return nil, err
	}
	if !member.CanSend() {
		return nil, mulchat.Errorf(mulchat.EFORBIDDEN, "role %q may not send in room %d", member.Role, req.roomID)
	}
	sentAt := r.now().UTC()
	m := mulchat.Message{
		RoomID:      req.roomID,
		Sender:      mulchat.Sender{ID: sender.ID, Username: sender.Username},
		Text:        body.Text,
		SentAt:      sentAt,
		ClientMsgID: body.ClientMsgID,
	}
	data, err := encodeMessage(&m)
	if err != nil {
		return nil, mulchat.WrapError(mulchat.EINTERNAL, err, "encode message")
	}
	out := nats.NewMsg(mulchat.RoomSubject(req.roomID))
	out.Data = data
	// When too many stores are outstanding the worker waits (backpressure)
	// rather than failing the send after nats.go's default 200 ms. No
	// Nats-Expected-Stream header: chat.room.> belongs to CHAT by the stream's
	// own subjects, and the header costs a parse per message on both sides.
	opts := []jetstream.PublishOpt{stallWait}
	if body.ClientMsgID != "" {
		// The user id scopes the id, so users cannot collide with each other.
		opts = append(opts, jetstream.WithMsgID(strconv.FormatInt(req.userID, 10)+":"+body.ClientMsgID))
	}
	fut, err := r.js.PublishMsgAsync(out, opts...)
	if err != nil {
		return nil, mulchat.WrapError(mulchat.EUNAVAILABLE, err, "message store unavailable")
	}
	return &pendingSend{reply: req.msg.Reply, future: fut, sentAt: sentAt}, nil
}

// stallWait is the store's backpressure (see prepareAndPublish).
var stallWait = jetstream.WithStallWait(5 * time.Second)

// decodeSend parses and validates a send payload.
func decodeSend(data []byte) (*mulchat.SendRequest, error) {
	if len(data) == 0 {
		return nil, mulchat.Errorf(mulchat.EINVALID, "empty request")
	}
	if !utf8.Valid(data) {
		return nil, mulchat.Errorf(mulchat.EINVALID, "request must be valid UTF-8")
	}
	var body mulchat.SendRequest
	if err := decodeSendJSON(data, &body); err != nil {
		return nil, mulchat.Errorf(mulchat.EINVALID, "request must be a JSON object with \"text\"")
	}
	if err := ValidateText(body.Text); err != nil {
		return nil, err
	}
	if len(body.ClientMsgID) > mulchat.ClientMsgIDMaxLen {
		return nil, mulchat.Errorf(mulchat.EINVALID, "client_msg_id must be at most %d bytes", mulchat.ClientMsgIDMaxLen)
	}
	for _, c := range body.ClientMsgID {
		if c <= ' ' || c == 0x7f {
			return nil, mulchat.Errorf(mulchat.EINVALID, "client_msg_id must not contain spaces or control characters")
		}
	}
	return &body, nil
}

// ValidateText checks a message text: valid UTF-8, 1–4000 characters, no NUL.
func ValidateText(text string) error {
	if !utf8.ValidString(text) {
		return mulchat.Errorf(mulchat.EINVALID, "text must be valid UTF-8")
	}
	n := utf8.RuneCountInString(text)
	if n == 0 {
		return mulchat.Errorf(mulchat.EINVALID, "text must not be empty")
	}
	if n > mulchat.MessageMaxChars {
		return mulchat.Errorf(mulchat.ETOOLARGE, "text must be at most %d characters", mulchat.MessageMaxChars)
	}
	if strings.IndexByte(text, 0) >= 0 {
		return mulchat.Errorf(mulchat.EINVALID, "text must not contain NUL")
	}
	return nil
}

// replier answers sends in the order its worker published them.
func (r *Router) replier(pending <-chan *pendingSend) {
	defer r.wg.Done()
	for p := range pending {
		select {
		case ack := <-p.future.Ok():
			sentAt := p.sentAt
			if ack.Duplicate {
				// A retried send: answer with the original's time.
				if orig, err := r.storedMessage(context.Background(), ack.Sequence); err == nil {
					sentAt = orig.SentAt
				}
				r.m.sendsDuplicate.Inc()
			} else {
				r.m.sendsOK.Inc()
			}
			r.m.sendLatency.Observe(r.now().Sub(p.start).Seconds())
			r.reply(p.reply, &mulchat.SendReply{Seq: ack.Sequence, SentAt: &sentAt})
		case err := <-p.future.Err():
			r.m.sends.WithLabelValues(mulchat.EUNAVAILABLE).Inc()
			r.log.Warn("store message failed", "err", err)
			r.replyError(p.reply, mulchat.WrapError(mulchat.EUNAVAILABLE, err, "message store unavailable"))
		}
	}
}

func (r *Router) reply(subject string, v any) {
	if subject == "" {
		return
	}
	var data []byte
	var err error
	if rep, ok := v.(*mulchat.SendReply); ok {
		data, err = encodeSendReply(rep)
	} else {
		data, err = json.Marshal(v)
	}
	if err != nil {
		r.log.Error("encode reply", "err", err)
		return
	}
	if err := r.nc.Publish(subject, data); err != nil {
		r.log.Warn("reply failed", "err", err)
	}
}

func (r *Router) replyError(subject string, err error) {
	r.reply(subject, &mulchat.SendReply{Error: errorBody(err)})
}

func errorBody(err error) *mulchat.ErrorBody {
	return &mulchat.ErrorBody{Code: mulchat.ErrorCode(err), Message: mulchat.ErrorMessage(err)}
}
