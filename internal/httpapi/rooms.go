package httpapi

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/mulchat/mulchat"
)

type roomView struct {
	ID            int64     `json:"id"`
	Name          string    `json:"name"`
	Description   string    `json:"description"`
	IsPublic      bool      `json:"is_public"`
	SubjectPrefix string    `json:"subject_prefix"`
	CreatedAt     time.Time `json:"created_at"`
	UpdatedAt     time.Time `json:"updated_at"`
	// Role is the caller's role, absent when the caller is not a member.
	Role string `json:"role,omitempty"`
}

func roomJSON(r *mulchat.Room, role string) roomView {
	return roomView{ID: r.ID, Name: r.Name, Description: r.Description, IsPublic: r.IsPublic,
		SubjectPrefix: r.SubjectPrefix, CreatedAt: r.CreatedAt.UTC(), UpdatedAt: r.UpdatedAt.UTC(), Role: role}
}

type memberView struct {
	UserID   int64     `json:"user_id"`
	Username string    `json:"username"`
	Role     string    `json:"role"`
	JoinedAt time.Time `json:"joined_at"`
}

func memberJSON(m *mulchat.Member) memberView {
	return memberView{UserID: m.UserID, Username: m.Username, Role: m.Role, JoinedAt: m.JoinedAt.UTC()}
}

// notify tells the membership notifier about a committed change. A failure is
// logged, not returned: the change is already in the database, and routers
// also expire their membership caches on their own.
func (s *Server) notify(ctx context.Context, roomID, userID int64, change string) {
	if s.cfg.Membership == nil {
		return
	}
	if err := s.cfg.Membership.MembershipChanged(ctx, roomID, userID, change); err != nil {
		s.logger.Warn("membership notification failed", slog.Int64("room_id", roomID), slog.Int64("user_id", userID),
			slog.String("change", change), slog.Any("err", err))
	}
}

// roomFor loads a room as the caller may see it: public rooms and rooms the
// caller belongs to. A private room the caller is not in is ENOTFOUND, exactly
// like a room that does not exist, so room ids and names do not leak. member
// is nil when the caller is not a member.
func (s *Server) roomFor(ctx context.Context, r *http.Request, userID int64) (*mulchat.Room, *mulchat.Member, error) {
	id, err := pathID(r, "id")
	if err != nil {
		return nil, nil, err
	}
	notFound := mulchat.Errorf(mulchat.ENOTFOUND, "room not found")
	room, err := s.store.RoomByID(ctx, id)
	if err != nil {
		if mulchat.ErrorCode(err) == mulchat.ENOTFOUND {
			return nil, nil, notFound
		}
		return nil, nil, err
	}
	m, err := s.store.RoomMember(ctx, id, userID)
	if err != nil {
		if mulchat.ErrorCode(err) != mulchat.ENOTFOUND {
			return nil, nil, err
		}
		m = nil
	}
	if m == nil && !room.IsPublic {
		return nil, nil, notFound
	}
	return room, m, nil
}

func roleOf(m *mulchat.Member) string {
	if m == nil {
		return ""
	}
	return m.Role
}

func (s *Server) handleListRooms(w http.ResponseWriter, r *http.Request, sess *session) {
	ctx := r.Context()
	rooms, err := s.store.ListRoomsForUser(ctx, sess.user.ID)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	mine, err := s.store.ListUserRoomIDs(ctx, sess.user.ID)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	isMember := make(map[int64]bool, len(mine))
	for _, id := range mine {
		isMember[id] = true
	}
	out := make([]roomView, 0, len(rooms))
	for _, room := range rooms {
		role := ""
		if isMember[room.ID] {
			m, err := s.store.RoomMember(ctx, room.ID, sess.user.ID)
			if err == nil {
				role = m.Role
			} else if mulchat.ErrorCode(err) != mulchat.ENOTFOUND {
				s.writeError(w, r, err)
				return
			}
		}
		out = append(out, roomJSON(room, role))
	}
	writeJSON(w, http.StatusOK, map[string]any{"rooms": out})
}

type createRoomRequest struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	IsPublic    *bool  `json:"is_public"`
}

// handleCreateRoom creates a room owned by the caller; rooms are public
// unless is_public is false.
func (s *Server) handleCreateRoom(w http.ResponseWriter, r *http.Request, sess *session) {
	var req createRoomRequest
	if err := decodeJSON(w, r, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := mulchat.ValidateRoomName(req.Name); err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := mulchat.ValidateRoomDescription(req.Description); err != nil {
		s.writeError(w, r, err)
		return
	}
	room := &mulchat.Room{Name: req.Name, Description: req.Description, IsPublic: req.IsPublic == nil || *req.IsPublic}
	if err := s.store.CreateRoom(r.Context(), room, sess.user.ID); err != nil {
		if mulchat.ErrorCode(err) == mulchat.ECONFLICT {
			err = mulchat.Errorf(mulchat.ECONFLICT, "a room with this name already exists")
		}
		s.writeError(w, r, err)
		return
	}
	s.logger.Info("room created", slog.Int64("room_id", room.ID), slog.Int64("owner_id", sess.user.ID))
	s.notify(r.Context(), room.ID, sess.user.ID, mulchat.MembershipJoined)
	writeJSON(w, http.StatusCreated, roomJSON(room, mulchat.RoleOwner))
}

func (s *Server) handleGetRoom(w http.ResponseWriter, r *http.Request, sess *session) {
	room, m, err := s.roomFor(r.Context(), r, sess.user.ID)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, roomJSON(room, roleOf(m)))
}

func (s *Server) handleDeleteRoom(w http.ResponseWriter, r *http.Request, sess *session) {
	ctx := r.Context()
	room, m, err := s.roomFor(ctx, r, sess.user.ID)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if m == nil || m.Role != mulchat.RoleOwner {
		s.writeError(w, r, mulchat.Errorf(mulchat.EFORBIDDEN, "only an owner may delete the room"))
		return
	}
	members, err := s.store.ListRoomMembers(ctx, room.ID)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := s.store.DeleteRoom(ctx, room.ID); err != nil {
		s.writeError(w, r, err)
		return
	}
	s.logger.Info("room deleted", slog.Int64("room_id", room.ID), slog.Int64("by_user_id", sess.user.ID))
	for _, mem := range members {
		s.notify(ctx, room.ID, mem.UserID, mulchat.MembershipDeleted)
	}
	w.WriteHeader(http.StatusNoContent)
}

// handleJoinRoom joins a public room as a member. Joining again is not an
// error and answers the same 200. A private room is not joinable; to a
// non-member it does not exist (404), like on every other room endpoint.
func (s *Server) handleJoinRoom(w http.ResponseWriter, r *http.Request, sess *session) {
	ctx := r.Context()
	room, m, err := s.roomFor(ctx, r, sess.user.ID)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if m != nil {
		writeJSON(w, http.StatusOK, roomJSON(room, m.Role))
		return
	}
	if !room.IsPublic {
		s.writeError(w, r, mulchat.Errorf(mulchat.EFORBIDDEN, "private rooms are joined by invitation of an owner"))
		return
	}
	if err := s.store.AddRoomMember(ctx, room.ID, sess.user.ID, mulchat.RoleMember); err != nil {
		if mulchat.ErrorCode(err) != mulchat.ECONFLICT { // a concurrent join won; same outcome
			s.writeError(w, r, err)
			return
		}
	} else {
		s.notify(ctx, room.ID, sess.user.ID, mulchat.MembershipJoined)
	}
	writeJSON(w, http.StatusOK, roomJSON(room, mulchat.RoleMember))
}

// removeMember removes userID from the room, refusing to remove the last
// owner (a room without an owner could never be administered or deleted).
// The owner check and the delete must be one transaction: checked apart, two
// owners leaving at once could each see the other and both go. The
// notification follows the commit.
func (s *Server) removeMember(ctx context.Context, roomID, userID int64, change string) error {
	var err error
	if r, ok := s.store.(mulchat.OwnerKeepingRemover); ok {
		err = r.RemoveRoomMemberKeepingOwner(ctx, roomID, userID)
	} else {
		err = s.store.InTx(ctx, func(q mulchat.Queries) error { return removeKeepingOwner(ctx, q, roomID, userID) })
	}
	if err != nil {
		return err
	}
	s.notify(ctx, roomID, userID, change)
	return nil
}

// removeKeepingOwner is the owner rule for a store without
// OwnerKeepingRemover, run inside its InTx. It is atomic only where the
// store's transactions serialise writers (as SQLite's do); such a store
// should implement OwnerKeepingRemover to lock the rows it reads.
func removeKeepingOwner(ctx context.Context, q mulchat.Queries, roomID, userID int64) error {
	members, err := q.ListRoomMembers(ctx, roomID)
	if err != nil {
		return err
	}
	owners, isOwner := 0, false
	for _, m := range members {
		if m.Role == mulchat.RoleOwner {
			owners++
			if m.UserID == userID {
				isOwner = true
			}
		}
	}
	if isOwner && owners == 1 {
		return mulchat.Errorf(mulchat.ECONFLICT, "%s", mulchat.LastOwnerMessage)
	}
	return q.RemoveRoomMember(ctx, roomID, userID)
}

func (s *Server) handleLeaveRoom(w http.ResponseWriter, r *http.Request, sess *session) {
	ctx := r.Context()
	room, m, err := s.roomFor(ctx, r, sess.user.ID)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if m == nil {
		s.writeError(w, r, mulchat.Errorf(mulchat.ENOTFOUND, "you are not a member of this room"))
		return
	}
	if err := s.removeMember(ctx, room.ID, sess.user.ID, mulchat.MembershipLeft); err != nil {
		s.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) handleListMembers(w http.ResponseWriter, r *http.Request, sess *session) {
	ctx := r.Context()
	room, m, err := s.roomFor(ctx, r, sess.user.ID)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if m == nil {
		s.writeError(w, r, mulchat.Errorf(mulchat.EFORBIDDEN, "only members may list the members"))
		return
	}
	members, err := s.store.ListRoomMembers(ctx, room.ID)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := make([]memberView, 0, len(members))
	for _, mem := range members {
		out = append(out, memberJSON(mem))
	}
	writeJSON(w, http.StatusOK, map[string]any{"members": out})
}

type addMemberRequest struct {
	Username string `json:"username"`
	Role     string `json:"role"`
}

// handleAddMember lets an owner add a user by name, as member (default),
// reader or owner.
func (s *Server) handleAddMember(w http.ResponseWriter, r *http.Request, sess *session) {
	ctx := r.Context()
	room, m, err := s.roomFor(ctx, r, sess.user.ID)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	var req addMemberRequest
	if err := decodeJSON(w, r, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	if m == nil || m.Role != mulchat.RoleOwner {
		s.writeError(w, r, mulchat.Errorf(mulchat.EFORBIDDEN, "only an owner may add members"))
		return
	}
	switch req.Role {
	case "":
		req.Role = mulchat.RoleMember
	case mulchat.RoleMember, mulchat.RoleReader, mulchat.RoleOwner:
	default:
		s.writeError(w, r, mulchat.Errorf(mulchat.EINVALID, "role must be member, reader or owner"))
		return
	}
	if req.Username == "" || len(req.Username) > 256 {
		s.writeError(w, r, mulchat.Errorf(mulchat.EINVALID, "username is required"))
		return
	}
	u, err := s.store.UserByUsername(ctx, req.Username)
	if err != nil {
		if mulchat.ErrorCode(err) == mulchat.ENOTFOUND {
			err = mulchat.Errorf(mulchat.ENOTFOUND, "user not found")
		}
		s.writeError(w, r, err)
		return
	}
	if err := s.store.AddRoomMember(ctx, room.ID, u.ID, req.Role); err != nil {
		if mulchat.ErrorCode(err) == mulchat.ECONFLICT {
			err = mulchat.Errorf(mulchat.ECONFLICT, "the user is already a member")
		}
		s.writeError(w, r, err)
		return
	}
	s.notify(ctx, room.ID, u.ID, mulchat.MembershipJoined)
	mem, err := s.store.RoomMember(ctx, room.ID, u.ID)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, memberJSON(mem))
}

// handleRemoveMember removes a member: an owner may remove anyone, anyone
// may remove themselves.
func (s *Server) handleRemoveMember(w http.ResponseWriter, r *http.Request, sess *session) {
	ctx := r.Context()
	room, m, err := s.roomFor(ctx, r, sess.user.ID)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	target, err := pathID(r, "user_id")
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	self := target == sess.user.ID
	if m == nil || (!self && m.Role != mulchat.RoleOwner) {
		s.writeError(w, r, mulchat.Errorf(mulchat.EFORBIDDEN, "only an owner may remove other members"))
		return
	}
	if _, err := s.store.RoomMember(ctx, room.ID, target); err != nil {
		if mulchat.ErrorCode(err) == mulchat.ENOTFOUND {
			err = mulchat.Errorf(mulchat.ENOTFOUND, "no such member")
		}
		s.writeError(w, r, err)
		return
	}
	change := mulchat.MembershipRemoved
	if self {
		change = mulchat.MembershipLeft
	}
	if err := s.removeMember(ctx, room.ID, target, change); err != nil {
		s.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// Message history paging bounds.
const (
	defaultHistoryLimit = 50
	maxHistoryLimit     = 500
)

func (s *Server) handleMessages(w http.ResponseWriter, r *http.Request, sess *session) {
	ctx := r.Context()
	room, _, err := s.roomFor(ctx, r, sess.user.ID)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	before, err := queryUint(r, "before", 0, 1<<63-1)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	limit, err := queryUint(r, "limit", defaultHistoryLimit, maxHistoryLimit)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if limit == 0 {
		limit = defaultHistoryLimit
	}
	if s.cfg.History == nil {
		s.writeError(w, r, mulchat.Errorf(mulchat.ENOTIMPLEMENTED, "message history is not available on this server"))
		return
	}
	msgs, err := s.cfg.History.History(ctx, room.ID, sess.user.ID, before, int(limit))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if msgs == nil {
		msgs = []mulchat.Message{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"messages": msgs})
}
