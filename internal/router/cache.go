package router

import (
	"context"
	"sync"
	"time"

	"github.com/mulchat/mulchat"
)

// cache holds what the router reads on every send and delivery: a user's
// name and account, a (room, user) membership, and a room's member ids.
// Entries expire after ttl as a backstop; membership changes announced with
// MembershipChanged invalidate them at once in every instance.
type cache struct {
	store mulchat.Store
	ttl   time.Duration
	now   func() time.Time

	mu      sync.Mutex
	users   map[int64]userEntry
	members map[memberKey]memberEntry
	rooms   map[int64]roomEntry
	// roomsGen counts invalidations of rooms: a member list read from the
	// store is cached only if no invalidation came while it was read, so a
	// read that started before a membership change cannot put the old list
	// back after the change's invalidation.
	roomsGen uint64
}

type userEntry struct {
	user    *mulchat.User
	expires time.Time
}

type memberKey struct{ room, user int64 }

type memberEntry struct {
	member  *mulchat.Member // nil: not a member
	err     error           // ENOTFOUND for an unknown room
	expires time.Time
}

type roomEntry struct {
	userIDs []int64
	// subjects are the members' chat.user.<uid>.msg, built once per entry
	// for the deliverer.
	subjects []string
	expires  time.Time
}

// maxEntries bounds each map; when reached the map is reset, which costs a
// few database reads and keeps memory bounded without an LRU.
const maxEntries = 100_000

func newCache(store mulchat.Store, ttl time.Duration, now func() time.Time) *cache {
	return &cache{
		store:   store,
		ttl:     ttl,
		now:     now,
		users:   map[int64]userEntry{},
		members: map[memberKey]memberEntry{},
		rooms:   map[int64]roomEntry{},
	}
}

// user returns the user row (names never change; active and credential
// account may, hence the expiry).
func (c *cache) user(ctx context.Context, id int64) (*mulchat.User, error) {
	now := c.now()
	c.mu.Lock()
	e, ok := c.users[id]
	c.mu.Unlock()
	if ok && now.Before(e.expires) {
		return e.user, nil
	}
	u, err := c.store.UserByID(ctx, id)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if len(c.users) >= maxEntries {
		c.users = map[int64]userEntry{}
	}
	c.users[id] = userEntry{user: u, expires: now.Add(c.ttl)}
	c.mu.Unlock()
	return u, nil
}

// member returns the membership of userID in roomID: ENOTFOUND if the room
// does not exist, EFORBIDDEN if the user is not a member.
func (c *cache) member(ctx context.Context, roomID, userID int64) (*mulchat.Member, error) {
	now := c.now()
	k := memberKey{roomID, userID}
	c.mu.Lock()
	e, ok := c.members[k]
	c.mu.Unlock()
	if !ok || !now.Before(e.expires) {
		m, err := c.store.RoomMember(ctx, roomID, userID)
		switch {
		case err == nil:
			e = memberEntry{member: m}
		case mulchat.ErrorCode(err) == mulchat.ENOTFOUND:
			if _, rerr := c.store.RoomByID(ctx, roomID); rerr != nil {
				if mulchat.ErrorCode(rerr) != mulchat.ENOTFOUND {
					return nil, rerr
				}
				e = memberEntry{err: mulchat.Errorf(mulchat.ENOTFOUND, "room %d not found", roomID)}
			} else {
				e = memberEntry{}
			}
		default:
			return nil, err
		}
		e.expires = now.Add(c.ttl)
		c.mu.Lock()
		if len(c.members) >= maxEntries {
			c.members = map[memberKey]memberEntry{}
		}
		c.members[k] = e
		c.mu.Unlock()
	}
	if e.err != nil {
		return nil, e.err
	}
	if e.member == nil {
		return nil, mulchat.Errorf(mulchat.EFORBIDDEN, "not a member of room %d", roomID)
	}
	return e.member, nil
}

// roomMembers returns the ids of roomID's members (every role receives).
func (c *cache) roomMembers(ctx context.Context, roomID int64) ([]int64, error) {
	e, err := c.room(ctx, roomID)
	return e.userIDs, err
}

// roomSubjects returns the delivery subjects (chat.user.<uid>.msg) of
// roomID's members.
func (c *cache) roomSubjects(ctx context.Context, roomID int64) ([]string, error) {
	e, err := c.room(ctx, roomID)
	return e.subjects, err
}

// cachedRoomSubjects returns roomID's delivery subjects if they are cached
// and fresh, without reading anything (the fan-out's common case, which
// then needs no context with a deadline).
func (c *cache) cachedRoomSubjects(roomID int64) ([]string, bool) {
	e, fresh, _, _ := c.cachedRoom(roomID)
	return e.subjects, fresh
}

// cachedRoom returns roomID's entry and whether it is fresh, with the time
// of the lookup and the invalidation count then (for a read that follows).
func (c *cache) cachedRoom(roomID int64) (e roomEntry, fresh bool, now time.Time, gen uint64) {
	now = c.now()
	c.mu.Lock()
	e, ok := c.rooms[roomID]
	gen = c.roomsGen
	c.mu.Unlock()
	return e, ok && now.Before(e.expires), now, gen
}

func (c *cache) room(ctx context.Context, roomID int64) (roomEntry, error) {
	e, fresh, now, gen := c.cachedRoom(roomID)
	if fresh {
		return e, nil
	}
	ms, err := c.store.ListRoomMembers(ctx, roomID)
	if err != nil && mulchat.ErrorCode(err) != mulchat.ENOTFOUND {
		return roomEntry{}, err
	}
	e = roomEntry{userIDs: make([]int64, 0, len(ms)), subjects: make([]string, 0, len(ms)), expires: now.Add(c.ttl)}
	for _, m := range ms {
		e.userIDs = append(e.userIDs, m.UserID)
		e.subjects = append(e.subjects, mulchat.UserSubject(m.UserID, "msg"))
	}
	c.mu.Lock()
	if len(c.rooms) >= maxEntries {
		c.rooms = map[int64]roomEntry{}
	}
	if c.roomsGen == gen {
		c.rooms[roomID] = e
	}
	c.mu.Unlock()
	return e, nil
}

// invalidate forgets what a membership change may have made stale. userID 0
// means every member of the room (room deleted).
func (c *cache) invalidate(roomID, userID int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.rooms, roomID)
	c.roomsGen++
	if userID != 0 {
		delete(c.members, memberKey{roomID, userID})
		return
	}
	for k := range c.members {
		if k.room == roomID {
			delete(c.members, k)
		}
	}
}

// invalidateUser forgets a user's row (enabled, disabled, credential
// account changed).
func (c *cache) invalidateUser(userID int64) {
	c.mu.Lock()
	delete(c.users, userID)
	c.mu.Unlock()
}

// invalidateRoomMembers forgets only the deliverer's member list of a room.
func (c *cache) invalidateRoomMembers(roomID int64) {
	c.mu.Lock()
	delete(c.rooms, roomID)
	c.roomsGen++
	c.mu.Unlock()
}

// limiter is a per-user token bucket. It is per instance: with N router
// instances behind one queue group a user may get up to N times the rate in
// the worst case, which is acceptable for abuse protection (docs/realtime.md).
type limiter struct {
	rate  float64
	burst float64
	now   func() time.Time

	mu      sync.Mutex
	buckets map[int64]*bucket
	swept   time.Time
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newLimiter(rate float64, burst int, now func() time.Time) *limiter {
	return &limiter{rate: rate, burst: float64(burst), now: now, buckets: map[int64]*bucket{}}
}

// allow takes one token from userID's bucket.
func (l *limiter) allow(userID int64) bool {
	if l.rate < 0 {
		return true
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.swept) > time.Minute {
		// Full buckets carry no information; dropping them bounds memory.
		for id, b := range l.buckets {
			if b.tokens+now.Sub(b.last).Seconds()*l.rate >= l.burst {
				delete(l.buckets, id)
			}
		}
		l.swept = now
	}
	b, ok := l.buckets[userID]
	if !ok {
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[userID] = b
	}
	b.tokens += now.Sub(b.last).Seconds() * l.rate
	b.last = now
	if b.tokens > l.burst {
		b.tokens = l.burst
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
