package natscluster_test

import (
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/mulchat/mulchat/internal/testenv/natscluster"
	"github.com/nats-io/nats-server/v2/server"
)

// TestStartRetriesATakenPort: the first set of ports handed to configure has
// server 1's cluster port taken by another listener; Start starts the
// cluster on the next set, and its two servers route to each other.
func TestStartRetriesATakenPort(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	takenPort := taken.Addr().(*net.TCPAddr).Port

	calls := 0
	servers := natscluster.Start(t, 2, func(i int, ports []int) *server.Options {
		calls++
		if calls == 1 {
			ports[0] = takenPort
		}
		o := &server.Options{Host: "127.0.0.1", Port: -1, ServerName: "n" + strconv.Itoa(i+1)}
		o.Cluster.Name, o.Cluster.Host, o.Cluster.Port = "c1", "127.0.0.1", ports[i]
		for _, p := range ports {
			o.Routes = append(o.Routes, server.RoutesFromStr("nats-route://127.0.0.1:"+strconv.Itoa(p))...)
		}
		return o
	})
	if calls < 4 {
		t.Fatalf("configure called %d times, want the first pair refused and a second started", calls)
	}
	deadline := time.Now().Add(10 * time.Second)
	for servers[0].NumRoutes() == 0 || servers[1].NumRoutes() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the servers did not route to each other")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
