package main

import (
	"context"
	"fmt"

	"github.com/mulchat/mulchat"
	"github.com/mulchat/mulchat/internal/authority"
	"github.com/mulchat/mulchat/internal/sqlstore"
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
--nats-url pointing at that server.

A single server needs no flags. A cluster member is one given
--cluster-name or --cluster-routes; it then needs --server-name (unique in the
cluster) and, with JetStream, --cluster-name. See docs/nats.md.`,
		Example: `  mulchat nats server-config > nats.conf
  mulchat nats server-config --server-name n1 --cluster-name mulchat \
    --cluster-routes nats-route://n2:6222,nats-route://n3:6222 > n1.conf`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkServerConfigFlags(cmd, &o); err != nil {
				return err
			}
			return withAuthority(cmd, g, func(ctx context.Context, _ *sqlstore.DB, a *authority.Authority, _ *mulchat.User) error {
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
	f.StringVar(&o.ServerName, "server-name", "", "server name (required for a cluster member, unique in the cluster)")
	f.StringVar(&o.ClusterName, "cluster-name", "", "cluster name (makes this server a cluster member)")
	f.IntVar(&o.ClusterPort, "cluster-port", 6222, "cluster port (with --cluster-name or --cluster-routes)")
	f.StringSliceVar(&o.Routes, "cluster-routes", nil, "routes to the other servers, e.g. nats-route://host:6222 (comma-separated)")
	f.StringVarP(&out, "output", "o", "", "write to this file (0600) instead of stdout")
	f.BoolVar(&force, "force", false, "overwrite an existing output file")

	cmd.AddCommand(serverConfig)
	addNATSImportCommand(cmd, g)
	return cmd
}

// checkServerConfigFlags refuses, naming the flags, the combinations a stock
// nats-server would refuse at start (ServerConfig checks them again without
// the flag names). A --cluster-port left at its default on a single server is
// dropped: only a cluster member gets a cluster block.
func checkServerConfigFlags(cmd *cobra.Command, o *authority.ServerConfigOptions) error {
	if !o.Clustered() {
		if explicit(cmd, "cluster-port") {
			return mulchat.Errorf(mulchat.EINVALID, "--cluster-port needs --cluster-name or --cluster-routes")
		}
		o.ClusterPort = 0
		return nil
	}
	if o.ServerName == "" {
		return mulchat.Errorf(mulchat.EINVALID, "a cluster member needs --server-name (a name unique in the cluster)")
	}
	if o.JetStreamDir != "" && o.ClusterName == "" {
		return mulchat.Errorf(mulchat.EINVALID, "a JetStream cluster needs --cluster-name (or --jetstream-dir \"\" for none)")
	}
	return nil
}
