// Command datadog-csi-webhook is the mutating admission webhook of
// datadog-csi: `serve` runs it, `inject` previews its mutation offline.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/datadog-csi/datadog-csi/webhook/pkg/app"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

const usage = `usage: datadog-csi-webhook <command> [flags]

commands:
  serve    run the admission webhook (see serve -h)
  inject   print a pod as the webhook would mutate it, and its Pod Security verdicts (see inject -h)
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "serve":
		return serve(args[1:], stderr)
	case "inject":
		return inject(args[1:], stdin, stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "unknown command %q\n%s", args[0], usage)
	return 2
}

func serve(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg app.Config
	cfg.RegisterFlags(fs)
	kubeconfig := fs.String("kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig file (default: in-cluster config)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "serve: unexpected arguments %q\n", fs.Args())
		return 2
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(stderr, "serve: invalid flags:\n%v\n", err)
		return 2
	}
	logger := cfg.NewLogger()
	restCfg, err := restConfig(*kubeconfig)
	if err != nil {
		logger.Error("no Kubernetes API access", "err", err)
		return 1
	}
	restCfg.UserAgent = "datadog-csi-webhook"
	client, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		logger.Error("Kubernetes client", "err", err)
		return 1
	}
	a, err := app.New(cfg, client, logger)
	if err != nil {
		logger.Error("invalid configuration", "err", err)
		return 2
	}
	// SIGTERM (the kubelet's) or SIGINT starts the shutdown: Serve keeps
	// answering for --shutdown-delay, then drains. The first signal also
	// restores the default handling, so a second one ends the process at
	// once, delay or not.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	context.AfterFunc(ctx, stop)
	if err := a.Serve(ctx); err != nil {
		logger.Error("webhook stopped", "err", err)
		return 1
	}
	return 0
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig != "" {
		return clientcmd.BuildConfigFromFlags("", kubeconfig)
	}
	c, err := rest.InClusterConfig()
	if errors.Is(err, rest.ErrNotInCluster) {
		return nil, fmt.Errorf("not in a cluster and no --kubeconfig/KUBECONFIG: %w", err)
	}
	return c, err
}
