package client

import (
	"slices"
	"testing"
	"time"

	"github.com/mulchat/mulchat"
)

func msg(room int64, seq uint64) mulchat.Message {
	return mulchat.Message{RoomID: room, Seq: seq, SentAt: time.Now()}
}

type got []string

func (g *got) record(m mulchat.Message) {
	*g = append(*g, string(rune('A'+m.RoomID-1))+itoa(m.Seq))
}

func itoa(n uint64) string { return string(rune('0'+n/10)) + string(rune('0'+n%10)) }

// After a reconnect, live messages are held until the gap is filled; the
// recovered ones come out first, in order, and nothing twice.
func TestDeliveryHoldsLiveMessagesDuringGapFill(t *testing.T) {
	var out got
	var d delivery
	d.init(out.record)
	d.track(1, 0)
	d.track(2, 0)

	d.offer(msg(1, 1), 0)
	d.offer(msg(2, 2), 0)
	// Reconnect 1: live messages 1/6 and 2/7 arrive before the fill.
	if !d.offer(msg(1, 6), 1) {
		t.Fatal("a message after a reconnect did not ask for a gap fill")
	}
	d.offer(msg(2, 7), 1) // may ask again; beginFill starts one fill only
	rooms, ok := d.beginFill()
	if !ok || rooms[1] != 1 || rooms[2] != 2 {
		t.Fatalf("beginFill = %v, %v", rooms, ok)
	}
	if _, again := d.beginFill(); again {
		t.Fatal("a second fill began while one runs")
	}
	if d.offer(msg(1, 8), 1) { // arrives during the fill: held
		t.Fatal("a message during a fill asked for another")
	}
	// History answers with what was missed, including 1/6 (also live).
	n, done := d.finishFill([]mulchat.Message{msg(2, 5), msg(1, 3), msg(1, 4), msg(1, 6)}, 1, 1)
	if !done || n != 4 {
		t.Fatalf("finishFill = %d, %v", n, done)
	}
	want := got{"A01", "B02", "A03", "A04", "A06", "B05", "B07", "A08"}
	if !slices.Equal(out, want) {
		t.Errorf("delivered %v, want %v", out, want)
	}
	// Back to normal: live messages pass, duplicates and old ones do not.
	d.offer(msg(1, 9), 1)
	d.offer(msg(1, 9), 1)
	d.offer(msg(1, 2), 1)
	if want = append(want, "A09"); !slices.Equal(out, want) {
		t.Errorf("delivered %v, want %v", out, want)
	}
}

// A reconnect during a fill makes the fill run again, still holding.
func TestDeliveryRefillsAfterAnotherReconnect(t *testing.T) {
	var out got
	var d delivery
	d.init(out.record)
	d.track(1, 1)
	d.offer(msg(1, 5), 1)
	if _, ok := d.beginFill(); !ok {
		t.Fatal("no fill")
	}
	if _, done := d.finishFill([]mulchat.Message{msg(1, 2)}, 1, 2); done {
		t.Fatal("fill ended although another reconnect happened")
	}
	d.offer(msg(1, 7), 2)
	if _, ok := d.beginFill(); !ok {
		t.Fatal("no second fill")
	}
	if _, done := d.finishFill([]mulchat.Message{msg(1, 3), msg(1, 5), msg(1, 6)}, 2, 2); !done {
		t.Fatal("second fill not done")
	}
	if want := (got{"A02", "A03", "A05", "A06", "A07"}); !slices.Equal(out, want) {
		t.Errorf("delivered %v, want %v", out, want)
	}
}

// A room followed with no seq known recovers only what was sent after it was
// followed, not its older history.
func TestDeliveryFillOfNewlyFollowedRoom(t *testing.T) {
	var out got
	var d delivery
	d.init(out.record)
	d.track(1, 0)
	old := msg(1, 1)
	old.SentAt = time.Now().Add(-time.Hour)
	d.invalidate()
	d.beginFill()
	d.finishFill([]mulchat.Message{old, msg(1, 2)}, 0, 0)
	if want := (got{"A02"}); !slices.Equal(out, want) {
		t.Errorf("delivered %v, want %v", out, want)
	}
}

func TestFlattenPages(t *testing.T) {
	pages := [][]mulchat.Message{{msg(1, 7), msg(1, 8)}, {msg(1, 4), msg(1, 5), msg(1, 6)}}
	var seqs []uint64
	for _, m := range flatten(pages, 4) {
		seqs = append(seqs, m.Seq)
	}
	if !slices.Equal(seqs, []uint64{5, 6, 7, 8}) {
		t.Errorf("flatten = %v", seqs)
	}
}
