package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/datadog-csi/datadog-csi/pkg/datadog"
	"github.com/datadog-csi/datadog-csi/webhook/pkg/app"
	"github.com/datadog-csi/datadog-csi/webhook/pkg/mutate"
	"github.com/datadog-csi/datadog-csi/webhook/pkg/podsecurity"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// inject mutates a pod read from a file as the webhook would, prints it as
// YAML on stdout and the Pod Security verdicts on stderr. It exits 0 when
// it ran, whatever the verdicts, so it can be used to explore.
func inject(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("inject", flag.ContinueOnError)
	fs.SetOutput(stderr)
	defaults := app.DefaultConfig()
	file := fs.String("f", "", "pod manifest, YAML or JSON (- for stdin)")
	mode := fs.String("mode", string(datadog.ModeAuto), "global mode: hostip, service, socket, csi or auto")
	socketVolumes := fs.Bool("type-socket-volumes", false, "mount the socket files rather than their directories")
	unlabelled := fs.Bool("mutate-unlabelled", false, "mutate the pod even without the "+datadog.LabelEnabled+" label")
	nsLabels := fs.String("namespace-labels", "", "labels of the pod's namespace, k=v,... (mode auto reads pod-security.kubernetes.io/enforce)")
	namespace := fs.String("namespace", "", "the pod's namespace (default: metadata.namespace, else \"default\")")
	csiInstalled := fs.Bool("csi-driver-installed", true, "mode auto: whether the CSIDriver "+datadog.DriverName+" exists")
	apmSocket := fs.String("apm-socket-path", defaults.APMSocketPath, "trace agent socket on the host")
	dsdSocket := fs.String("dsd-socket-path", defaults.DSDSocketPath, "DogStatsD socket on the host")
	excluded := fs.String("excluded-namespaces", "", "comma-separated namespaces never mutated; kube-system always is, as in the webhook")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *file == "" {
		fmt.Fprintln(stderr, "inject: -f is required (a pod manifest, or - for stdin)")
		return 2
	}
	var raw []byte
	var err error
	if *file == "-" {
		raw, err = io.ReadAll(stdin)
	} else {
		raw, err = os.ReadFile(*file)
	}
	if err != nil {
		fmt.Fprintf(stderr, "inject: %v\n", err)
		return 1
	}
	var pod corev1.Pod
	if err := yaml.UnmarshalStrict(raw, &pod); err != nil {
		fmt.Fprintf(stderr, "inject: -f %s: not a pod: %v\n", *file, err)
		return 1
	}
	if pod.Kind != "" && pod.Kind != "Pod" {
		fmt.Fprintf(stderr, "inject: -f %s: kind %q: only Pod is supported\n", *file, pod.Kind)
		return 1
	}
	ns := *namespace
	if ns == "" {
		ns = pod.Namespace
	}
	if ns == "" {
		ns = "default"
	}
	labels := map[string]string{}
	for _, kv := range strings.Split(*nsLabels, ",") {
		if kv = strings.TrimSpace(kv); kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			fmt.Fprintf(stderr, "inject: --namespace-labels: %q is not k=v\n", kv)
			return 2
		}
		labels[k] = v
	}
	parsedMode, ok := datadog.ParseMode(*mode)
	if !ok {
		fmt.Fprintf(stderr, "inject: --mode %q: want hostip, service, socket, csi or auto\n", *mode)
		return 2
	}
	// The webhook's own flags give the mutation settings, so the preview
	// excludes what the webhook excludes.
	cfg := defaults
	cfg.Mode, cfg.TypeSocketVolumes, cfg.MutateUnlabelled = string(parsedMode), *socketVolumes, *unlabelled
	cfg.APMSocketPath, cfg.DSDSocketPath = *apmSocket, *dsdSocket
	cfg.ExcludedNamespaces, cfg.AgentServiceNamespace = *excluded, "datadog"
	m, err := mutate.New(cfg.MutateConfig(), mutate.StaticClusterState{CSIDriver: *csiInstalled, Namespaces: map[string]map[string]string{ns: labels}})
	if err != nil {
		fmt.Fprintf(stderr, "inject: %v\n", err)
		return 2
	}
	out := m.MutatePod(&pod, ns)
	// Through JSON first so the output has the API's field names and
	// omits what the API omits.
	js, err := json.Marshal(&pod)
	if err == nil {
		var y []byte
		if y, err = yaml.JSONToYAML(js); err == nil {
			_, err = stdout.Write(y)
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "inject: %v\n", err)
		return 1
	}
	switch {
	case out.Skipped != "":
		fmt.Fprintf(stderr, "# not mutated: %s\n", out.Skipped)
	default:
		fmt.Fprintf(stderr, "# mode %s, volumes added: %v\n", out.Mode, out.InjectedVolumes)
	}
	for _, w := range out.Warnings {
		fmt.Fprintf(stderr, "# warning: %s\n", w)
	}
	verdicts, err := podsecurity.EvaluateAll(&pod)
	if err != nil {
		fmt.Fprintf(stderr, "inject: %v\n", err)
		return 1
	}
	for _, v := range verdicts {
		fmt.Fprintf(stderr, "# pod security %s\n", v)
	}
	return 0
}
