// Command mulchat is the NATS-native chat server: one binary that serves the
// API and web page, signs NATS credentials, routes messages, tracks sessions,
// migrates legacy Mul-Chat databases, and includes a terminal client.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/mulchat/mulchat"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRootCommand().ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "mulchat:", mulchat.ErrorMessageForCLI(err))
		os.Exit(1)
	}
}
