package sqlstore

import (
	"context"

	"github.com/mulchat/mulchat"
)

func validPermissionType(t string) bool {
	return t == mulchat.PermPub || t == mulchat.PermSub || t == mulchat.PermBoth
}

// CreatePermission inserts p and sets p.ID, and p.CreatedAt and p.UpdatedAt
// when they are zero.
func (q *queries) CreatePermission(ctx context.Context, p *mulchat.Permission) error {
	if !validPermissionType(p.Type) {
		return mulchat.Errorf(mulchat.EINVALID, "permission type must be pub, sub or both")
	}
	if p.Subject == "" {
		return mulchat.Errorf(mulchat.EINVALID, "permission subject is required")
	}
	createdAt, updatedAt := createTimes(p.CreatedAt, p.UpdatedAt)
	var id int64
	err := q.one(ctx, errMsgs{fk: "user or room does not exist"},
		`INSERT INTO nats_permissions (user_id, room_id, permission_type, subject, created_at, updated_at)
		VALUES ($1, $2, $3, $4, $5, $6) RETURNING id`,
		[]any{p.UserID, nullID(p.RoomID), p.Type, p.Subject, createdAt, updatedAt},
		func(s scanner) error { return s.Scan(&id) })
	if err != nil {
		return err
	}
	p.ID, p.CreatedAt, p.UpdatedAt = id, createdAt, updatedAt
	return nil
}

// ListUserPermissions lists the user's grants by id.
func (q *queries) ListUserPermissions(ctx context.Context, userID int64) ([]*mulchat.Permission, error) {
	perms := []*mulchat.Permission{}
	err := q.many(ctx,
		`SELECT id, user_id, room_id, permission_type, subject, created_at, updated_at
		FROM nats_permissions WHERE user_id = $1 ORDER BY id`, []any{userID},
		func(s scanner) error {
			var p mulchat.Permission
			if err := s.Scan(&p.ID, &p.UserID, idDest{&p.RoomID}, stringDest{&p.Type}, stringDest{&p.Subject},
				timeDest{&p.CreatedAt}, timeDest{&p.UpdatedAt}); err != nil {
				return err
			}
			perms = append(perms, &p)
			return nil
		})
	if err != nil {
		return nil, err
	}
	return perms, nil
}

func (q *queries) DeletePermission(ctx context.Context, id int64) error {
	n, err := q.exec(ctx, errMsgs{}, `DELETE FROM nats_permissions WHERE id = $1`, id)
	if err != nil {
		return err
	}
	if n == 0 {
		return mulchat.Errorf(mulchat.ENOTFOUND, "permission not found")
	}
	return nil
}
