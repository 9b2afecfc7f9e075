package client

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"

	"github.com/mulchat/mulchat"
)

// Ack is the router's answer to a stored message.
type Ack struct {
	Seq         uint64    `json:"seq"`
	SentAt      time.Time `json:"sent_at"`
	ClientMsgID string    `json:"-"`
}

// NewClientMsgID returns a random id for a message: 16 random bytes in hex.
func NewClientMsgID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return hex.EncodeToString(b[:])
}

// Send sends text to a room with a fresh client_msg_id; see SendMessage.
func (c *Client) Send(ctx context.Context, roomID int64, text string) (*Ack, error) {
	return c.SendMessage(ctx, roomID, text, NewClientMsgID())
}

// SendMessage sends text to a room as a request on chat.send.<room>.<uid>
// and returns the router's ack. A request that times out or finds no router
// is retried (up to Config.SendAttempts) with the same clientMsgID, so the
// router stores the message once however many attempts reached it.
func (c *Client) SendMessage(ctx context.Context, roomID int64, text, clientMsgID string) (*Ack, error) {
	if err := validateText(text); err != nil {
		return nil, err
	}
	if clientMsgID == "" {
		clientMsgID = NewClientMsgID()
	}
	payload, err := json.Marshal(struct {
		Text        string `json:"text"`
		ClientMsgID string `json:"client_msg_id"`
	}{text, clientMsgID})
	if err != nil {
		return nil, mulchat.WrapError(mulchat.EINTERNAL, err, "encoding the message")
	}
	subject := mulchat.SendSubject(roomID, c.UserID())
	var ack Ack
	if err := c.request(ctx, subject, payload, c.cfg.SendAttempts, &ack); err != nil {
		return nil, fmt.Errorf("send to room %d: %w", roomID, err)
	}
	ack.ClientMsgID = clientMsgID
	// The sender is a member and will get its own message delivered; the ack
	// does not move the room's last seq, or that delivery would be dropped.
	return &ack, nil
}

// validateText applies the router's rules early, for a clear message.
func validateText(text string) error {
	if !utf8.ValidString(text) {
		return mulchat.Errorf(mulchat.EINVALID, "message text must be valid UTF-8")
	}
	n := utf8.RuneCountInString(text)
	if n == 0 {
		return mulchat.Errorf(mulchat.EINVALID, "message text is empty")
	}
	if n > mulchat.MessageMaxChars {
		return mulchat.Errorf(mulchat.ETOOLARGE, "message text is longer than %d characters", mulchat.MessageMaxChars)
	}
	return nil
}

// History returns up to limit messages of a room with seq < before (0: the
// newest), oldest first. It asks the router over NATS when connected and the
// HTTP API otherwise.
func (c *Client) History(ctx context.Context, roomID int64, before uint64, limit int) ([]mulchat.Message, error) {
	nc := c.conn()
	if nc == nil || nc.IsClosed() {
		return c.historyHTTP(ctx, roomID, before, limit)
	}
	payload, err := json.Marshal(struct {
		RoomID int64  `json:"room_id"`
		Before uint64 `json:"before,omitempty"`
		Limit  int    `json:"limit,omitempty"`
	}{roomID, before, limit})
	if err != nil {
		return nil, mulchat.WrapError(mulchat.EINTERNAL, err, "encoding the history request")
	}
	var out struct {
		Messages []mulchat.Message `json:"messages"`
	}
	if err := c.request(ctx, mulchat.APISubject(c.UserID(), "history"), payload, 2, &out); err != nil {
		return nil, fmt.Errorf("history of room %d: %w", roomID, err)
	}
	return out.Messages, nil
}

// request sends a NATS request, retrying timeouts and missing responders up
// to attempts times with a short backoff, and decodes the reply into out or
// returns the coded error the service replied with.
func (c *Client) request(ctx context.Context, subject string, payload []byte, attempts int, out any) error {
	nc := c.conn()
	if nc == nil {
		return mulchat.Errorf(mulchat.EUNAVAILABLE, "not connected to NATS")
	}
	var lastErr error
	for attempt := range attempts {
		if attempt > 0 {
			wait := time.Duration(100<<attempt) * time.Millisecond
			select {
			case <-ctx.Done():
				return natsError(ctx.Err())
			case <-time.After(min(wait, 2*time.Second)):
			}
		}
		actx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
		msg, err := nc.RequestWithContext(actx, subject, payload)
		cancel()
		if err == nil {
			var ae apiError
			if json.Unmarshal(msg.Data, &ae) == nil && ae.Error != nil {
				return ae.err()
			}
			if err := json.Unmarshal(msg.Data, out); err != nil {
				return mulchat.WrapError(mulchat.EINTERNAL, err, "unreadable reply on "+subject)
			}
			return nil
		}
		if c.denied(subject) {
			return mulchat.Errorf(mulchat.EFORBIDDEN, "NATS denies you publishing on %s", subject)
		}
		lastErr = err
		if ctx.Err() != nil || errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, nats.ErrBadSubject) {
			break
		}
		c.log.Debug("request failed; retrying", "subject", subject, "attempt", attempt+1, "error", err)
	}
	return natsError(lastErr)
}

// denied reports whether NATS refused a publish on subject in the last
// minute (permission violations arrive asynchronously).
func (c *Client) denied(subject string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	at, ok := c.permDenied[subject]
	return ok && time.Since(at) < time.Minute
}
