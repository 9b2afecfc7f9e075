package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mulchat/mulchat"
	"github.com/mulchat/mulchat/internal/app"
	"github.com/mulchat/mulchat/internal/authority"
	"github.com/mulchat/mulchat/internal/password"
	"github.com/mulchat/mulchat/internal/router"
	"github.com/mulchat/mulchat/internal/sqlstore"
	"github.com/mulchat/mulchat/internal/tracker"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// passwordEnv is read by `user create` and `user passwd` when set, so scripts
// need neither a terminal nor argv (which other local users can read).
const passwordEnv = "MULCHAT_PASSWORD"

func newUserCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "user", Short: "administer users"}
	var email string
	var fromStdin bool
	create := &cobra.Command{
		Use:   "create USERNAME",
		Short: "create a user (password from MULCHAT_PASSWORD, --password-stdin or a terminal prompt)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			username := args[0]
			if err := mulchat.ValidateUsername(username); err != nil {
				return err
			}
			if err := mulchat.ValidateEmail(email); err != nil {
				return err
			}
			hash, err := readNewPasswordHash(cmd, fromStdin)
			if err != nil {
				return err
			}
			db, err := openAdminStore(cmd.Context(), g)
			if err != nil {
				return err
			}
			defer db.Close()
			u := &mulchat.User{Username: username, Email: email, HashedPassword: hash, IsActive: true}
			if err := db.CreateUser(cmd.Context(), u); err != nil {
				if mulchat.ErrorCode(err) == mulchat.ECONFLICT {
					return mulchat.Errorf(mulchat.ECONFLICT, "username %q or its email is already taken", username)
				}
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "created user %s (id %d)\n", u.Username, u.ID)
			return nil
		},
	}
	create.Flags().StringVar(&email, "email", "", "email address")
	create.Flags().BoolVar(&fromStdin, "password-stdin", false, "read the password from the first line of standard input")

	list := &cobra.Command{
		Use:   "list",
		Short: "list users with their credential status",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			db, err := openAdminStore(cmd.Context(), g)
			if err != nil {
				return err
			}
			defer db.Close()
			users, err := db.ListUsers(cmd.Context())
			if err != nil {
				return err
			}
			now := time.Now()
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tUSERNAME\tEMAIL\tACTIVE\tCREDENTIAL\tEXPIRES\tCREATED")
			for _, u := range users {
				exp := "-"
				if u.NATS.ExpiresAt != nil {
					exp = u.NATS.ExpiresAt.UTC().Format(time.RFC3339)
				}
				fmt.Fprintf(tw, "%d\t%s\t%s\t%t\t%s\t%s\t%s\n", u.ID, printable(u.Username), printable(orDash(u.Email)),
					u.IsActive, u.NATS.Status(now), exp, u.CreatedAt.UTC().Format(time.RFC3339))
			}
			return tw.Flush()
		},
	}

	setActive := func(active bool) *cobra.Command {
		use, short := "enable USERNAME", "let a disabled user log in again"
		if !active {
			use, short = "disable USERNAME", "stop a user from logging in and revoke their NATS credential"
		}
		return &cobra.Command{
			Use:   use,
			Short: short,
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				return withUser(cmd, g, args[0], func(ctx context.Context, db *sqlstore.DB, u *mulchat.User) error {
					if err := db.UpdateUserActive(ctx, u.ID, active); err != nil {
						return err
					}
					// The routers of running servers cache whether a user is
					// active: tell them, so a disabled user's sends are refused
					// (and an enabled one's accepted) at once.
					notifyRunning(cmd, g, db, func(ctx context.Context, n *router.Notifier) error {
						return n.UserChanged(ctx, u.ID)
					})
					verb := "enabled"
					if !active {
						verb = "disabled"
						// A disabled user keeps no working NATS credential.
						if u.NATS.Status(time.Now()) == mulchat.CredentialActive {
							logger := cliLogger(cmd, g)
							a, err := app.OpenAuthority(ctx, appConfig(g, logger), db, nil)
							if err != nil {
								return err
							}
							closeRevoker := connectRevoker(cmd, g, a, db)
							defer closeRevoker()
							if err := a.RevokeUserCredential(ctx, u.ID); err != nil {
								return err
							}
							verb += " and its NATS credential revoked"
						}
					}
					fmt.Fprintf(cmd.OutOrStdout(), "user %s %s\n", printable(u.Username), verb)
					return nil
				})
			},
		}
	}

	passwd := &cobra.Command{
		Use:   "passwd USERNAME",
		Short: "set a user's password (from MULCHAT_PASSWORD, --password-stdin or a terminal prompt)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withUser(cmd, g, args[0], func(ctx context.Context, db *sqlstore.DB, u *mulchat.User) error {
				hash, err := readNewPasswordHash(cmd, fromStdin)
				if err != nil {
					return err
				}
				if err := db.UpdateUserPassword(ctx, u.ID, hash); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "password of %s changed\n", printable(u.Username))
				return nil
			})
		},
	}
	passwd.Flags().BoolVar(&fromStdin, "password-stdin", false, "read the password from the first line of standard input")

	cmd.AddCommand(create, list, setActive(false), setActive(true), passwd)
	return cmd
}

// connectRevoker connects to the running NATS as a system-account service
// user and gives the authority what a serving mulchat gives it: the pusher
// (the servers get the account JWT with the revocation and close the key's
// connections) and the tracker's KickUser as Kicker (every live connection of
// the key is kicked and its session row closed). It returns the function that
// closes the connection. No reachable server is a warning: the revocation is
// stored and reaches NATS when mulchat next starts.
func connectRevoker(cmd *cobra.Command, g *globals, a *authority.Authority, db *sqlstore.DB) func() {
	logger := cliLogger(cmd, g)
	nc, err := connectSystem(cmd, g, a)
	if err != nil {
		logger.Warn("NATS is not reachable; the revocation reaches it when mulchat next starts", slog.Any("err", err))
		return func() {}
	}
	a.SetPusher(authority.NewClaimsPusher(nc))
	tr, err := tracker.New(tracker.Config{Store: db, SysConn: nc, ChatAccount: a.ChatAccountPublicKey(), Logger: logger})
	if err == nil {
		a.SetKicker(tr.KickUser)
	}
	return func() { _ = nc.Drain() }
}

// withUser runs fn on the user named username, in a store opened for an
// admin command (see withStore).
func withUser(cmd *cobra.Command, g *globals, username string, fn func(ctx context.Context, db *sqlstore.DB, u *mulchat.User) error) error {
	return withStore(cmd, g, func(ctx context.Context, db *sqlstore.DB) error {
		u, err := userByName(cmd, db, username)
		if err != nil {
			return err
		}
		return fn(ctx, db, u)
	})
}

type userFinder interface {
	UserByUsername(ctx context.Context, username string) (*mulchat.User, error)
}

func userByName(cmd *cobra.Command, q userFinder, name string) (*mulchat.User, error) {
	u, err := q.UserByUsername(cmd.Context(), name)
	if err != nil {
		if mulchat.ErrorCode(err) == mulchat.ENOTFOUND {
			return nil, mulchat.Errorf(mulchat.ENOTFOUND, "no user named %q", name)
		}
		return nil, err
	}
	return u, nil
}

// readNewPasswordHash reads a new password from MULCHAT_PASSWORD, the first
// line of stdin (--password-stdin), or a terminal prompt asked twice, and
// returns its hash. Passwords are never taken from argv, which other users of
// the machine can read.
func readNewPasswordHash(cmd *cobra.Command, fromStdin bool) (string, error) {
	var pw string
	switch {
	case os.Getenv(passwordEnv) != "":
		pw = os.Getenv(passwordEnv)
	case fromStdin:
		line, err := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
		if err != nil && err != io.EOF {
			return "", mulchat.Errorf(mulchat.EINVALID, "cannot read the password from stdin")
		}
		pw = strings.TrimRight(line, "\r\n")
	default:
		fd := int(os.Stdin.Fd())
		if !term.IsTerminal(fd) {
			return "", mulchat.Errorf(mulchat.EINVALID, "no password: set %s, use --password-stdin, or run on a terminal", passwordEnv)
		}
		fmt.Fprint(cmd.ErrOrStderr(), "Password: ")
		b1, err := term.ReadPassword(fd)
		fmt.Fprintln(cmd.ErrOrStderr())
		if err != nil {
			return "", mulchat.Errorf(mulchat.EINVALID, "cannot read the password")
		}
		fmt.Fprint(cmd.ErrOrStderr(), "Again: ")
		b2, err := term.ReadPassword(fd)
		fmt.Fprintln(cmd.ErrOrStderr())
		if err != nil {
			return "", mulchat.Errorf(mulchat.EINVALID, "cannot read the password")
		}
		if string(b1) != string(b2) {
			return "", mulchat.Errorf(mulchat.EINVALID, "the passwords do not match")
		}
		pw = string(b1)
	}
	if err := mulchat.ValidatePassword(pw); err != nil {
		return "", err
	}
	return password.Hash(pw)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// printable quotes a value holding control characters, so legacy names cannot
// drive the operator's terminal.
func printable(s string) string {
	for _, r := range s {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return fmt.Sprintf("%q", s)
		}
	}
	return s
}
