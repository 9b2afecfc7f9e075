package authority

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mulchat/mulchat"
	"github.com/mulchat/mulchat/internal/sqlstore/sqltest"
	"github.com/nats-io/nats-server/v2/server"
)

// TestServerConfigValidByNATS prints configurations for single servers and
// cluster members and has nats-server parse and validate each one
// (ProcessConfigFile, then NewServer, which runs the checks that refused the
// old output — a cluster block with JetStream and no server_name — without
// opening a port).
func TestServerConfigValidByNATS(t *testing.T) {
	a := openAuthority(t, sqltest.OpenSQLite(t), randomMasterKey(t))
	cases := []struct {
		name         string
		opts         ServerConfigOptions
		want, reject []string // lines the output must and must not hold
	}{
		{
			name:   "single server, defaults",
			opts:   ServerConfigOptions{},
			want:   []string{"jetstream: {"},
			reject: []string{"cluster", "server_name", "websocket"},
		},
		{
			name:   "single server with a name and WebSocket",
			opts:   ServerConfigOptions{ServerName: "n1", Port: 4333, WSPort: 8443},
			want:   []string{`server_name: "n1"`, "port: 4333", "port: 8443", "no_tls: true"},
			reject: []string{"cluster"},
		},
		{
			name: "cluster member with routes",
			opts: ServerConfigOptions{ServerName: "n1", ClusterName: "c1",
				Routes: []string{"nats-route://127.0.0.1:6223", "nats-route://127.0.0.1:6224"}},
			want: []string{`server_name: "n1"`, "cluster: {", `name: "c1"`, "port: 6222", `"nats-route://127.0.0.1:6224"`},
		},
		{
			name: "cluster seed without routes, own port",
			opts: ServerConfigOptions{ServerName: "n1", ClusterName: "c1", ClusterPort: 7222},
			want: []string{"cluster: {", "port: 7222"},
		},
		{
			name:   "cluster without JetStream needs no cluster name",
			opts:   ServerConfigOptions{ServerName: "n1", Routes: []string{"nats-route://127.0.0.1:6223"}, JetStreamDir: "-"},
			want:   []string{"cluster: {", "routes: ["},
			reject: []string{"jetstream", "  name: "},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			o := c.opts
			o.ResolverDir = filepath.Join(dir, "resolver")
			switch o.JetStreamDir {
			case "":
				o.JetStreamDir = filepath.Join(dir, "js")
			case "-":
				o.JetStreamDir = ""
			}
			text, err := a.ServerConfig(context.Background(), o)
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range c.want {
				if !strings.Contains(text, w) {
					t.Errorf("config lacks %q", w)
				}
			}
			for _, r := range c.reject {
				if strings.Contains(text, r) {
					t.Errorf("config holds %q", r)
				}
			}
			path := filepath.Join(dir, "nats.conf")
			if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
				t.Fatal(err)
			}
			sopts, err := server.ProcessConfigFile(path)
			if err != nil {
				t.Fatalf("nats-server cannot parse the config: %v\n%s", err, text)
			}
			if _, err := server.NewServer(sopts); err != nil {
				t.Fatalf("nats-server refuses the config: %v\n%s", err, text)
			}
		})
	}
}

// TestServerConfigRefusesWhatNATSRefuses: options a stock nats-server would
// refuse at start are EINVALID errors naming what is missing.
func TestServerConfigRefusesWhatNATSRefuses(t *testing.T) {
	a := openAuthority(t, sqltest.OpenSQLite(t), randomMasterKey(t))
	base := func(mod func(*ServerConfigOptions)) ServerConfigOptions {
		o := ServerConfigOptions{ResolverDir: "r", JetStreamDir: "js"}
		mod(&o)
		return o
	}
	cases := []struct {
		name string
		opts ServerConfigOptions
		want string
	}{
		{"no resolver dir", ServerConfigOptions{}, "resolver directory"},
		{"cluster name without server name", base(func(o *ServerConfigOptions) { o.ClusterName = "c1" }), "server name"},
		{"routes without server name", base(func(o *ServerConfigOptions) { o.Routes = []string{"nats-route://h:6222"} }), "server name"},
		{"JetStream cluster without cluster name", base(func(o *ServerConfigOptions) {
			o.ServerName, o.Routes = "n1", []string{"nats-route://h:6222"}
		}), "cluster name"},
		{"cluster port alone", base(func(o *ServerConfigOptions) { o.ClusterPort = 6222 }), "cluster name or routes"},
		{"route not a URL", base(func(o *ServerConfigOptions) {
			o.ServerName, o.ClusterName, o.Routes = "n1", "c1", []string{"h:6222"}
		}), "not a URL"},
		{"space in a name", base(func(o *ServerConfigOptions) { o.ServerName, o.ClusterName = "n 1", "c1" }), "spaces"},
		{"TLS key without certificate", base(func(o *ServerConfigOptions) { o.WSPort, o.WSTLSKey = 8443, "k" }), "go together"},
		{"TLS without WebSocket", base(func(o *ServerConfigOptions) { o.WSTLSCert, o.WSTLSKey = "c", "k" }), "WebSocket port"},
		{"port out of range", base(func(o *ServerConfigOptions) { o.Port = 70000 }), "out of range"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := a.ServerConfig(context.Background(), c.opts)
			if mulchat.ErrorCode(err) != mulchat.EINVALID || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want EINVALID with %q", err, c.want)
			}
		})
	}
}
