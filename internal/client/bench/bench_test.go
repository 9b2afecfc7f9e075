package bench_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/mulchat/mulchat"
	"github.com/mulchat/mulchat/internal/client/bench"
	"github.com/mulchat/mulchat/internal/client/clienttest"
)

func TestBenchReportsSaneFigures(t *testing.T) {
	srv := clienttest.Start(t, clienttest.Options{})
	var progress bytes.Buffer
	rep, err := bench.Run(context.Background(), bench.Config{
		ServerURL: srv.URL(),
		Rooms:     2,
		Members:   3,
		Senders:   2,
		Messages:  5,
		Rate:      200,
		Hold:      100 * time.Millisecond,
		Progress:  &progress,
	})
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, progress.String())
	}
	if rep.Users != 6 || rep.Register.Count != 6 || rep.Login.Count != 6 || rep.Credential.Count != 6 || rep.Connect.Count != 6 {
		t.Errorf("setup counts: %+v", rep)
	}
	if rep.Held != 6 {
		t.Errorf("held %d of 6 connections", rep.Held)
	}
	if rep.Connect.PerSec <= 0 || rep.Connect.Errors != 0 {
		t.Errorf("connect phase %+v", rep.Connect)
	}
	// 2 rooms × 2 senders × 5 messages, each delivered to 3 members.
	if rep.Sent != 20 || rep.Acked != 20 || rep.Failed != 0 {
		t.Errorf("sent %d acked %d failed %d %v, want 20/20/0", rep.Sent, rep.Acked, rep.Failed, rep.FailedBy)
	}
	if rep.Expected != 60 || rep.Delivered != 60 || !rep.Complete {
		t.Errorf("deliveries %d of %d (complete %v), want 60 of 60", rep.Delivered, rep.Expected, rep.Complete)
	}
	if rep.MessagesPerSec <= 0 || rep.DeliveriesPerSec <= 0 {
		t.Errorf("rates %v msgs/s, %v deliveries/s", rep.MessagesPerSec, rep.DeliveriesPerSec)
	}
	for name, l := range map[string]bench.Latency{"ack": rep.Ack, "delivery": rep.Delivery} {
		if l.P50 <= 0 || l.P50 > l.P90 || l.P90 > l.P99 || l.P99 > l.Max {
			t.Errorf("%s latency not ordered: %+v", name, l)
		}
	}
	if rep.Ack.Count != 20 || rep.Delivery.Count != 60 {
		t.Errorf("latency counts ack %d delivery %d", rep.Ack.Count, rep.Delivery.Count)
	}

	var table bytes.Buffer
	rep.WriteTable(&table)
	for _, want := range []string{"send → delivery", "NATS connect", "60 of 60 expected (complete)"} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, table.String())
		}
	}
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var back map[string]any
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"messages_per_sec", "send_to_delivery", "connect", "deliveries"} {
		if _, ok := back[k]; !ok {
			t.Errorf("JSON report lacks %q", k)
		}
	}
}

func TestBenchRejectsBadConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  bench.Config
	}{
		{"no server", bench.Config{}},
		{"negative rate", bench.Config{ServerURL: "http://127.0.0.1:1", Rate: -1}},
		{"bad prefix", bench.Config{ServerURL: "http://127.0.0.1:1", Prefix: "Bad Prefix"}},
		{"too many users", bench.Config{ServerURL: "http://127.0.0.1:1", Rooms: 1000, Members: 1000}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := bench.Run(context.Background(), tt.cfg)
			if mulchat.ErrorCode(err) != mulchat.EINVALID {
				t.Fatalf("Run: %v, want invalid", err)
			}
		})
	}
}

// A second run with the same prefix and password reuses the users and rooms
// of the first (kept with KeepRooms).
func TestBenchReusesUsersOfEarlierRun(t *testing.T) {
	srv := clienttest.Start(t, clienttest.Options{})
	cfg := bench.Config{ServerURL: srv.URL(), Rooms: 1, Members: 2, Messages: 3, Prefix: "again",
		Password: "same password for both runs", KeepRooms: true}
	for run := range 2 {
		rep, err := bench.Run(context.Background(), cfg)
		if err != nil {
			t.Fatalf("run %d: %v", run, err)
		}
		if rep.Acked != 3 || rep.Delivered != 6 {
			t.Errorf("run %d: acked %d delivered %d", run, rep.Acked, rep.Delivered)
		}
	}
}

// BenchmarkEndToEnd runs `mulchat bench` scenarios of issue 3 against an
// in-process server (SQLite, embedded NATS, default router limits: 20 sends
// per second per user, so the rates stay below senders × 20). Each
// iteration is a whole bench run; the figures are the custom metrics, not
// ns/op. Run with -benchtime 1x:
//
//	go test -run '^$' -bench EndToEnd -benchtime 1x ./internal/client/bench/
func BenchmarkEndToEnd(b *testing.B) {
	scenarios := []struct {
		name string
		cfg  bench.Config
	}{
		{"rooms=1/members=2", bench.Config{Rooms: 1, Members: 2, Senders: 2, Messages: 150, Rate: 30}},
		{"rooms=1/members=100", bench.Config{Rooms: 1, Members: 100, Senders: 10, Messages: 30, Rate: 150}},
		{"rooms=100/members=10", bench.Config{Rooms: 100, Members: 10, Senders: 2, Messages: 20, Rate: 1000}},
	}
	for _, sc := range scenarios {
		b.Run(sc.name, func(b *testing.B) {
			srv := clienttest.Start(b, clienttest.Options{})
			for range b.N {
				cfg := sc.cfg
				cfg.ServerURL = srv.URL()
				rep, err := bench.Run(context.Background(), cfg)
				if err != nil {
					b.Fatal(err)
				}
				if !rep.Complete || rep.Failed > 0 {
					b.Fatalf("incomplete run: %d of %d deliveries, failed %v", rep.Delivered, rep.Expected, rep.FailedBy)
				}
				b.ReportMetric(rep.MessagesPerSec, "msgs/s")
				b.ReportMetric(rep.DeliveriesPerSec, "deliveries/s")
				b.ReportMetric(rep.Delivery.P50, "p50-ms")
				b.ReportMetric(rep.Delivery.P99, "p99-ms")
				b.ReportMetric(rep.Connect.PerSec, "connects/s")
			}
		})
	}
}
