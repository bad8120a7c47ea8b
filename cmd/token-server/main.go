// Command token-server issues OAuth 2.0 access tokens (RFC 9068 JWTs) to the cluster's
// M2MClients with the client credentials grant. It reads M2MClients and its one signing-key
// Secret from the API server, and no other Secret.
package main

import (
	// CA roots in the binary, for images without a CA bundle (make image builds from scratch).
	_ "golang.org/x/crypto/x509roots/fallback"

	"flag"
	"fmt"
	"log/slog"
	"os"

	"github.com/KimMachineGun/automemlimit/memlimit"
	"github.com/go-logr/logr"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/m2m-dev/m2m-operator/internal/tokenserver"
)

func main() {
	zapOpts := zap.Options{}
	zapOpts.BindFlags(flag.CommandLine)
	o, err := tokenserver.ParseArgs(flag.CommandLine, os.Args[1:])
	if err != nil {
		fail(err)
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))
	// The container's memory limit sets the Go runtime's soft limit to 90% of it, unless
	// GOMEMLIMIT is set (or AUTOMEMLIMIT=off): the garbage collector then works harder before the
	// kernel's OOM killer would end the process. The replay cache's budget is a tenth of it.
	// Without a cgroup limit (make dev, tests) the runtime stays unlimited.
	_, _ = memlimit.Set(memlimit.WithProvider(memlimit.FromCgroup), memlimit.WithLogger(slog.New(logr.ToSlogHandler(ctrl.Log.WithName("memlimit")))))
	// With the heap bounded, the collector may run less often (tokenserver.GCPercent).
	if percent := tokenserver.SetGCPercent(); percent != 0 {
		ctrl.Log.WithName("memlimit").Info("garbage collector target set under the memory limit", "GOGC", percent)
	}
	cfg, err := ctrl.GetConfig()
	if err != nil {
		fail(err)
	}
	ctx := log.IntoContext(ctrl.SetupSignalHandler(), ctrl.Log.WithName("token-server"))
	if err := tokenserver.Run(ctx, cfg, o); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "token-server:", err)
	os.Exit(1)
}
