package sqlstore

import (
	"context"

	"github.com/mulchat/mulchat"
)

const roomColumns = `id, name, subject_prefix, description, account_id, is_public, created_at, updated_at`

func scanRoom(s scanner) (*mulchat.Room, error) {
	var r mulchat.Room
	err := s.Scan(&r.ID, stringDest{&r.Name}, stringDest{&r.SubjectPrefix}, stringDest{&r.Description},
		idDest{&r.AccountID}, boolDest{&r.IsPublic}, timeDest{&r.CreatedAt}, timeDest{&r.UpdatedAt})
	if err != nil {
		return nil, err
	}
	return &r, nil
}

var roomNotFound = errMsgs{notFound: "room not found"}

// CreateRoom inserts r, sets r.SubjectPrefix from its new id and adds ownerID
// as the owner, in one transaction (the caller's, inside InTx). It sets r.ID,
// and r.CreatedAt and r.UpdatedAt when they are zero.
func (q *queries) CreateRoom(ctx context.Context, r *mulchat.Room, ownerID int64) error {
	if r.Name == "" {
		return mulchat.Errorf(mulchat.EINVALID, "room name is required")
	}
	if err := checkKeyLen("room name", r.Name); err != nil {
		return err
	}
	createdAt, updatedAt := createTimes(r.CreatedAt, r.UpdatedAt)
	var id int64
	err := q.inTx(ctx, func(q *queries) error {
		err := q.one(ctx, errMsgs{fk: "NATS account does not exist"},
			`INSERT INTO nats_rooms (name, subject_prefix, description, account_id, is_public, created_at, updated_at)
			VALUES ($1, '', $2, $3, $4, $5, $6) RETURNING id`,
			[]any{r.Name, nullString(r.Description), nullID(r.AccountID), r.IsPublic, createdAt, updatedAt},
			func(s scanner) error { return s.Scan(&id) })
		if err != nil {
			return err
		}
		if _, err := q.exec(ctx, errMsgs{},
			`UPDATE nats_rooms SET subject_prefix = $2 WHERE id = $1`, id, mulchat.RoomSubject(id)); err != nil {
			return err
		}
		_, err = q.exec(ctx, errMsgs{fk: "owner does not exist"},
			`INSERT INTO nats_user_rooms (user_id, room_id, joined_at, role) VALUES ($1, $2, $3, $4)`,
			ownerID, id, createdAt, mulchat.RoleOwner)
		return err
	})
	if err != nil {
		return err
	}
	r.ID, r.SubjectPrefix, r.CreatedAt, r.UpdatedAt = id, mulchat.RoomSubject(id), createdAt, updatedAt
	return nil
}

func (q *queries) roomBy(ctx context.Context, where string, arg any) (*mulchat.Room, error) {
	var r *mulchat.Room
	err := q.one(ctx, roomNotFound, `SELECT `+roomColumns+` FROM nats_rooms WHERE `+where, []any{arg},
		func(s scanner) (err error) {
			r, err = scanRoom(s)
			return err
		})
	return r, err
}

func (q *queries) RoomByID(ctx context.Context, id int64) (*mulchat.Room, error) {
	return q.roomBy(ctx, `id = $1`, id)
}

func (q *queries) RoomByName(ctx context.Context, name string) (*mulchat.Room, error) {
	return q.roomBy(ctx, `name = $1`, name)
}

func (q *queries) listRooms(ctx context.Context, query string, args ...any) ([]*mulchat.Room, error) {
	rooms := []*mulchat.Room{}
	err := q.many(ctx, query, args, func(s scanner) error {
		r, err := scanRoom(s)
		if err != nil {
			return err
		}
		rooms = append(rooms, r)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return rooms, nil
}

// ListRoomsForUser lists the public rooms and the rooms userID is a member
// of, by name.
func (q *queries) ListRoomsForUser(ctx context.Context, userID int64) ([]*mulchat.Room, error) {
	return q.listRooms(ctx,
		`SELECT `+roomColumns+` FROM nats_rooms r
		WHERE r.is_public OR EXISTS (SELECT 1 FROM nats_user_rooms m WHERE m.room_id = r.id AND m.user_id = $1)
		ORDER BY r.name`, userID)
}

// ListRooms lists every room by name.
func (q *queries) ListRooms(ctx context.Context) ([]*mulchat.Room, error) {
	return q.listRooms(ctx, `SELECT `+roomColumns+` FROM nats_rooms ORDER BY name`)
}

// DeleteRoom deletes the room; its memberships and room-scoped permissions
// go with it (ON DELETE CASCADE).
func (q *queries) DeleteRoom(ctx context.Context, id int64) error {
	n, err := q.exec(ctx, errMsgs{}, `DELETE FROM nats_rooms WHERE id = $1`, id)
	if err != nil {
		return err
	}
	if n == 0 {
		return mulchat.Errorf(mulchat.ENOTFOUND, "room not found")
	}
	return nil
}

func validRole(role string) bool {
	return role == mulchat.RoleOwner || role == mulchat.RoleMember || role == mulchat.RoleReader
}

// AddRoomMember adds userID to the room with role; an existing member is
// ECONFLICT, a missing room or user EINVALID.
func (q *queries) AddRoomMember(ctx context.Context, roomID, userID int64, role string) error {
	if !validRole(role) {
		return mulchat.Errorf(mulchat.EINVALID, "role must be owner, member or reader")
	}
	_, err := q.exec(ctx, errMsgs{fk: "room or user does not exist"},
		`INSERT INTO nats_user_rooms (user_id, room_id, joined_at, role) VALUES ($1, $2, $3, $4)`,
		userID, roomID, now(), role)
	return err
}

var memberNotFound = errMsgs{notFound: "user is not a member of this room"}

func (q *queries) RemoveRoomMember(ctx context.Context, roomID, userID int64) error {
	n, err := q.exec(ctx, errMsgs{}, `DELETE FROM nats_user_rooms WHERE room_id = $1 AND user_id = $2`, roomID, userID)
	if err != nil {
		return err
	}
	if n == 0 {
		return mulchat.Errorf(mulchat.ENOTFOUND, "%s", memberNotFound.notFound)
	}
	return nil
}

const memberSelect = `SELECT m.room_id, m.user_id, u.username, m.role, m.joined_at
	FROM nats_user_rooms m JOIN users u ON u.id = m.user_id`

func scanMember(s scanner) (*mulchat.Member, error) {
	var m mulchat.Member
	if err := s.Scan(&m.RoomID, &m.UserID, &m.Username, stringDest{&m.Role}, timeDest{&m.JoinedAt}); err != nil {
		return nil, err
	}
	return &m, nil
}

func (q *queries) RoomMember(ctx context.Context, roomID, userID int64) (*mulchat.Member, error) {
	var m *mulchat.Member
	err := q.one(ctx, memberNotFound, memberSelect+` WHERE m.room_id = $1 AND m.user_id = $2`,
		[]any{roomID, userID},
		func(s scanner) (err error) {
			m, err = scanMember(s)
			return err
		})
	return m, err
}

// ListRoomMembers lists the room's members by username. A room without
// members (or no such room) gives an empty list.
func (q *queries) ListRoomMembers(ctx context.Context, roomID int64) ([]*mulchat.Member, error) {
	members := []*mulchat.Member{}
	err := q.many(ctx, memberSelect+` WHERE m.room_id = $1 ORDER BY u.username, m.user_id`, []any{roomID},
		func(s scanner) error {
			m, err := scanMember(s)
			if err != nil {
				return err
			}
			members = append(members, m)
			return nil
		})
	if err != nil {
		return nil, err
	}
	return members, nil
}

// ListUserRoomIDs lists the ids of the rooms userID is a member of, ascending.
func (q *queries) ListUserRoomIDs(ctx context.Context, userID int64) ([]int64, error) {
	ids := []int64{}
	err := q.many(ctx, `SELECT room_id FROM nats_user_rooms WHERE user_id = $1 ORDER BY room_id`, []any{userID},
		func(s scanner) error {
			var id int64
			if err := s.Scan(&id); err != nil {
				return err
			}
			ids = append(ids, id)
			return nil
		})
	if err != nil {
		return nil, err
	}
	return ids, nil
}
