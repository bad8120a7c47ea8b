// Command kubectl-m2m is the `kubectl m2m` plugin: put it on the PATH and run `kubectl m2m`.
package main

import (
	"context"
	"os"
	"os/signal"

	"github.com/m2m-dev/m2m-operator/internal/plugin"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	code := plugin.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
