package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/mulchat/mulchat"
	"github.com/mulchat/mulchat/internal/app"
	"github.com/mulchat/mulchat/internal/authority"
	"github.com/mulchat/mulchat/internal/sqlstore"
	"github.com/spf13/cobra"
)

func newCredsCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "creds", Short: "issue, revoke and verify NATS credentials"}

	var out string
	var force bool
	var ttl time.Duration
	issue := &cobra.Command{
		Use:   "issue USERNAME -o FILE",
		Short: "issue a server-generated credential and write it as a .creds file (0600)",
		Long: `Issue a new NATS credential for a user, with a key pair generated here, and
write it as a standard .creds file (mode 0600; "-o -" writes to stdout). The
user's previous credential is replaced. An existing file is not overwritten
without --force.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return mulchat.Errorf(mulchat.EINVALID, "-o FILE is required (\"-\" for stdout)")
			}
			return withAuthority(cmd, g, func(ctx context.Context, _ *sqlstore.DB, a *authority.Authority, u *mulchat.User) error {
				// Create the file first: a path that cannot be written must
				// fail before the user's current credential is replaced.
				var sf *secretFile
				if out != "-" {
					var err error
					if sf, err = createSecretFile(out, force); err != nil {
						return err
					}
					defer sf.abort()
				}
				c, err := a.IssueUserCredential(ctx, u.ID, "", ttl)
				if err != nil {
					return err
				}
				if sf == nil {
					_, err = cmd.OutOrStdout().Write(c.Creds)
					return err
				}
				if err := sf.commit(c.Creds); err != nil {
					return err
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "wrote %s for %s (public key %s, expires %s)\n",
					out, u.Username, c.PublicKey, c.ExpiresAt.UTC().Format(time.RFC3339))
				return nil
			}, args[0])
		},
	}
	issue.Flags().StringVarP(&out, "output", "o", "", "file to write (\"-\" = stdout)")
	issue.Flags().BoolVar(&force, "force", false, "overwrite an existing file")
	issue.Flags().DurationVar(&ttl, "ttl", 0, "credential lifetime (default: the server's default, 24h)")

	revoke := &cobra.Command{
		Use:   "revoke USERNAME",
		Short: "revoke a user's NATS credential",
		Long: `Revoke the user's current credential: nats_expired_at is set and the key is
added to the account JWT's revocation list. The updated account JWT is pushed
to the NATS servers named by --nats-url, or to the embedded server of a
"mulchat serve" running on the same data directory; the servers disconnect
the revoked key. If no server is reachable the database is still updated and
the revocation reaches NATS when mulchat next starts.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withAuthority(cmd, g, func(ctx context.Context, _ *sqlstore.DB, a *authority.Authority, u *mulchat.User) error {
				closePush := connectPusher(cmd, g, a)
				defer closePush()
				if err := a.RevokeUserCredential(ctx, u.ID); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "revoked the NATS credential of %s\n", printable(u.Username))
				return nil
			}, args[0])
		},
	}

	verify := &cobra.Command{
		Use:   "verify FILE",
		Short: "check a .creds file: signature chain, expiry, revocation, and whether it is the user's current credential",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			data, err := readLimited(args[0], 64<<10)
			if err != nil {
				return err
			}
			return withAuthority(cmd, g, func(ctx context.Context, _ *sqlstore.DB, a *authority.Authority, _ *mulchat.User) error {
				v, err := a.VerifyCreds(ctx, data)
				if err != nil {
					return err
				}
				w := cmd.OutOrStdout()
				fmt.Fprintf(w, "user:       %s (id %d)\n", printable(v.Username), v.UserID)
				fmt.Fprintf(w, "public key: %s\n", v.PublicKey)
				fmt.Fprintf(w, "account:    %s\n", v.Account)
				fmt.Fprintf(w, "expires:    %s\n", v.ExpiresAt.UTC().Format(time.RFC3339))
				fmt.Fprintf(w, "expired: %t  revoked: %t  current: %t\n", v.Expired, v.Revoked, v.Current)
				if !v.Valid() {
					problems := append([]string(nil), v.Problems...)
					if v.Revoked {
						problems = append(problems, "it has been revoked")
					}
					if v.Expired {
						problems = append(problems, "it has expired")
					}
					if !v.Current {
						problems = append(problems, "it is not the user's current credential")
					}
					return mulchat.Errorf(mulchat.EINVALID, "credential is not valid: %s", strings.Join(problems, "; "))
				}
				fmt.Fprintln(w, "valid")
				return nil
			}, "")
		},
	}

	cmd.AddCommand(issue, revoke, verify)
	return cmd
}

// withAuthority opens the store and the authority (and looks up username
// unless it is "") for a command that needs the NATS keys, and closes the
// store after fn.
func withAuthority(cmd *cobra.Command, g *globals, fn func(ctx context.Context, db *sqlstore.DB, a *authority.Authority, u *mulchat.User) error, username string) error {
	return withStore(cmd, g, func(ctx context.Context, db *sqlstore.DB) error {
		var u *mulchat.User
		if username != "" {
			var err error
			if u, err = userByName(cmd, db, username); err != nil {
				return err
			}
		}
		a, err := app.OpenAuthority(ctx, appConfig(g, cliLogger(cmd, g)), db, nil)
		if err != nil {
			return err
		}
		return fn(ctx, db, a, u)
	})
}

// connectPusher connects to a running NATS (--nats-url, or the embedded
// server of a serve on this data directory) as mulchat's system service user
// and sets the authority's pusher. It returns the function that closes the
// connection. Failing to connect is a warning, not an error.
func connectPusher(cmd *cobra.Command, g *globals, a *authority.Authority) func() {
	urls, err := runningNATSURLs(g)
	if err != nil {
		// No server named or running here: nothing to push to, and the
		// revocation reaches NATS when mulchat next starts.
		return func() {}
	}
	logger := cliLogger(cmd, g)
	nc, err := app.ConnectService(cmd.Context(), a, urls, "admin", true, logger)
	if err != nil {
		logger.Warn("NATS is not reachable; the revocation reaches it when mulchat next starts", slog.Any("err", err))
		return func() {}
	}
	a.SetPusher(authority.NewClaimsPusher(nc))
	return func() { _ = nc.Drain() }
}

// secretFile is a 0600 file being written: created before the secret exists
// (so a path that cannot be written fails before anything changes in the
// database), filled and committed after.
type secretFile struct {
	f    *os.File
	path string // final path
	temp bool   // f is a temporary file renamed over path on commit
	done bool
}

// createSecretFile opens path for writing with mode 0600. Without overwrite
// it fails if path exists (O_EXCL, so no race); with overwrite it creates a
// temporary file in the same directory that commit renames over path, so the
// file is never briefly readable by others or half-written.
func createSecretFile(path string, overwrite bool) (*secretFile, error) {
	if !overwrite {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			if errors.Is(err, fs.ErrExist) {
				return nil, mulchat.Errorf(mulchat.ECONFLICT, "%s exists; use --force to overwrite it", path)
			}
			return nil, mulchat.WrapError(mulchat.EINVALID, err, fmt.Sprintf("cannot create %s", path))
		}
		return &secretFile{f: f, path: path}, nil
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".mulchat-*")
	if err != nil {
		return nil, mulchat.WrapError(mulchat.EINVALID, err, fmt.Sprintf("cannot write in the directory of %s", path))
	}
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, mulchat.WrapError(mulchat.EINTERNAL, err, "chmod")
	}
	return &secretFile{f: f, path: path, temp: true}, nil
}

// commit writes data and puts the file in place.
func (sf *secretFile) commit(data []byte) error {
	sf.done = true
	_, err := sf.f.Write(data)
	if cerr := sf.f.Close(); err == nil {
		err = cerr
	}
	if err == nil && sf.temp {
		err = os.Rename(sf.f.Name(), sf.path)
	}
	if err != nil {
		os.Remove(sf.f.Name())
		return mulchat.WrapError(mulchat.EINTERNAL, err, fmt.Sprintf("writing %s", sf.path))
	}
	return nil
}

// abort removes the file unless it was committed.
func (sf *secretFile) abort() {
	if sf.done {
		return
	}
	sf.done = true
	sf.f.Close()
	os.Remove(sf.f.Name())
}

// readLimited reads at most max bytes of a file; larger files are refused.
func readLimited(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, mulchat.WrapError(mulchat.EINVALID, err, fmt.Sprintf("cannot open %s", path))
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, mulchat.WrapError(mulchat.EINVALID, err, fmt.Sprintf("cannot read %s", path))
	}
	if int64(len(data)) > max {
		return nil, mulchat.Errorf(mulchat.EINVALID, "%s is larger than %d bytes; not a .creds file", path, max)
	}
	return data, nil
}
