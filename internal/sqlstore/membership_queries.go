package sqlstore

import (
	"context"

	"github.com/mulchat/mulchat"
)

var _ mulchat.OwnerKeepingRemover = (*queries)(nil)

// RemoveRoomMemberKeepingOwner removes userID from the room unless it is the
// room's only owner, reading the owners and deleting in one transaction (the
// caller's, if q is inside one).
//
// On PostgreSQL the room's owner rows are locked (SELECT … FOR UPDATE, in
// user_id order so that two removers take the locks in the same order and
// cannot deadlock): a concurrent remover waits, then reads the owners left
// after the first one's commit (read committed re-checks locked rows and
// skips deleted ones). Locking the owner rows is enough because only owners
// count for the rule. On SQLite the transaction holds the database write lock
// from its start (BEGIN IMMEDIATE), so a plain read suffices.
func (q *queries) RemoveRoomMemberKeepingOwner(ctx context.Context, roomID, userID int64) error {
	return q.inTx(ctx, func(q *queries) error {
		query := `SELECT user_id FROM nats_user_rooms WHERE room_id = $1 AND role = $2 ORDER BY user_id`
		if q.dialect == DialectPostgres {
			query += ` FOR UPDATE`
		}
		var owners []int64
		err := q.many(ctx, query, []any{roomID, mulchat.RoleOwner}, func(s scanner) error {
			var id int64
			if err := s.Scan(&id); err != nil {
				return err
			}
			owners = append(owners, id)
			return nil
		})
		if err != nil {
			return err
		}
		if len(owners) == 1 && owners[0] == userID {
			return mulchat.Errorf(mulchat.ECONFLICT, "%s", mulchat.LastOwnerMessage)
		}
		return q.RemoveRoomMember(ctx, roomID, userID)
	})
}
