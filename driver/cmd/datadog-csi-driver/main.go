// Command datadog-csi-driver is the CSI node driver k8s.csi.datadoghq.com:
// it exposes the node's Datadog Agent sockets to pods as read-only CSI
// ephemeral inline volumes. See docs/driver.md for flags, types and metrics.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/datadog-csi/datadog-csi/driver/internal/config"
	"github.com/datadog-csi/datadog-csi/driver/internal/mounter"
	"github.com/datadog-csi/datadog-csi/driver/internal/server"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Getenv, os.Stderr))
}

// run is main without the process exit, so tests can drive it.
func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) int {
	cfg, err := config.Parse(args, getenv, stderr)
	if errors.Is(err, config.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "datadog-csi-driver: invalid configuration:\n%v\n", err)
		return 2
	}
	log := cfg.NewLogger(stderr)
	driver, err := server.New(cfg, log, mounter.RealSyscalls)
	if err != nil {
		fmt.Fprintf(stderr, "datadog-csi-driver: %v\n", err)
		return 2
	}
	if err := driver.Run(ctx, nil); err != nil {
		log.Error("driver failed", "error", err.Error())
		return 1
	}
	return 0
}
