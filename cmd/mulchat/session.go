package main

import (
	"context"
	"fmt"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/mulchat/mulchat"
	"github.com/mulchat/mulchat/internal/app"
	"github.com/mulchat/mulchat/internal/authority"
	"github.com/mulchat/mulchat/internal/sqlstore"
	"github.com/mulchat/mulchat/internal/tracker"
)

func newSessionCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "session", Short: "list and kick NATS sessions (nats_auth_sessions)"}

	var all bool
	list := &cobra.Command{
		Use:   "list [USERNAME]",
		Short: "list active sessions (of one user, with --all also closed ones)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withStore(cmd, g, func(ctx context.Context, db *sqlstore.DB) error {
				var sessions []*mulchat.AuthSession
				var err error
				if len(args) == 1 {
					u, uerr := userByName(cmd, db, args[0])
					if uerr != nil {
						return uerr
					}
					sessions, err = db.ListUserAuthSessions(ctx, u.ID, !all)
				} else {
					if all {
						return mulchat.Errorf(mulchat.EINVALID, "--all needs a USERNAME")
					}
					sessions, err = db.ListActiveAuthSessions(ctx)
				}
				if err != nil {
					return err
				}
				users, err := db.ListUsers(ctx)
				if err != nil {
					return err
				}
				names := map[int64]string{}
				for _, u := range users {
					names[u.ID] = u.Username
				}
				return printSessions(cmd, sessions, names)
			})
		},
	}
	list.Flags().BoolVar(&all, "all", false, "include closed sessions (needs USERNAME)")

	var kickUser string
	kick := &cobra.Command{
		Use:   "kick [SESSION_ID] [--user USERNAME]",
		Short: "disconnect a session, or every connection of a user's key",
		Long: `Disconnect one session by its id (see "session list"), or with --user every
live connection of the user's current credential key, with $SYS.REQ.SERVER.<id>.KICK.
NATS is reached at --nats-url, or at the embedded server of a "mulchat serve"
running on the same data directory. A kicked client may reconnect while its
credential is valid; revoke the credential ("creds revoke") to keep it out.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if (len(args) == 1) == (kickUser != "") {
				return mulchat.Errorf(mulchat.EINVALID, "give either a SESSION_ID or --user USERNAME")
			}
			var sessionID int64
			if len(args) == 1 {
				id, err := strconv.ParseInt(args[0], 10, 64)
				if err != nil || id <= 0 {
					return mulchat.Errorf(mulchat.EINVALID, "SESSION_ID must be a positive number")
				}
				sessionID = id
			}
			return withAuthority(cmd, g, func(ctx context.Context, db *sqlstore.DB, a *authority.Authority, u *mulchat.User) error {
				nc, err := connectSystem(cmd, g, a)
				if err != nil {
					return err
				}
				defer nc.Close()
				tr, err := tracker.New(tracker.Config{Store: db, SysConn: nc, ChatAccount: a.ChatAccountPublicKey(), Logger: cliLogger(cmd, g)})
				if err != nil {
					return err
				}
				if u != nil {
					if u.NATS.PublicKey == "" {
						return mulchat.Errorf(mulchat.ENOTFOUND, "%s has no NATS credential", u.Username)
					}
					if err := tr.KickUser(ctx, u.ID, u.NATS.PublicKey); err != nil {
						return err
					}
					fmt.Fprintf(cmd.OutOrStdout(), "kicked every connection of %s\n", u.Username)
					return nil
				}
				s, err := db.AuthSessionByID(ctx, sessionID)
				if err != nil {
					return err
				}
				if err := tr.KickSession(ctx, s.UserID, s.ID); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "kicked session %d (%s)\n", s.ID, s.ClientID)
				return nil
			}, kickUser)
		},
	}
	kick.Flags().StringVar(&kickUser, "user", "", "kick every live connection of this user's key")

	cmd.AddCommand(list, kick)
	return cmd
}

func printSessions(cmd *cobra.Command, sessions []*mulchat.AuthSession, names map[int64]string) error {
	tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tUSER\tCLIENT\tIP\tUSER AGENT\tCREATED\tLAST ACTIVITY\tEXPIRES\tSTATE")
	for _, s := range sessions {
		expires := "-"
		if s.ExpiresAt != nil {
			expires = s.ExpiresAt.UTC().Format(time.RFC3339)
		}
		state := "active"
		if !s.Active {
			state = "closed"
			if s.CloseReason != "" {
				state += ": " + s.CloseReason
			}
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.ID, printable(names[s.UserID]), printable(s.ClientID),
			printable(s.IPAddress), printable(s.UserAgent), s.CreatedAt.UTC().Format(time.RFC3339),
			s.LastActivity.UTC().Format(time.RFC3339), expires, printable(state))
	}
	return tw.Flush()
}

// connectSystem connects to the running NATS as a system-account service
// user: --nats-url, or the embedded server of a serve on this data directory.
func connectSystem(cmd *cobra.Command, g *globals, a *authority.Authority) (*nats.Conn, error) {
	urls, err := runningNATSURLs(g)
	if err != nil {
		return nil, mulchat.Errorf(mulchat.EUNAVAILABLE, "no running NATS found: give --nats-url or run \"mulchat serve\" on this data directory")
	}
	return app.ConnectService(cmd.Context(), a, urls, "admin", true, cliLogger(cmd, g))
}
