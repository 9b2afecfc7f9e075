package mulchat

import "context"

// LastOwnerMessage is the ECONFLICT message for removing a room's only owner.
const LastOwnerMessage = "the last owner cannot leave the room; add another owner or delete the room"

// OwnerKeepingRemover is implemented by a store that removes a room member
// while keeping the room administered, in one transaction. A check of the
// owners followed by a separate delete lets two owners who leave at the same
// time each see the other still there and both go, leaving a room nobody can
// administer or delete.
type OwnerKeepingRemover interface {
	// RemoveRoomMemberKeepingOwner removes userID from the room unless it is
	// the room's only owner (ECONFLICT, LastOwnerMessage); ENOTFOUND when
	// userID is not a member.
	RemoveRoomMemberKeepingOwner(ctx context.Context, roomID, userID int64) error
}
