package client

import (
	"context"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/mulchat/mulchat"
)

// delivery hands messages to the application once each, in seq order per
// room. Deliveries on chat.user.<uid>.msg are core NATS: while the client is
// disconnected they are lost, and a retried send or an overlapping reconnect
// can bring one twice. So delivery remembers the last seq seen per room and
// drops anything not newer, and after a reconnect it holds live messages back
// until the gap has been fetched from history, so the missed messages come
// out first and in order.
type delivery struct {
	mu        sync.Mutex
	onMessage func(mulchat.Message)
	// last is the newest seq handed out per tracked room; since is when a
	// room was tracked with no seq known, so that a gap fill recovers only
	// what was sent after that and not the room's older history.
	last  map[int64]uint64
	since map[int64]time.Time
	// filled is the connection's reconnect count up to which gaps are
	// filled; dirty marks a loss not tied to a reconnect (slow consumer).
	filled  uint64
	dirty   bool
	filling bool
	held    []mulchat.Message
}

func (d *delivery) init(onMessage func(mulchat.Message)) {
	d.onMessage = onMessage
	d.last = make(map[int64]uint64)
	d.since = make(map[int64]time.Time)
}

// offer hands m out, or holds it back while a gap fill is due or running.
// It reports whether a gap fill must be started.
func (d *delivery) offer(m mulchat.Message, reconnects uint64) (startFill bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if reconnects != d.filled || d.dirty || d.filling {
		d.held = append(d.held, m)
		return !d.filling
	}
	d.deliverLocked(m)
	return false
}

// deliverLocked hands m out unless it is not newer than the room's last seq.
func (d *delivery) deliverLocked(m mulchat.Message) bool {
	if m.Seq <= d.last[m.RoomID] {
		return false
	}
	d.last[m.RoomID] = m.Seq
	delete(d.since, m.RoomID)
	if d.onMessage != nil {
		d.onMessage(m)
	}
	return true
}

// track starts following a room from seq (keeping a newer known seq).
func (d *delivery) track(roomID int64, seq uint64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	cur, ok := d.last[roomID]
	if !ok || seq > cur {
		d.last[roomID] = seq
	}
	if !ok && seq == 0 {
		d.since[roomID] = time.Now()
	}
}

func (d *delivery) untrack(roomID int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.last, roomID)
	delete(d.since, roomID)
}

func (d *delivery) invalidate() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.dirty = true
}

// beginFill marks a fill as running and returns the rooms to fill with their
// last seq; ok is false if a fill is already running.
func (d *delivery) beginFill() (rooms map[int64]uint64, ok bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.filling {
		return nil, false
	}
	d.filling = true
	d.dirty = false
	return maps.Clone(d.last), true
}

// finishFill hands out the recovered messages and then the held ones, and
// ends the fill if no reconnect happened since it began (reconnects is the
// count now; target the count the fill started at). Otherwise the caller
// fills again, still holding.
func (d *delivery) finishFill(recovered []mulchat.Message, target, reconnects uint64) (n int, done bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	slices.SortStableFunc(recovered, func(a, b mulchat.Message) int {
		if a.RoomID != b.RoomID {
			return compare(a.RoomID, b.RoomID)
		}
		return compare(a.Seq, b.Seq)
	})
	for _, m := range recovered {
		last, tracked := d.last[m.RoomID]
		if !tracked {
			continue
		}
		// Clocks differ; a minute of slack errs towards showing a message.
		if since, ok := d.since[m.RoomID]; ok && last == 0 && m.SentAt.Before(since.Add(-time.Minute)) {
			continue
		}
		if d.deliverLocked(m) {
			n++
		}
	}
	if reconnects != target || d.dirty {
		d.filling = false
		return n, false
	}
	held := d.held
	d.held = nil
	for _, m := range held {
		d.deliverLocked(m)
	}
	d.filled = target
	d.filling = false
	return n, true
}

func compare[T int64 | uint64](a, b T) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Track makes the client follow a room from seq on: deliveries of seq or
// older are dropped, and gap fills after a reconnect fetch what came after
// it. Rooms are tracked automatically when a message arrives, when they are
// joined or created, and by OpenRoom.
func (c *Client) Track(roomID int64, seq uint64) { c.dl.track(roomID, seq) }

// Untrack stops following a room (after leaving it).
func (c *Client) Untrack(roomID int64) { c.dl.untrack(roomID) }

// LastSeq returns the newest seq delivered (or tracked) for a room.
func (c *Client) LastSeq(roomID int64) uint64 {
	c.dl.mu.Lock()
	defer c.dl.mu.Unlock()
	return c.dl.last[roomID]
}

// OpenRoom returns the newest n messages of a room (oldest first) and
// follows the room from the newest of them, so that live deliveries
// continue exactly where the history ends.
func (c *Client) OpenRoom(ctx context.Context, roomID int64, n int) ([]mulchat.Message, error) {
	msgs, err := c.History(ctx, roomID, 0, n)
	if err != nil {
		return nil, err
	}
	var last uint64
	if len(msgs) > 0 {
		last = msgs[len(msgs)-1].Seq
	}
	c.Track(roomID, last)
	return msgs, nil
}

// Gap fill limits: at most gapPages pages of gapPageSize per room; a longer
// absence loses the oldest missed messages (they stay in history).
const (
	gapPageSize = 100
	gapPages    = 10
	gapAttempts = 3
)

// startGapFill starts fetching the messages missed during a disconnect,
// unless a fill is already running.
func (c *Client) startGapFill(nc *nats.Conn) {
	if nc == nil {
		return
	}
	rooms, ok := c.dl.beginFill()
	if !ok {
		return
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.wg.Add(1)
	c.mu.Unlock()
	go func() {
		defer c.wg.Done()
		c.fillGaps(nc, rooms)
	}()
}

func (c *Client) fillGaps(nc *nats.Conn, rooms map[int64]uint64) {
	total := 0
	for {
		target := nc.Stats().Reconnects
		ctx, cancel := context.WithTimeout(c.bg, time.Minute)
		var recovered []mulchat.Message
		for roomID, last := range rooms {
			msgs, err := c.newerThan(ctx, roomID, last)
			switch code := mulchat.ErrorCode(err); {
			case err == nil:
			case code == mulchat.EFORBIDDEN || code == mulchat.ENOTFOUND:
				c.Untrack(roomID) // no longer a member
			default:
				c.log.Warn("could not fetch missed messages", "room_id", roomID, "error", mulchat.ErrorMessageForCLI(err))
			}
			recovered = append(recovered, msgs...)
		}
		cancel()
		n, done := c.dl.finishFill(recovered, target, nc.Stats().Reconnects)
		total += n
		if done {
			c.log.Debug("gap filled", "recovered", total)
			c.status(Status{State: StateGapFilled, Missed: total})
			return
		}
		if nc.IsClosed() || c.bg.Err() != nil {
			return
		}
		var ok bool
		if rooms, ok = c.dl.beginFill(); !ok {
			return
		}
	}
}

// newerThan fetches a room's messages with seq > last from history, oldest
// first, paging back from the newest.
func (c *Client) newerThan(ctx context.Context, roomID int64, last uint64) ([]mulchat.Message, error) {
	var pages [][]mulchat.Message
	var before uint64
	for range gapPages {
		var msgs []mulchat.Message
		var err error
		for attempt := range gapAttempts {
			msgs, err = c.History(ctx, roomID, before, gapPageSize)
			if err == nil || mulchat.ErrorCode(err) != mulchat.EUNAVAILABLE || ctx.Err() != nil {
				break
			}
			time.Sleep(time.Duration(attempt+1) * 200 * time.Millisecond)
		}
		if err != nil {
			return flatten(pages, last), err
		}
		if len(msgs) == 0 {
			break
		}
		pages = append(pages, msgs)
		if msgs[0].Seq <= last+1 || len(msgs) < gapPageSize || last == 0 {
			break
		}
		before = msgs[0].Seq
	}
	return flatten(pages, last), nil
}

// flatten joins pages fetched newest first into one oldest-first slice of the
// messages newer than last.
func flatten(pages [][]mulchat.Message, last uint64) []mulchat.Message {
	var out []mulchat.Message
	for i := len(pages) - 1; i >= 0; i-- {
		for _, m := range pages[i] {
			if m.Seq > last {
				out = append(out, m)
			}
		}
	}
	return out
}
