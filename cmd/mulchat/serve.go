package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/mulchat/mulchat"
	"github.com/mulchat/mulchat/internal/app"
	"github.com/mulchat/mulchat/internal/httpapi"
	"github.com/mulchat/mulchat/internal/sqlstore"
	"github.com/mulchat/mulchat/internal/web"
	"github.com/spf13/cobra"
)

type serveFlags struct {
	httpAddr         string
	natsHost         string
	natsPort         int
	natsWSPort       int
	natsWSTLSCert    string
	natsWSTLSKey     string
	natsPublicURLs   []string
	noMigrate        bool
	credentialTTL    time.Duration
	maxCredentialTTL time.Duration
	tokenTTL         time.Duration
	natsPortFallback bool
	sendRate         float64
	sendBurst        int
	loginRateUser    float64
	loginRateAddr    float64
	registerRateAddr float64
	streamReplicas   int
	credentialRate   float64
}

func newServeCommand(g *globals) *cobra.Command {
	var f serveFlags
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "run the chat server (API, web page, NATS authority, router, tracker)",
		Long: `Run the chat server. With no flags it creates ./data with a SQLite database,
the master key and the NATS operator and accounts, starts an embedded NATS
server (client port 4222, WebSocket 8222) and serves the HTTP API on
127.0.0.1:8080. Every flag can also be set with its MULCHAT_* environment
variable. SIGINT or SIGTERM shuts it down cleanly.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			// Ports nobody asked for fall back to free ones when taken.
			f.natsPortFallback = !explicit(cmd, "nats-port") && !explicit(cmd, "nats-ws-port")
			return runServe(cmd.Context(), g, f, cmd.ErrOrStderr())
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.httpAddr, "http-addr", app.DefaultHTTPAddr, "HTTP listen address (\":0\" = a random free port)")
	fl.StringVar(&f.natsHost, "nats-host", "127.0.0.1", "listen host of the embedded NATS server")
	fl.IntVar(&f.natsPort, "nats-port", app.DefaultNATSPort, "client port of the embedded NATS server (-1 = a random free port)")
	fl.IntVar(&f.natsWSPort, "nats-ws-port", app.DefaultNATSWSPort, "WebSocket port of the embedded NATS server (-1 = a random free port)")
	fl.StringVar(&f.natsWSTLSCert, "nats-ws-tls-cert", "", "TLS certificate (PEM) of the embedded server's WebSocket listener: wss instead of ws")
	fl.StringVar(&f.natsWSTLSKey, "nats-ws-tls-key", "", "TLS key (PEM) going with --nats-ws-tls-cert")
	fl.StringSliceVar(&f.natsPublicURLs, "nats-public-url", nil, "NATS URLs handed to clients instead of the server's own (comma-separated)")
	fl.BoolVar(&f.noMigrate, "no-migrate", false, "do not migrate the database on start (refuse to run if it is not current)")
	fl.DurationVar(&f.credentialTTL, "credential-ttl", 24*time.Hour, "default lifetime of a user's NATS credential")
	fl.DurationVar(&f.maxCredentialTTL, "max-credential-ttl", 30*24*time.Hour, "longest credential lifetime a client may ask for")
	fl.DurationVar(&f.tokenTTL, "token-ttl", 7*24*time.Hour, "lifetime of an API login token")
	fl.Float64Var(&f.sendRate, "send-rate", 20, "messages per second one user may send (burst --send-burst; negative = unlimited)")
	fl.IntVar(&f.sendBurst, "send-burst", 40, "messages one user may send at once before --send-rate applies")
	fl.IntVar(&f.streamReplicas, "stream-replicas", 1, "replicas of the JetStream message stream (3 or 5 in an external JetStream cluster)")
	def := httpapi.DefaultLoginRate
	fl.Float64Var(&f.loginRateUser, "login-rate-per-user", def.PerUsername, "login attempts per minute for one username (negative = unlimited)")
	fl.Float64Var(&f.loginRateAddr, "login-rate-per-address", def.PerAddress, "login attempts per minute from one client address (negative = unlimited)")
	fl.Float64Var(&f.credentialRate, "credential-rate-per-user", httpapi.DefaultCredentialRate.PerUser, "credential issues and renewals per minute for one user (burst 10; negative = unlimited)")
	fl.Float64Var(&f.registerRateAddr, "register-rate-per-address", def.RegisterPerAddress, "registrations per minute from one client address (negative = unlimited)")
	return cmd
}

func runServe(ctx context.Context, g *globals, f serveFlags, stderr io.Writer) error {
	logger, err := buildLogger(g, stderr)
	if err != nil {
		return err
	}
	cfg := appConfig(g, logger)
	cfg.HTTPAddr = f.httpAddr
	cfg.NATSHost = f.natsHost
	cfg.NATSPort = f.natsPort
	cfg.NATSWSPort = f.natsWSPort
	cfg.NATSWSTLSCert, cfg.NATSWSTLSKey = f.natsWSTLSCert, f.natsWSTLSKey
	cfg.NATSPortFallback = f.natsPortFallback
	cfg.NATSPublicURLs = f.natsPublicURLs
	cfg.NoMigrate = f.noMigrate
	cfg.CredentialTTL = f.credentialTTL
	cfg.MaxCredentialTTL = f.maxCredentialTTL
	cfg.TokenTTL = f.tokenTTL
	cfg.Web = webHandler
	cfg.SendRate, cfg.SendBurst = f.sendRate, f.sendBurst
	cfg.StreamReplicas = f.streamReplicas
	cfg.LoginRate = httpapi.DefaultLoginRate
	cfg.LoginRate.PerUsername = f.loginRateUser
	cfg.LoginRate.PerAddress = f.loginRateAddr
	cfg.LoginRate.RegisterPerAddress = f.registerRateAddr
	cfg.CredentialRate = httpapi.DefaultCredentialRate
	cfg.CredentialRate.PerUser = f.credentialRate
	m, err := app.Start(ctx, cfg)
	if err != nil {
		return err
	}
	logger.Info("mulchat serving", slog.String("http", m.HTTPURL()), slog.Any("nats_urls", m.NATSURLs()))
	werr := m.Wait(ctx)
	logger.Info("shutting down")
	cerr := m.Close()
	if werr != nil {
		return werr
	}
	return cerr
}

// explicit reports whether a flag was given on the command line or through its
// MULCHAT_* environment variable.
func explicit(cmd *cobra.Command, flag string) bool {
	if cmd.Flags().Changed(flag) {
		return true
	}
	_, ok := os.LookupEnv(envName(flag))
	return ok
}

// appConfig is the part of app.Config the global flags decide.
func appConfig(g *globals, logger *slog.Logger) app.Config {
	return app.Config{DataDir: g.dataDir, DatabaseURL: g.databaseURL, NATSURL: g.natsURL, Logger: logger}
}

// buildLogger builds the one logger of the process from --log-level and
// --log-format, writing to w.
func buildLogger(g *globals, w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(g.logLevel)); err != nil {
		return nil, mulchat.Errorf(mulchat.EINVALID, "--log-level must be debug, info, warn or error")
	}
	opts := &slog.HandlerOptions{Level: level}
	switch strings.ToLower(g.logFormat) {
	case "text", "":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, mulchat.Errorf(mulchat.EINVALID, "--log-format must be text or json")
	}
}

// openAdminStore opens the database for an admin command, migrating it like
// serve does, so admin commands work on a fresh data directory.
func openAdminStore(ctx context.Context, g *globals) (*sqlstore.DB, error) {
	return app.OpenStore(ctx, appConfig(g, nil))
}

// cliLogger is the logger of admin commands: warnings and errors to stderr
// unless --log-level asks for more.
func cliLogger(cmd *cobra.Command, g *globals) *slog.Logger {
	l, err := buildLogger(g, cmd.ErrOrStderr())
	if err != nil {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	if !cmd.Flags().Changed("log-level") && os.Getenv("MULCHAT_LOG_LEVEL") == "" {
		return slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	return l
}

// webHandler serves the embedded chat page; its Content-Security-Policy
// allows connections to the NATS WebSocket URLs handed to clients.
func webHandler(natsURLs []string) http.Handler {
	var ws []string
	for _, u := range natsURLs {
		if strings.HasPrefix(u, "ws://") || strings.HasPrefix(u, "wss://") {
			ws = append(ws, u)
		}
	}
	return web.Handler(web.WithNATSWebSocketURLs(ws...))
}
