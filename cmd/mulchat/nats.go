package main

import (
	"context"
	"fmt"

	"github.com/mulchat/mulchat"
	"github.com/mulchat/mulchat/internal/authority"
	"github.com/spf13/cobra"
)

func newNATSCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "nats", Short: "NATS server configuration and key import"}

	var o authority.ServerConfigOptions
	var out string
	var force bool
	serverConfig := &cobra.Command{
		Use:   "server-config",
		Short: "print a nats-server configuration that trusts mulchat's operator and accounts",
		Long: `Print a configuration for a stock nats-server (or each server of a cluster):
operator mode with mulchat's operator JWT, the system account, a full account
resolver preloaded with the account JWTs, JetStream, and optionally a
WebSocket listener and a cluster block. It holds no seeds. Run mulchat with
--nats-url pointing at that server.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return withAuthority(cmd, g, func(ctx context.Context, a *authority.Authority, _ *mulchat.User) error {
				text, err := a.ServerConfig(ctx, o)
				if err != nil {
					return err
				}
				if out == "" || out == "-" {
					_, err = fmt.Fprint(cmd.OutOrStdout(), text)
					return err
				}
				sf, err := createSecretFile(out, force)
				if err != nil {
					return err
				}
				defer sf.abort()
				return sf.commit([]byte(text))
			}, "")
		},
	}
	f := serverConfig.Flags()
	f.StringVar(&o.Host, "host", "", "listen host (default: all interfaces)")
	f.IntVar(&o.Port, "port", 4222, "client port")
	f.IntVar(&o.WSPort, "ws-port", 0, "WebSocket port (0 = no WebSocket listener)")
	f.StringVar(&o.WSTLSCert, "ws-tls-cert", "", "WebSocket TLS certificate file (wss)")
	f.StringVar(&o.WSTLSKey, "ws-tls-key", "", "WebSocket TLS key file (wss)")
	f.StringVar(&o.ResolverDir, "resolver-dir", "./nats/resolver", "directory of the full account resolver")
	f.StringVar(&o.JetStreamDir, "jetstream-dir", "./nats/jetstream", "JetStream store directory (\"\" = no JetStream)")
	f.StringVar(&o.ServerName, "server-name", "", "server name (required in a JetStream cluster)")
	f.StringVar(&o.ClusterName, "cluster-name", "", "cluster name (enables the cluster block)")
	f.IntVar(&o.ClusterPort, "cluster-port", 6222, "cluster port")
	f.StringSliceVar(&o.Routes, "cluster-routes", nil, "routes to the other servers, e.g. nats-route://host:6222 (comma-separated)")
	f.StringVarP(&out, "output", "o", "", "write to this file (0600) instead of stdout")
	f.BoolVar(&force, "force", false, "overwrite an existing output file")

	cmd.AddCommand(serverConfig)
	addNATSImportCommand(cmd, g)
	return cmd
}
