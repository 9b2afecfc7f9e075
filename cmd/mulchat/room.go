package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mulchat/mulchat"
	"github.com/mulchat/mulchat/internal/app"
	"github.com/mulchat/mulchat/internal/router"
	"github.com/mulchat/mulchat/internal/sqlstore"
	"github.com/spf13/cobra"
)

func newRoomCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "room", Short: "administer rooms (a ROOM is a name or a numeric id)"}

	var owner, description string
	var private bool
	create := &cobra.Command{
		Use:   "create NAME --owner USERNAME",
		Short: "create a room owned by a user",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := mulchat.ValidateRoomName(args[0]); err != nil {
				return err
			}
			if err := mulchat.ValidateRoomDescription(description); err != nil {
				return err
			}
			if owner == "" {
				return mulchat.Errorf(mulchat.EINVALID, "--owner is required")
			}
			return withStore(cmd, g, func(ctx context.Context, db *sqlstore.DB) error {
				u, err := userByName(cmd, db, owner)
				if err != nil {
					return err
				}
				r := &mulchat.Room{Name: args[0], Description: description, IsPublic: !private}
				if err := db.CreateRoom(ctx, r, u.ID); err != nil {
					if mulchat.ErrorCode(err) == mulchat.ECONFLICT {
						return mulchat.Errorf(mulchat.ECONFLICT, "a room named %q already exists", args[0])
					}
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "created room %s (id %d), owner %s\n", r.Name, r.ID, u.Username)
				return nil
			})
		},
	}
	create.Flags().StringVar(&owner, "owner", "", "username of the owner (required)")
	create.Flags().StringVar(&description, "description", "", "description")
	create.Flags().BoolVar(&private, "private", false, "make the room private (members are added by an owner)")

	list := &cobra.Command{
		Use:   "list",
		Short: "list every room",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return withStore(cmd, g, func(ctx context.Context, db *sqlstore.DB) error {
				rooms, err := db.ListRooms(ctx)
				if err != nil {
					return err
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tNAME\tPUBLIC\tMEMBERS\tCREATED")
				for _, r := range rooms {
					members, err := db.ListRoomMembers(ctx, r.ID)
					if err != nil {
						return err
					}
					fmt.Fprintf(tw, "%d\t%s\t%t\t%d\t%s\n", r.ID, printable(r.Name), r.IsPublic, len(members), r.CreatedAt.UTC().Format(time.RFC3339))
				}
				return tw.Flush()
			})
		},
	}

	del := &cobra.Command{
		Use:   "delete ROOM",
		Short: "delete a room and its memberships",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withStore(cmd, g, func(ctx context.Context, db *sqlstore.DB) error {
				r, err := roomByRef(ctx, db, args[0])
				if err != nil {
					return err
				}
				// The members are read first: after the delete there is no
				// one left to tell.
				members, err := db.ListRoomMembers(ctx, r.ID)
				if err != nil {
					return err
				}
				if err := db.DeleteRoom(ctx, r.ID); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "deleted room %s (id %d)\n", printable(r.Name), r.ID)
				notifyRunning(cmd, g, db, func(ctx context.Context, n *router.Notifier) error {
					for _, m := range members {
						if err := n.MembershipChanged(ctx, r.ID, m.UserID, mulchat.MembershipDeleted); err != nil {
							return err
						}
					}
					return nil
				})
				return nil
			})
		},
	}

	var role string
	add := &cobra.Command{
		Use:   "add-member ROOM USERNAME",
		Short: "add a user to a room",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			switch role {
			case mulchat.RoleOwner, mulchat.RoleMember, mulchat.RoleReader:
			default:
				return mulchat.Errorf(mulchat.EINVALID, "--role must be owner, member or reader")
			}
			return withMember(cmd, g, args, mulchat.MembershipJoined, func(ctx context.Context, db *sqlstore.DB, r *mulchat.Room, u *mulchat.User) error {
				if err := db.AddRoomMember(ctx, r.ID, u.ID, role); err != nil {
					if mulchat.ErrorCode(err) == mulchat.ECONFLICT {
						return mulchat.Errorf(mulchat.ECONFLICT, "%s is already a member of %s", u.Username, r.Name)
					}
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "added %s to %s as %s\n", printable(u.Username), printable(r.Name), role)
				return nil
			})
		},
	}
	add.Flags().StringVar(&role, "role", mulchat.RoleMember, "owner, member or reader")

	remove := &cobra.Command{
		Use:   "remove-member ROOM USERNAME",
		Short: "remove a user from a room",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withMember(cmd, g, args, mulchat.MembershipRemoved, func(ctx context.Context, db *sqlstore.DB, r *mulchat.Room, u *mulchat.User) error {
				if err := db.RemoveRoomMember(ctx, r.ID, u.ID); err != nil {
					if mulchat.ErrorCode(err) == mulchat.ENOTFOUND {
						return mulchat.Errorf(mulchat.ENOTFOUND, "%s is not a member of %s", u.Username, r.Name)
					}
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "removed %s from %s\n", printable(u.Username), printable(r.Name))
				return nil
			})
		},
	}

	cmd.AddCommand(create, list, del, add, remove)
	return cmd
}

// withStore opens the database for an admin command and closes it after fn.
func withStore(cmd *cobra.Command, g *globals, fn func(ctx context.Context, db *sqlstore.DB) error) error {
	db, err := openAdminStore(cmd.Context(), g)
	if err != nil {
		return err
	}
	defer db.Close()
	return fn(cmd.Context(), db)
}

// withMember is add-member and remove-member: it finds the room and the user
// named by args (ROOM USERNAME) in an open store, runs fn to change the
// membership, and then tells the running servers (change is the
// mulchat.Membership* event).
func withMember(cmd *cobra.Command, g *globals, args []string, change string, fn func(ctx context.Context, db *sqlstore.DB, r *mulchat.Room, u *mulchat.User) error) error {
	return withStore(cmd, g, func(ctx context.Context, db *sqlstore.DB) error {
		r, err := roomByRef(ctx, db, args[0])
		if err != nil {
			return err
		}
		u, err := userByName(cmd, db, args[1])
		if err != nil {
			return err
		}
		if err := fn(ctx, db, r, u); err != nil {
			return err
		}
		notifyRunning(cmd, g, db, func(ctx context.Context, n *router.Notifier) error {
			return n.MembershipChanged(ctx, r.ID, u.ID, change)
		})
		return nil
	})
}

// roomByRef finds a room by numeric id or by name.
func roomByRef(ctx context.Context, db *sqlstore.DB, ref string) (*mulchat.Room, error) {
	var r *mulchat.Room
	var err error
	if id, perr := strconv.ParseInt(ref, 10, 64); perr == nil && id > 0 {
		r, err = db.RoomByID(ctx, id)
	} else {
		r, err = db.RoomByName(ctx, ref)
	}
	if mulchat.ErrorCode(err) == mulchat.ENOTFOUND {
		return nil, mulchat.Errorf(mulchat.ENOTFOUND, "no room %q", ref)
	}
	return r, err
}

// cacheTTLNote is how long a running server may act on a change it was not
// told about: the router's membership and user cache lifetime.
const cacheTTLNote = "running servers apply it within their cache lifetime (30 s)"

// runningNATSURLs names the NATS of the running servers: --nats-url, or the
// embedded server of a "mulchat serve" on this data directory (the file it
// writes while it runs). ENOTFOUND when neither is there.
func runningNATSURLs(g *globals) ([]string, error) {
	url := g.natsURL
	if url == "" {
		b, err := os.ReadFile(filepath.Join(g.dataDir, app.RunningNATSURLFile))
		if err != nil {
			return nil, mulchat.Errorf(mulchat.ENOTFOUND, "no running server found (no --nats-url, no %s in the data directory)", app.RunningNATSURLFile)
		}
		url = strings.TrimSpace(string(b))
	}
	return strings.Split(url, ","), nil
}

// notifyRunning tells the running servers about a change already committed
// to the database, with fn on a router.Notifier connected as a chat-account
// service user, so their routers enforce it at once (issue 3: within a
// second) instead of when their caches expire. The change stands either way:
// no reachable server, or a failed notification, is a warning on stderr, not
// an error.
func notifyRunning(cmd *cobra.Command, g *globals, db *sqlstore.DB, fn func(ctx context.Context, n *router.Notifier) error) {
	logger := cliLogger(cmd, g)
	warn := func(err error) {
		logger.Warn("the change is saved, but running servers were not told; "+cacheTTLNote, slog.Any("err", err))
	}
	urls, err := runningNATSURLs(g)
	if err != nil {
		warn(err)
		return
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
	defer cancel()
	a, err := app.OpenAuthority(ctx, appConfig(g, logger), db, nil)
	if err != nil {
		warn(err)
		return
	}
	nc, err := app.ConnectService(ctx, a, urls, "admin", false, logger)
	if err != nil {
		warn(err)
		return
	}
	defer nc.Close()
	n, err := router.NewNotifier(nc)
	if err == nil {
		err = fn(ctx, n)
	}
	if err != nil {
		warn(err)
	}
}
