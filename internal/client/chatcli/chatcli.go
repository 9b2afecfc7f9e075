// Package chatcli is the line-based terminal chat client behind `mulchat
// chat`: it reads lines from an io.Reader (a terminal or a pipe), sends them
// or runs slash commands, and prints history, live messages, events and
// connection changes to an io.Writer with local times ("15:04 alice: hi").
// Text from other users is stripped of control characters before it reaches
// the terminal.
package chatcli

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/mulchat/mulchat"
	"github.com/mulchat/mulchat/internal/client"
)

// Options configure Run.
type Options struct {
	ServerURL string
	Username  string
	// Password is used to log in (and, with Register, to create the user).
	// It is never printed or logged.
	Password string
	Register bool
	Email    string
	// Room is opened at start (by name); Create creates it (public) when no
	// visible room has that name.
	Room   string
	Create bool
	// History is how many recent messages are shown when a room is opened;
	// 0 = 20, negative = none.
	History int
	// NATSURLs overrides the NATS URLs the server hands out.
	NATSURLs []string
	// Name is the NATS connection name ("mulchat-chat").
	Name string
	// KeyFile keeps the NATS key's seed between sessions, so that the server
	// refreshes the same key's JWT instead of revoking the previous key for
	// a new one. "" = client.DefaultKeyFile(ServerURL, Username).
	KeyFile string
	// NewKey uses a new key pair kept in memory only (no key file).
	NewKey bool

	// In is read line by line, unless Lines is set: a line editor such as
	// golang.org/x/term's Terminal, whose ReadLine returns io.EOF at the
	// end. If Lines also has SetPrompt(string), the prompt shows the
	// current room.
	In     io.Reader
	Lines  LineReader
	Out    io.Writer
	Logger *slog.Logger
	// Location is the time zone of printed times; nil = time.Local.
	Location *time.Location
}

// Run runs a chat session until the input ends, /quit, ctx is cancelled or
// the connection is closed for good (a revoked credential); the last is
// returned as an error.
func Run(ctx context.Context, o Options) error {
	if o.History == 0 {
		o.History = 20
	}
	if o.Location == nil {
		o.Location = time.Local
	}
	if o.Name == "" {
		o.Name = "mulchat-chat"
	}
	s := &session{o: o, names: map[int64]string{}, fatal: make(chan error, 1)}
	keyFile := ""
	if !o.NewKey {
		keyFile = o.KeyFile
		if keyFile == "" {
			var err error
			if keyFile, err = client.DefaultKeyFile(o.ServerURL, o.Username); err != nil {
				// No config directory (or a bad URL, which client.New
				// reports): the session works with a key of its own.
				if o.Logger != nil {
					o.Logger.Warn("not keeping the NATS key between sessions", "err", err)
				}
				keyFile = ""
			}
		}
	}
	c, err := client.New(client.Config{
		KeyFile:   keyFile,
		ServerURL: o.ServerURL,
		Logger:    o.Logger,
		Name:      o.Name,
		NATSURLs:  o.NATSURLs,
		OnMessage: s.onMessage,
		OnEvent:   s.onEvent,
		OnStatus:  s.onStatus,
	})
	if err != nil {
		return err
	}
	s.c = c
	defer c.Close()

	if o.Register {
		if _, err := c.Register(ctx, o.Username, o.Password, o.Email); err != nil {
			return err
		}
		s.printf("* registered %s", o.Username)
	}
	if err := c.Login(ctx, o.Username, o.Password); err != nil {
		return err
	}
	if _, err := c.EnsureCredential(ctx); err != nil {
		return err
	}
	if err := c.Connect(ctx); err != nil {
		return err
	}
	s.printf("* connected to %s as %s (NATS key %s…); /help lists commands", o.ServerURL, o.Username, c.PublicKey()[:8])
	if o.Room != "" {
		if err := s.open(ctx, o.Room, o.Create); err != nil {
			return err
		}
	}
	return s.loop(ctx)
}

// LineReader reads input lines.
type LineReader interface {
	ReadLine() (string, error)
}

// prompter is a LineReader with a prompt.
type prompter interface {
	SetPrompt(string)
}

type session struct {
	o     Options
	c     *client.Client
	outMu sync.Mutex

	mu      sync.Mutex
	current *client.Room
	opening string // name of the room open is creating or joining
	names   map[int64]string

	fatal chan error
}

// loop reads input lines until the end.
func (s *session) loop(ctx context.Context) error {
	lines := make(chan string)
	readErr := make(chan error, 1)
	next := s.o.Lines
	if next == nil {
		sc := bufio.NewScanner(s.o.In)
		sc.Buffer(make([]byte, 64*1024), 64*1024)
		next = scannerLines{sc}
	}
	go func() {
		for {
			line, err := next.ReadLine()
			if err != nil {
				if err == io.EOF {
					err = nil
				}
				readErr <- err
				return
			}
			select {
			case lines <- line:
			case <-ctx.Done():
				return
			}
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-s.fatal:
			return err
		case err := <-readErr:
			if err != nil {
				return mulchat.WrapError(mulchat.EINVALID, err, "reading input")
			}
			return nil
		case line := <-lines:
			quit, err := s.handle(ctx, line)
			if err != nil {
				s.printf("! %s", mulchat.ErrorMessageForCLI(err))
			}
			if quit {
				return nil
			}
		}
	}
}

// scannerLines reads lines from a bufio.Scanner.
type scannerLines struct{ sc *bufio.Scanner }

func (l scannerLines) ReadLine() (string, error) {
	if l.sc.Scan() {
		return l.sc.Text(), nil
	}
	if err := l.sc.Err(); err != nil {
		return "", err
	}
	return "", io.EOF
}

// setCurrent makes room the current one and shows it in the prompt.
func (s *session) setCurrent(room *client.Room) {
	s.mu.Lock()
	s.current = room
	s.mu.Unlock()
	if p, ok := s.o.Lines.(prompter); ok {
		if room == nil {
			p.SetPrompt("> ")
		} else {
			p.SetPrompt("#" + room.Name + "> ")
		}
	}
}

const help = `commands:
  /rooms            list the rooms you can see (* = current)
  /join ROOM        join a room (or switch to it) and show its recent history
  /create ROOM      create a public room and switch to it
  /leave            leave the current room
  /who              list the members of the current room
  /history [N]      show the last N messages of the current room
  /quit             leave the chat
anything else is sent to the current room`

// handle runs one input line.
func (s *session) handle(ctx context.Context, line string) (quit bool, err error) {
	line = strings.TrimRight(line, "\r")
	if strings.TrimSpace(line) == "" {
		return false, nil
	}
	if !strings.HasPrefix(line, "/") || strings.HasPrefix(line, "//") {
		// "//text" sends "/text".
		text := strings.TrimPrefix(line, "/")
		if !strings.HasPrefix(line, "//") {
			text = line
		}
		room := s.currentRoom()
		if room == nil {
			return false, mulchat.Errorf(mulchat.EINVALID, "no room is open: /join ROOM first")
		}
		_, err := s.c.Send(ctx, room.ID, text)
		return false, err
	}
	cmd, arg, _ := strings.Cut(strings.TrimSpace(line[1:]), " ")
	arg = strings.TrimSpace(arg)
	switch cmd {
	case "quit", "exit", "q":
		return true, nil
	case "help", "?":
		s.printf("%s", help)
	case "rooms":
		return false, s.listRooms(ctx)
	case "join", "open":
		if arg == "" {
			return false, mulchat.Errorf(mulchat.EINVALID, "usage: /join ROOM")
		}
		return false, s.open(ctx, arg, false)
	case "create":
		if arg == "" {
			return false, mulchat.Errorf(mulchat.EINVALID, "usage: /create ROOM")
		}
		return false, s.open(ctx, arg, true)
	case "leave":
		room := s.currentRoom()
		if room == nil {
			return false, mulchat.Errorf(mulchat.EINVALID, "no room is open")
		}
		if err := s.c.LeaveRoom(ctx, room.ID); err != nil {
			return false, err
		}
		s.setCurrent(nil)
		s.printf("* left #%s", room.Name)
	case "who":
		return false, s.who(ctx)
	case "history":
		n := s.o.History
		if arg != "" {
			v, err := strconv.Atoi(arg)
			if err != nil || v < 1 || v > 100 {
				return false, mulchat.Errorf(mulchat.EINVALID, "usage: /history [1-100]")
			}
			n = v
		}
		room := s.currentRoom()
		if room == nil {
			return false, mulchat.Errorf(mulchat.EINVALID, "no room is open")
		}
		msgs, err := s.c.History(ctx, room.ID, 0, n)
		if err != nil {
			return false, err
		}
		s.printHistory(room, msgs)
	default:
		return false, mulchat.Errorf(mulchat.EINVALID, "unknown command /%s (/help lists them)", clean(cmd))
	}
	return false, nil
}

func (s *session) currentRoom() *client.Room {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.current
}

// open finds a room by name (creating it if asked and missing), joins it if
// needed, makes it current and shows its recent history.
func (s *session) open(ctx context.Context, name string, create bool) error {
	// The joined event of a room being created or joined here may arrive
	// before the API call returns; it is not worth a line of its own.
	defer func() {
		s.mu.Lock()
		s.opening = ""
		s.mu.Unlock()
	}()
	s.mu.Lock()
	s.opening = name
	s.mu.Unlock()
	room, err := s.c.RoomByName(ctx, name)
	switch {
	case err == nil:
	case mulchat.ErrorCode(err) == mulchat.ENOTFOUND && create:
		if room, err = s.c.CreateRoom(ctx, name, "", true); err != nil {
			return err
		}
		room.Role = mulchat.RoleOwner
		s.printf("* created #%s", room.Name)
	case mulchat.ErrorCode(err) == mulchat.ENOTFOUND:
		return mulchat.Errorf(mulchat.ENOTFOUND, "no room named %q is visible to you (use --create or /create to make it)", name)
	default:
		return err
	}
	if room.Role == "" {
		if err := s.c.JoinRoom(ctx, room.ID); err != nil {
			return err
		}
		s.printf("* joined #%s", room.Name)
	}
	var msgs []mulchat.Message
	if s.o.History > 0 {
		if msgs, err = s.c.OpenRoom(ctx, room.ID, s.o.History); err != nil {
			return err
		}
	}
	s.mu.Lock()
	s.names[room.ID] = room.Name
	s.mu.Unlock()
	s.setCurrent(room)
	s.printHistory(room, msgs)
	return nil
}

func (s *session) printHistory(room *client.Room, msgs []mulchat.Message) {
	if len(msgs) == 0 {
		s.printf("* #%s: no messages yet", room.Name)
		return
	}
	if len(msgs) == 1 {
		s.printf("* #%s: last message", room.Name)
	} else {
		s.printf("* #%s: last %d messages", room.Name, len(msgs))
	}
	for _, m := range msgs {
		s.printf("%s", s.format(m, true))
	}
	s.printf("* — live —")
}

func (s *session) listRooms(ctx context.Context) error {
	rooms, err := s.c.Rooms(ctx)
	if err != nil {
		return err
	}
	if len(rooms) == 0 {
		s.printf("* no rooms yet: /create ROOM")
		return nil
	}
	cur := s.currentRoom()
	s.mu.Lock()
	for _, r := range rooms {
		s.names[r.ID] = r.Name
	}
	s.mu.Unlock()
	for _, r := range rooms {
		mark := " "
		if cur != nil && cur.ID == r.ID {
			mark = "*"
		}
		what := "public"
		if !r.IsPublic {
			what = "private"
		}
		if r.Role != "" {
			what += ", " + r.Role
		}
		line := fmt.Sprintf("%s #%s (%s)", mark, r.Name, what)
		if r.Description != "" {
			line += " — " + clean(r.Description)
		}
		s.printf("%s", line)
	}
	return nil
}

func (s *session) who(ctx context.Context) error {
	room := s.currentRoom()
	if room == nil {
		return mulchat.Errorf(mulchat.EINVALID, "no room is open")
	}
	members, err := s.c.Members(ctx, room.ID)
	if err != nil {
		return err
	}
	sort.Slice(members, func(i, j int) bool { return members[i].Username < members[j].Username })
	parts := make([]string, len(members))
	for i, m := range members {
		parts[i] = clean(m.Username)
		if m.Role != mulchat.RoleMember {
			parts[i] += " (" + m.Role + ")"
		}
	}
	s.printf("* #%s: %d members: %s", room.Name, len(members), strings.Join(parts, ", "))
	return nil
}

// format renders a message: "15:04 alice: text", with "[room] " before the
// sender when the message is not in the current room.
func (s *session) format(m mulchat.Message, inCurrent bool) string {
	t := m.SentAt.In(s.o.Location).Format("15:04")
	where := ""
	if !inCurrent {
		where = "[" + s.roomName(m.RoomID) + "] "
	}
	return fmt.Sprintf("%s %s%s: %s", t, where, clean(m.Sender.Username), clean(m.Text))
}

func (s *session) roomName(id int64) string {
	s.mu.Lock()
	name, ok := s.names[id]
	s.mu.Unlock()
	if ok {
		return "#" + name
	}
	// A room this session has not seen yet (someone added us): look it up.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if rooms, err := s.c.Rooms(ctx); err == nil {
		s.mu.Lock()
		for _, r := range rooms {
			s.names[r.ID] = r.Name
		}
		name, ok = s.names[id]
		s.mu.Unlock()
		if ok {
			return "#" + name
		}
	}
	return "room " + strconv.FormatInt(id, 10)
}

func (s *session) onMessage(m mulchat.Message) {
	cur := s.currentRoom()
	s.printf("%s", s.format(m, cur != nil && cur.ID == m.RoomID))
}

func (s *session) onEvent(ev client.Event) {
	at := ev.At
	if at.IsZero() {
		at = time.Now()
	}
	line := ""
	switch ev.Type {
	case mulchat.EventMembership:
		room := s.roomName(ev.RoomID)
		switch ev.Change {
		case mulchat.MembershipJoined:
			s.mu.Lock()
			opening, cur := s.opening, s.current
			s.mu.Unlock()
			opened := (cur != nil && cur.ID == ev.RoomID) || (opening != "" && room == "#"+opening)
			if opened {
				return // "created"/"joined" was printed already
			}
			line = "you are now a member of " + room
		case mulchat.MembershipLeft:
			line = "you left " + room
		case mulchat.MembershipRemoved:
			line = "you were removed from " + room
		case mulchat.MembershipDeleted:
			line = room + " was deleted"
		default:
			line = room + ": membership " + clean(ev.Change)
		}
		if ev.Change != mulchat.MembershipJoined {
			if cur := s.currentRoom(); cur != nil && cur.ID == ev.RoomID {
				s.setCurrent(nil)
				line += " (no room open now: /join ROOM)"
			}
		}
	case mulchat.EventPresence:
		who := clean(ev.Username)
		if who == "" {
			who = "user " + strconv.FormatInt(ev.UserID, 10)
		}
		line = who + " is " + clean(ev.Status)
	case mulchat.EventCredential:
		line = "your NATS credential was " + clean(ev.Change)
		if ev.Change == mulchat.CredentialExpiring {
			line = "your NATS credential is expiring"
		}
		if ev.ExpiresAt != nil && ev.Change != mulchat.CredentialRevokedN {
			line += "; valid until " + ev.ExpiresAt.In(s.o.Location).Format("2006-01-02 15:04")
		}
	default:
		line = "event " + clean(ev.Type)
	}
	s.printf("%s * %s", at.In(s.o.Location).Format("15:04"), line)
}

func (s *session) onStatus(st client.Status) {
	switch st.State {
	case client.StateDisconnected:
		s.printf("* disconnected; reconnecting by itself…")
	case client.StateReconnected:
		s.printf("* reconnected")
	case client.StateGapFilled:
		if st.Missed > 0 {
			s.printf("* recovered %d messages sent while disconnected", st.Missed)
		}
	case client.StateClosed:
		err := st.Err
		if err == nil {
			err = mulchat.Errorf(mulchat.EUNAVAILABLE, "the connection was closed")
		}
		s.printf("! connection closed: %s", mulchat.ErrorMessageForCLI(err))
		select {
		case s.fatal <- err:
		default:
		}
	}
}

// printf writes one line, serialised with every other output.
func (s *session) printf(format string, args ...any) {
	s.outMu.Lock()
	defer s.outMu.Unlock()
	fmt.Fprintf(s.o.Out, format+"\n", args...)
}

// clean makes text from other users safe for a terminal: control characters
// (escape sequences could rewrite the screen) and bidirectional overrides
// (which can disguise text) become U+FFFD; newlines become "⏎".
func clean(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r == '\n':
			return '⏎'
		case r == '\t':
			return ' '
		case unicode.IsControl(r),
			r >= 0x202A && r <= 0x202E, r >= 0x2066 && r <= 0x2069,
			r == 0x200E, r == 0x200F, r == 0x061C:
			return '\uFFFD'
		}
		return r
	}, s)
}
