package router

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/mulchat/mulchat"
)

// handleAPI answers chat.api.<uid>.<op> requests. Like handleSend, it first
// makes sure the reply subject is the requester's own inbox and drops the
// request otherwise (see replyAllowed).
func (r *Router) handleAPI(msg *nats.Msg) {
	rest, _ := strings.CutPrefix(msg.Subject, "chat.api.")
	us, op, _ := strings.Cut(rest, ".")
	userID, err := strconv.ParseInt(us, 10, 64)
	if err != nil || userID <= 0 {
		r.drop(msg, dropBadSubject)
		return
	}
	if !replyAllowed(msg.Reply, userID) {
		r.drop(msg, dropBadReply)
		return
	}
	r.shardsMu.RLock()
	defer r.shardsMu.RUnlock()
	if r.shardsClosed {
		return // closing
	}
	switch op {
	case "history":
		// History reads are independent; serve them off the subscription's
		// goroutine so one slow page does not hold up others, at most
		// historyConcurrency at a time (the subscription waits beyond).
		r.historySem <- struct{}{}
		r.wg.Add(1)
		go func() {
			defer func() { <-r.historySem; r.wg.Done() }()
			r.handleHistory(msg, userID)
		}()
	case "presence":
		r.historySem <- struct{}{}
		r.wg.Add(1)
		go func() {
			defer func() { <-r.historySem; r.wg.Done() }()
			r.handlePresence(msg, userID)
		}()
	default:
		r.replyError(msg.Reply, mulchat.Errorf(mulchat.ENOTFOUND, "unknown api operation %q", op))
	}
}

func (r *Router) handleHistory(msg *nats.Msg, userID int64) {
	var req mulchat.HistoryRequest
	if len(msg.Data) == 0 || json.Unmarshal(msg.Data, &req) != nil {
		r.reply(msg.Reply, &mulchat.HistoryReply{Messages: []mulchat.Message{}, Error: errorBody(mulchat.Errorf(mulchat.EINVALID, "request must be a JSON object with room_id"))})
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	msgs, err := r.History(ctx, req.RoomID, userID, req.Before, req.Limit)
	if err != nil {
		if mulchat.ErrorCode(err) == mulchat.EINTERNAL {
			r.log.Error("history failed", "room_id", req.RoomID, "err", err)
		}
		r.reply(msg.Reply, &mulchat.HistoryReply{Messages: []mulchat.Message{}, Error: errorBody(err)})
		return
	}
	r.reply(msg.Reply, &mulchat.HistoryReply{Messages: msgs})
}

func (r *Router) handlePresence(msg *nats.Msg, userID int64) {
	var req mulchat.PresenceRequest
	if len(msg.Data) == 0 || json.Unmarshal(msg.Data, &req) != nil || req.RoomID <= 0 {
		r.reply(msg.Reply, &mulchat.PresenceReply{Members: []mulchat.MemberPresence{}, Error: errorBody(mulchat.Errorf(mulchat.EINVALID, "request must be a JSON object with room_id"))})
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	members, err := r.Presence(ctx, req.RoomID, userID)
	if err != nil {
		if mulchat.ErrorCode(err) == mulchat.EINTERNAL {
			r.log.Error("presence failed", "room_id", req.RoomID, "err", err)
		}
		r.reply(msg.Reply, &mulchat.PresenceReply{Members: []mulchat.MemberPresence{}, Error: errorBody(err)})
		return
	}
	r.reply(msg.Reply, &mulchat.PresenceReply{Members: members})
}

// Presence lists roomID's members with whether each has an active NATS
// session (nats_auth_sessions, kept by the tracker), for members of the room.
func (r *Router) Presence(ctx context.Context, roomID, userID int64) ([]mulchat.MemberPresence, error) {
	if _, err := r.cache.member(ctx, roomID, userID); err != nil {
		return nil, err
	}
	members, err := r.store.ListRoomMembers(ctx, roomID)
	if err != nil {
		return nil, err
	}
	out := make([]mulchat.MemberPresence, 0, len(members))
	for _, m := range members {
		active, err := r.store.ListUserAuthSessions(ctx, m.UserID, true)
		if err != nil {
			return nil, err
		}
		status := mulchat.PresenceOffline
		if len(active) > 0 {
			status = mulchat.PresenceOnline
		}
		out = append(out, mulchat.MemberPresence{UserID: m.UserID, Username: m.Username, Status: status})
	}
	return out, nil
}

// History returns up to limit messages of roomID with seq < before (before ==
// 0: the newest), oldest first, if userID is a member (any role); EFORBIDDEN
// otherwise. It implements mulchat.MessageHistory.
//
// The stream holds every room, so a room's messages are scattered over the
// stream's sequence space. A page is read backwards in windows: the newest
// room message below before is found with a direct get (multi_last with
// up_to_seq, nats-server 2.11+), then batch direct gets (next_by_subj on the
// room subject) read windows [lo, hi] that double in width until the page is
// full or the stream's start is reached. A busy room fills a page in one
// batch; a quiet room in a busy stream needs about log2(1/density) batches.
// See docs/realtime.md.
func (r *Router) History(ctx context.Context, roomID, userID int64, before uint64, limit int) ([]mulchat.Message, error) {
	if roomID <= 0 {
		return nil, mulchat.Errorf(mulchat.EINVALID, "room_id is required")
	}
	if limit <= 0 {
		limit = r.cfg.HistoryDefaultLim
	}
	if limit > r.cfg.HistoryMaxLimit {
		limit = r.cfg.HistoryMaxLimit
	}
	if _, err := r.cache.member(ctx, roomID, userID); err != nil {
		return nil, err
	}
	r.m.history.Inc()
	if before == 1 {
		return []mulchat.Message{}, nil
	}
	subject := mulchat.RoomSubject(roomID)
	var upTo uint64
	if before > 1 {
		upTo = before - 1
	}
	newest, err := r.lastBySubject(ctx, subject, upTo)
	if err != nil {
		return nil, err
	}
	if newest == 0 {
		return []mulchat.Message{}, nil
	}
	var page []mulchat.Message // newest window first, each window ascending
	hi := newest
	window := uint64(limit)
	for len(page) < limit {
		lo := uint64(1)
		if hi > window {
			lo = hi - window + 1
		}
		// Asking for one more than a page tells whether the window holds
		// more than a page (then we read only its oldest part: narrow the
		// window and read again).
		got, err := r.batchFrom(ctx, subject, lo, hi, limit+1)
		if err != nil {
			return nil, err
		}
		if len(got) > limit && window > 1 {
			window /= 2
			continue
		}
		need := limit - len(page)
		if len(got) > need {
			got = got[len(got)-need:]
		}
		page = append(got, page...)
		if lo == 1 {
			break
		}
		hi = lo - 1
		window *= 2
	}
	return page, nil
}

// lastBySubject returns the sequence of the newest message on subject with
// seq <= upTo (0 = no bound), or 0 if there is none.
func (r *Router) lastBySubject(ctx context.Context, subject string, upTo uint64) (uint64, error) {
	req := map[string]any{"multi_last": []string{subject}, "batch": 1}
	if upTo > 0 {
		req["up_to_seq"] = upTo
	}
	var last uint64
	err := r.directGet(ctx, req, func(hdr nats.Header, _ []byte) bool {
		last, _ = strconv.ParseUint(hdr.Get("Nats-Sequence"), 10, 64)
		return true
	})
	return last, err
}

// batchFrom reads up to limit room messages with lo <= seq, keeping those <=
// hi, in ascending order.
func (r *Router) batchFrom(ctx context.Context, subject string, lo, hi uint64, limit int) ([]mulchat.Message, error) {
	req := map[string]any{"seq": lo, "next_by_subj": subject, "batch": limit}
	var out []mulchat.Message
	err := r.directGet(ctx, req, func(hdr nats.Header, data []byte) bool {
		seq, _ := strconv.ParseUint(hdr.Get("Nats-Sequence"), 10, 64)
		if seq > hi {
			return false
		}
		var m mulchat.Message
		if json.Unmarshal(data, &m) == nil {
			m.Seq = seq
			out = append(out, m)
		}
		return true
	})
	return out, err
}

// directGet sends a (batch) direct get request on the CHAT stream and calls fn
// for each message until the end of the batch or fn returns false. A 404 is
// an empty result.
func (r *Router) directGet(ctx context.Context, req map[string]any, fn func(nats.Header, []byte) bool) error {
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	inbox := r.nc.NewRespInbox()
	sub, err := r.nc.SubscribeSync(inbox)
	if err != nil {
		return mulchat.WrapError(mulchat.EUNAVAILABLE, err, "history unavailable")
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := r.nc.PublishRequest("$JS.API.DIRECT.GET."+StreamName, inbox, body); err != nil {
		return mulchat.WrapError(mulchat.EUNAVAILABLE, err, "history unavailable")
	}
	stopped := false
	for {
		m, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) {
				return mulchat.WrapError(mulchat.EUNAVAILABLE, err, "history timed out")
			}
			return mulchat.WrapError(mulchat.EUNAVAILABLE, err, "history unavailable")
		}
		status := m.Header.Get("Status")
		switch status {
		case "":
		case "204": // end of batch
			return nil
		case "404":
			return nil
		case "503":
			return mulchat.Errorf(mulchat.EUNAVAILABLE, "history unavailable")
		default:
			return mulchat.WrapError(mulchat.EINTERNAL, fmt.Errorf("direct get status %s %s", status, m.Header.Get("Description")), "history failed")
		}
		if len(m.Data) == 0 && m.Header.Get("Nats-Sequence") == "" {
			continue
		}
		if !stopped && !fn(m.Header, m.Data) {
			stopped = true
		}
	}
}
