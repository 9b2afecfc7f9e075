package main

import (
	"encoding/json"
	"net"
	"net/url"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/mulchat/mulchat"
	"github.com/mulchat/mulchat/internal/client/bench"
)

// benchPasswordEnv, when set, is the password of the bench users, so that
// runs with the same --prefix reuse them; otherwise each run picks a random
// one.
const benchPasswordEnv = "MULCHAT_BENCH_PASSWORD"

func newBenchCommand(g *globals) *cobra.Command {
	cfg := bench.Config{}
	var (
		report      string
		allowRemote bool
		quiet       bool
	)
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "drive load against a running server",
		Long: `Drive chat load against a running mulchat server, the way real clients do:
register rooms×members throw-away users (names start with --prefix), put them
in private rooms, give each its own nkey and JWT, connect them all to NATS,
let --senders members of every room send --messages messages each at a total
--rate, and measure acked messages per second, send→ack and send→delivery
latency (p50/p90/p99/max) and NATS connects per second.

The run is bounded (users, messages, --max-duration, --drain) and stops by
itself. The bench talks only to --server and the NATS URLs that server hands
out; it refuses a server that is not on a loopback address unless
--allow-remote is given, since it creates users there. Start the server with
the login limiter relaxed for large runs (logins are limited per address).`,
		Example: `  mulchat bench --server http://127.0.0.1:8080 --rooms 1 --members 2 --messages 1000
  mulchat bench --rooms 100 --members 10 --senders 2 --messages 50 --rate 1000 --report bench.json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkBenchServer(cfg.ServerURL, allowRemote); err != nil {
				return err
			}
			if !quiet {
				cfg.Progress = cmd.ErrOrStderr()
			}
			cfg.Logger = chatLogger(cmd.ErrOrStderr(), g.logLevel)
			// A fixed password lets a later run with the same --prefix reuse
			// the users instead of registering them again.
			cfg.Password = os.Getenv(benchPasswordEnv)
			rep, err := bench.Run(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			rep.WriteTable(cmd.OutOrStdout())
			if report != "" {
				b, err := json.MarshalIndent(rep, "", "  ")
				if err != nil {
					return mulchat.WrapError(mulchat.EINTERNAL, err, "encoding the report")
				}
				if err := os.WriteFile(report, append(b, '\n'), 0o644); err != nil {
					return mulchat.WrapError(mulchat.EINVALID, err, "writing the report to "+report)
				}
			}
			if !rep.Complete {
				return mulchat.Errorf(mulchat.EUNAVAILABLE, "not every message was delivered to every member (%d of %d)", rep.Delivered, rep.Expected)
			}
			if cfg.Hold > 0 && rep.Held < rep.Users {
				return mulchat.Errorf(mulchat.EUNAVAILABLE, "only %d of %d connections held for %s", rep.Held, rep.Users, cfg.Hold)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.ServerURL, "server", "http://127.0.0.1:8080", "mulchat server URL")
	f.IntVar(&cfg.Rooms, "rooms", 1, "number of rooms")
	f.IntVar(&cfg.Members, "members", 2, "members per room (each a new user)")
	f.IntVar(&cfg.Senders, "senders", 1, "senders per room (at most --members)")
	f.IntVar(&cfg.Messages, "messages", 100, "messages per sender")
	f.Float64Var(&cfg.Rate, "rate", 0, "target sends per second over all senders (0 = as fast as acks return)")
	f.DurationVar(&cfg.MaxDuration, "max-duration", 2*time.Minute, "longest send phase")
	f.DurationVar(&cfg.Drain, "drain", 10*time.Second, "longest wait for deliveries after the last send")
	f.IntVar(&cfg.Concurrency, "concurrency", 8, "parallel requests while registering, logging in and connecting")
	f.DurationVar(&cfg.SetupTimeout, "setup-timeout", 10*time.Minute, "longest setup (register, log in, connect)")
	f.IntVar(&cfg.Padding, "padding", 0, "extra characters per message")
	f.StringVar(&cfg.Prefix, "prefix", "", "prefix of the bench users' and rooms' names (default bench-<random>)")
	f.StringSliceVar(&cfg.NATSURLs, "connect-url", nil, "NATS URL(s) to use instead of those the server hands out")
	f.BoolVar(&cfg.KeepRooms, "keep-rooms", false, "keep the bench rooms instead of deleting them at the end")
	f.DurationVar(&cfg.Hold, "hold", 0, "keep all connections open this long after the drain and count how many held")
	f.StringVar(&report, "report", "", "write the report as JSON to this file")
	f.BoolVar(&allowRemote, "allow-remote", false, "allow a server that is not on a loopback address")
	f.BoolVar(&quiet, "quiet", false, "print only the final table")
	return cmd
}

// checkBenchServer refuses non-loopback servers unless allowed: the bench
// creates users and load, which should never hit a server by accident.
func checkBenchServer(server string, allowRemote bool) error {
	u, err := url.Parse(server)
	if err != nil || u.Hostname() == "" {
		return mulchat.Errorf(mulchat.EINVALID, "--server %q must look like http://HOST:PORT", server)
	}
	if allowRemote {
		return nil
	}
	host := u.Hostname()
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return mulchat.Errorf(mulchat.EINVALID, "--server %s is not a loopback address; the bench creates users and load there: add --allow-remote if that is intended", host)
}
