package authority

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/mulchat/mulchat"
	"github.com/nats-io/nats.go"
)

// ClaimsUpdateSubject is where a server with a full resolver accepts account
// JWT updates from the system account.
const ClaimsUpdateSubject = "$SYS.REQ.CLAIMS.UPDATE"

// pushTimeout bounds a push when the caller's context has no deadline.
const pushTimeout = 5 * time.Second

// NewClaimsPusher returns a Pusher that sends account JWTs on
// $SYS.REQ.CLAIMS.UPDATE over nc, which must be a system account connection
// (ServiceCredentials with system=true). The server that answers stores the
// JWT in its resolver directory, applies it (closing revoked users'
// connections) and forwards it to the cluster.
func NewClaimsPusher(nc *nats.Conn) Pusher {
	return func(ctx context.Context, accountJWT string) error {
		if _, ok := ctx.Deadline(); !ok {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, pushTimeout)
			defer cancel()
		}
		msg, err := nc.RequestWithContext(ctx, ClaimsUpdateSubject, []byte(accountJWT))
		switch {
		case errors.Is(err, nats.ErrNoResponders):
			return mulchat.WrapError(mulchat.EUNAVAILABLE, err,
				"no NATS server answered "+ClaimsUpdateSubject+" (is the connection a system account user, and do the servers run a full resolver?)")
		case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout):
			return mulchat.WrapError(mulchat.EUNAVAILABLE, err, "timed out pushing the account JWT to NATS")
		case err != nil:
			return mulchat.WrapError(mulchat.EUNAVAILABLE, err, "pushing the account JWT to NATS failed")
		}
		var reply struct {
			Data *struct {
				Code    int    `json:"code"`
				Message string `json:"message"`
			} `json:"data"`
			Error *struct {
				Code        int    `json:"code"`
				Description string `json:"description"`
			} `json:"error"`
		}
		if err := json.Unmarshal(msg.Data, &reply); err != nil {
			return mulchat.WrapError(mulchat.EUNAVAILABLE, err, "NATS answered the account update with something that is not JSON")
		}
		if reply.Error != nil {
			return mulchat.Errorf(mulchat.EUNAVAILABLE, "NATS refused the account update (code %d): %s", reply.Error.Code, reply.Error.Description)
		}
		if reply.Data == nil {
			return mulchat.Errorf(mulchat.EUNAVAILABLE, "NATS answered the account update without a result")
		}
		return nil
	}
}
