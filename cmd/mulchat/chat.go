package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/mulchat/mulchat"
	"github.com/mulchat/mulchat/internal/client/chatcli"
)

// chatPasswordEnv holds the chat password for non-interactive use (the same
// variable `mulchat user` reads). It is read directly, not through a flag,
// so that a password never appears in a process listing.
const chatPasswordEnv = "MULCHAT_PASSWORD"

func newChatCommand(g *globals) *cobra.Command {
	o := chatcli.Options{}
	var natsURLs []string
	var plain bool
	cmd := &cobra.Command{
		Use:   "chat",
		Short: "terminal chat client",
		Long: `Chat in a terminal. The client logs in over the HTTP API, generates its own
NATS key pair (the seed never leaves this machine: it is kept in a 0600 key
file under the user's config directory, so the next session renews the same
key instead of replacing it; --new-key keeps a fresh one in memory only),
obtains a JWT for it, connects to NATS, shows the room's recent history and
then live messages. Lines typed are sent to the current room; /help lists
the slash commands.

The password is asked on the terminal without echo, or read from
$MULCHAT_PASSWORD (for scripts; the input may then be a pipe).`,
		Example: `  mulchat chat --server http://127.0.0.1:8080 --user alice --room lobby --create
  MULCHAT_PASSWORD=... mulchat chat --user bob --room lobby < lines.txt`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.Username == "" {
				return mulchat.Errorf(mulchat.EINVALID, "--user is required")
			}
			pw, err := chatPassword(cmd.ErrOrStderr(), o.Username, o.Register)
			if err != nil {
				return err
			}
			o.Password = pw
			o.NATSURLs = natsURLs
			o.In = cmd.InOrStdin()
			o.Out = cmd.OutOrStdout()
			o.Logger = chatLogger(cmd.ErrOrStderr(), g.logLevel)
			if !plain && term.IsTerminal(int(os.Stdin.Fd())) && term.IsTerminal(int(os.Stdout.Fd())) {
				restore, err := lineEditor(&o, g.logLevel)
				if err != nil {
					return err
				}
				defer restore()
			}
			return chatcli.Run(cmd.Context(), o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.ServerURL, "server", "http://127.0.0.1:8080", "mulchat server URL")
	f.StringVar(&o.Username, "user", "", "username to log in as")
	f.StringVar(&o.Room, "room", "", "room to open at start (by name)")
	f.BoolVar(&o.Create, "create", false, "create the --room (public) if no visible room has that name")
	f.BoolVar(&o.Register, "register", false, "create the user first (asks the password twice)")
	f.IntVar(&o.History, "history", 20, "recent messages shown when a room is opened (negative: none)")
	f.StringSliceVar(&natsURLs, "connect-url", nil, "NATS URL(s) to use instead of those the server hands out")
	f.BoolVar(&plain, "plain", false, "read plain lines even on a terminal (no line editor)")
	f.StringVar(&o.KeyFile, "key-file", "", "file keeping this user's NATS key seed between sessions, mode 0600 (default: <user config dir>/mulchat/<host>-<user>.nk)")
	f.BoolVar(&o.NewKey, "new-key", false, "use a new NATS key kept in memory only (no key file)")
	return cmd
}

// lineEditor switches the terminal to raw mode and reads input through
// x/term's line editor, so that incoming messages are printed above the line
// being typed instead of through it (and ↑ recalls earlier lines). Ctrl-C and
// Ctrl-D end the chat. The returned function restores the terminal.
func lineEditor(o *chatcli.Options, logLevel string) (restore func(), err error) {
	fd := int(os.Stdin.Fd())
	state, err := term.MakeRaw(fd)
	if err != nil {
		return nil, mulchat.WrapError(mulchat.EINVALID, err, "switching the terminal to raw mode")
	}
	t := term.NewTerminal(struct {
		io.Reader
		io.Writer
	}{os.Stdin, os.Stdout}, "> ")
	if w, h, err := term.GetSize(int(os.Stdout.Fd())); err == nil {
		_ = t.SetSize(w, h)
	}
	// Everything goes through the editor, which also turns "\n" into the
	// "\r\n" a raw terminal needs.
	o.Lines, o.Out = t, t
	o.Logger = chatLogger(t, logLevel)
	return func() { _ = term.Restore(fd, state) }, nil
}

// chatPassword reads the password from $MULCHAT_PASSWORD or, without echo,
// from the terminal.
func chatPassword(prompt io.Writer, user string, confirm bool) (string, error) {
	if pw, ok := os.LookupEnv(chatPasswordEnv); ok && pw != "" {
		return pw, nil
	}
	fd := int(os.Stdin.Fd())
	if !term.IsTerminal(fd) {
		return "", mulchat.Errorf(mulchat.EINVALID, "standard input is not a terminal: set %s to give the password", chatPasswordEnv)
	}
	read := func(label string) (string, error) {
		fmt.Fprintf(prompt, "%s", label)
		b, err := term.ReadPassword(fd)
		fmt.Fprintln(prompt)
		if err != nil {
			return "", mulchat.WrapError(mulchat.EINVALID, err, "reading the password")
		}
		return string(b), nil
	}
	pw, err := read("Password for " + user + ": ")
	if err != nil {
		return "", err
	}
	if confirm {
		again, err := read("Password again: ")
		if err != nil {
			return "", err
		}
		if again != pw {
			return "", mulchat.Errorf(mulchat.EINVALID, "the passwords differ")
		}
	}
	if pw == "" {
		return "", mulchat.Errorf(mulchat.EINVALID, "empty password")
	}
	return pw, nil
}

// chatLogger logs the client library's warnings (and more with
// --log-level debug) to stderr, apart from the chat output on stdout.
func chatLogger(w io.Writer, level string) *slog.Logger {
	var l slog.Level
	switch strings.ToLower(level) {
	case "debug":
		l = slog.LevelDebug
	case "error":
		l = slog.LevelError
	default:
		// Info lines would interleave with the conversation; the library
		// logs nothing useful at info level anyway.
		l = slog.LevelWarn
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l}))
}
