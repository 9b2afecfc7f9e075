package router

import (
	"context"
	"encoding/json"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mulchat/mulchat"
)

// changeUser is the invalidation change that drops a user's cached row
// (active flag, credential account) in every instance; RoomID is 0.
const changeUser = "user"

// Notifier announces committed changes to every running router instance over
// NATS. It needs no running Router, only a connection of a chat-account
// service user (publish on mulchat.>, chat.user.>, $JS.API.>), so processes
// that change the database without serving — the admin CLI — tell the
// servers at once instead of leaving them to the cache TTL. Router uses one
// for its own MembershipChanged. It does not close the connection.
type Notifier struct {
	nc  *nats.Conn
	js  jetstream.JetStream
	now func() time.Time
}

// NewNotifier returns a Notifier publishing on nc.
func NewNotifier(nc *nats.Conn) (*Notifier, error) {
	if nc == nil {
		return nil, mulchat.Errorf(mulchat.EINVALID, "router: a NATS connection is required")
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, mulchat.WrapError(mulchat.EINTERNAL, err, "router: jetstream")
	}
	return &Notifier{nc: nc, js: js, now: time.Now}, nil
}

// MembershipChanged announces a committed membership change: every instance
// drops the cached membership (on InvalidateSubject), a marker stored in the
// CHAT stream switches delivery to the new member list exactly between the
// messages stored before and after it, and the user gets a membership event.
// userID 0 means the whole room. It returns once the marker is stored and
// the server has the rest, so a message sent after it returns is checked and
// delivered under the new membership. It implements
// mulchat.MembershipNotifier.
func (n *Notifier) MembershipChanged(ctx context.Context, roomID, userID int64, change string) error {
	if roomID <= 0 {
		return mulchat.Errorf(mulchat.EINVALID, "room id is required")
	}
	data, err := json.Marshal(&invalidation{RoomID: roomID, UserID: userID, Change: change})
	if err != nil {
		return err
	}
	if err := n.nc.Publish(InvalidateSubject, data); err != nil {
		return mulchat.WrapError(mulchat.EUNAVAILABLE, err, "announce membership change")
	}
	if _, err := n.js.Publish(ctx, mulchat.RoomSubject(roomID)+markerSuffix, data); err != nil {
		return mulchat.WrapError(mulchat.EUNAVAILABLE, err, "store membership marker")
	}
	if userID > 0 {
		n.publishEvent(userID, &mulchat.Event{Type: mulchat.EventMembership, RoomID: roomID, UserID: userID, Change: change})
	}
	if err := n.flush(ctx); err != nil {
		return mulchat.WrapError(mulchat.EUNAVAILABLE, err, "announce membership change")
	}
	return nil
}

// UserChanged announces that a user's row changed in a way routers check on
// every send (enabled, disabled, credential account): every instance drops
// the cached row, so the change is enforced at once instead of after
// CacheTTL.
func (n *Notifier) UserChanged(ctx context.Context, userID int64) error {
	if userID <= 0 {
		return mulchat.Errorf(mulchat.EINVALID, "user id is required")
	}
	data, err := json.Marshal(&invalidation{UserID: userID, Change: changeUser})
	if err != nil {
		return err
	}
	if err := n.nc.Publish(InvalidateSubject, data); err != nil {
		return mulchat.WrapError(mulchat.EUNAVAILABLE, err, "announce user change")
	}
	if err := n.flush(ctx); err != nil {
		return mulchat.WrapError(mulchat.EUNAVAILABLE, err, "announce user change")
	}
	return nil
}

// CredentialChanged sends the user a credential notice. It implements
// mulchat.CredentialNotifier.
func (n *Notifier) CredentialChanged(ctx context.Context, userID int64, change string, expiresAt *time.Time) error {
	n.publishEvent(userID, &mulchat.Event{Type: mulchat.EventCredential, UserID: userID, Change: change, ExpiresAt: expiresAt})
	return n.flush(ctx)
}

// publishEvent publishes ev on the user's event subject. A publish error
// (only a closed connection) surfaces in the flush that follows.
func (n *Notifier) publishEvent(userID int64, ev *mulchat.Event) {
	_ = publishUserEvent(n.nc, n.now(), userID, ev)
}

func (n *Notifier) flush(ctx context.Context) error { return flushConn(ctx, n.nc) }

var (
	_ mulchat.MembershipNotifier = (*Notifier)(nil)
	_ mulchat.CredentialNotifier = (*Notifier)(nil)
	_ mulchat.MembershipNotifier = (*Router)(nil)
)
