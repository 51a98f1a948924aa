// Package app assembles the webhook process of `datadog-csi-webhook serve`:
// its flags, their validation, and the servers, caches and certificate
// source it runs. It is a package rather than main so the integration
// tests run the very same webhook in-process.
package app

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/datadog-csi/datadog-csi/pkg/datadog"
	"github.com/datadog-csi/datadog-csi/webhook/pkg/mutate"
	"k8s.io/apimachinery/pkg/util/validation"
)

// TLS modes.
const (
	TLSSelfManaged    = "selfManaged"
	TLSCertManager    = "certManager"
	TLSExistingSecret = "existingSecret"
)

// Config is everything `serve` is told by its flags.
type Config struct {
	ListenAddress         string
	ProbeAddress          string
	Mode                  string
	TypeSocketVolumes     bool
	MutateUnlabelled      bool
	APMSocketPath         string
	DSDSocketPath         string
	AgentServiceName      string
	AgentServiceNamespace string
	ClusterDomain         string
	ExcludedNamespaces    string
	Namespace             string
	TLSMode               string
	TLSCertDir            string
	TLSSecretName         string
	WebhookConfigName     string
	ServiceName           string
	LogLevel              string
	LogFormat             string
	// ShutdownDelay is how long Serve keeps answering admissions after its
	// context ends, with /readyz failing, before it closes its listeners;
	// 0 closes them at once.
	ShutdownDelay time.Duration

	// Not flags: knobs for tests.

	// ExtraIPs are added to a self-managed serving certificate.
	ExtraIPs []net.IP
	// CAValidity of a self-managed CA (default 10 years) and CertValidity
	// of its serving certificate (default 1 year).
	CAValidity   time.Duration
	CertValidity time.Duration
	// CATrustPropagation is how long a renewed self-managed CA is trusted
	// before it signs (default 1 minute).
	CATrustPropagation time.Duration
	// CertCheckInterval is how often certificates are re-read or renewed
	// (default 1 minute self-managed, 10 seconds from files).
	CertCheckInterval time.Duration
	// DisableKeepAlives makes every admission a new TLS handshake, so a
	// test sees each rotated certificate in use.
	DisableKeepAlives bool
}

// RegisterFlags binds the flags of `serve` to c, with their defaults.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.ListenAddress, "listen-address", ":8443", "HTTPS address of /injectconfig, /healthz, /readyz")
	fs.StringVar(&c.ProbeAddress, "probe-address", ":8080", "plain HTTP address of /healthz, /readyz, /metrics (empty: off)")
	fs.StringVar(&c.Mode, "mode", string(datadog.ModeAuto), "global mode: hostip, service, socket, csi or auto")
	fs.BoolVar(&c.TypeSocketVolumes, "type-socket-volumes", false, "mount the socket files rather than their directories")
	fs.BoolVar(&c.MutateUnlabelled, "mutate-unlabelled", false, "mutate pods without the "+datadog.LabelEnabled+" label")
	fs.StringVar(&c.APMSocketPath, "apm-socket-path", datadog.DefaultAPMSocketPath, "trace agent socket on the host")
	fs.StringVar(&c.DSDSocketPath, "dsd-socket-path", datadog.DefaultDSDSocketPath, "DogStatsD socket on the host")
	fs.StringVar(&c.AgentServiceName, "agent-service-name", "datadog-agent", "agent Service (service mode)")
	fs.StringVar(&c.AgentServiceNamespace, "agent-service-namespace", "", "namespace of the agent Service (default: --namespace)")
	fs.StringVar(&c.ClusterDomain, "cluster-domain", "cluster.local", "cluster DNS domain (service mode, certificate names)")
	fs.StringVar(&c.ExcludedNamespaces, "excluded-namespaces", "", "comma-separated namespaces never mutated; kube-system and --namespace never are, whatever this says")
	fs.StringVar(&c.Namespace, "namespace", os.Getenv("POD_NAMESPACE"), "the webhook's own namespace (default $POD_NAMESPACE)")
	fs.StringVar(&c.TLSMode, "tls-mode", TLSSelfManaged, "serving certificate source: selfManaged, certManager or existingSecret")
	fs.StringVar(&c.TLSCertDir, "tls-cert-dir", "/etc/datadog-csi-webhook/certs", "directory of tls.crt and tls.key, hot-reloaded (certManager, existingSecret)")
	fs.StringVar(&c.TLSSecretName, "tls-secret-name", "", "Secret holding the self-managed CA and certificate (selfManaged)")
	fs.StringVar(&c.WebhookConfigName, "webhook-config-name", "", "MutatingWebhookConfiguration whose caBundle is kept current (selfManaged)")
	fs.StringVar(&c.ServiceName, "service-name", "", "the webhook's Service, whose DNS names the certificate carries (selfManaged)")
	fs.StringVar(&c.LogLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&c.LogFormat, "log-format", "json", "json or text")
	fs.DurationVar(&c.ShutdownDelay, "shutdown-delay", 5*time.Second, "after SIGTERM, keep serving admissions this long with /readyz failing, so the Service's endpoints drop the pod before its listeners close (0: close at once)")
}

// DefaultConfig returns the flag defaults.
func DefaultConfig() Config {
	var c Config
	c.RegisterFlags(flag.NewFlagSet("defaults", flag.ContinueOnError))
	return c
}

// Validate checks every flag and names the bad one.
func (c *Config) Validate() error {
	var errs []error
	bad := func(flagName, format string, args ...any) {
		errs = append(errs, fmt.Errorf("--%s: %s", flagName, fmt.Sprintf(format, args...)))
	}
	if c.Namespace == "" {
		bad("namespace", "required (or set POD_NAMESPACE, e.g. from the downward API)")
	} else if e := validation.IsDNS1123Label(c.Namespace); len(e) > 0 {
		bad("namespace", "%q: %s", c.Namespace, strings.Join(e, "; "))
	}
	if _, ok := datadog.ParseMode(c.Mode); !ok {
		bad("mode", "%q: want hostip, service, socket, csi or auto", c.Mode)
	}
	for flagName, p := range map[string]string{"apm-socket-path": c.APMSocketPath, "dsd-socket-path": c.DSDSocketPath} {
		if !path.IsAbs(p) || path.Clean(p) != p || p == "/" {
			bad(flagName, "%q: want a clean absolute path to a socket file", p)
		}
	}
	if e := validation.IsDNS1035Label(c.AgentServiceName); len(e) > 0 {
		bad("agent-service-name", "%q: %s", c.AgentServiceName, strings.Join(e, "; "))
	}
	if c.AgentServiceNamespace != "" {
		if e := validation.IsDNS1123Label(c.AgentServiceNamespace); len(e) > 0 {
			bad("agent-service-namespace", "%q: %s", c.AgentServiceNamespace, strings.Join(e, "; "))
		}
	}
	if e := validation.IsDNS1123Subdomain(c.ClusterDomain); len(e) > 0 {
		bad("cluster-domain", "%q: %s", c.ClusterDomain, strings.Join(e, "; "))
	}
	for _, ns := range c.excluded() {
		if e := validation.IsDNS1123Label(ns); len(e) > 0 {
			bad("excluded-namespaces", "%q: %s", ns, strings.Join(e, "; "))
		}
	}
	if _, _, err := net.SplitHostPort(c.ListenAddress); err != nil {
		bad("listen-address", "%v", err)
	}
	if c.ProbeAddress != "" {
		if _, _, err := net.SplitHostPort(c.ProbeAddress); err != nil {
			bad("probe-address", "%v", err)
		}
	}
	switch c.TLSMode {
	case TLSSelfManaged:
		if c.TLSSecretName == "" {
			bad("tls-secret-name", "required with --tls-mode=%s", TLSSelfManaged)
		}
		if c.WebhookConfigName == "" {
			bad("webhook-config-name", "required with --tls-mode=%s", TLSSelfManaged)
		}
		if c.ServiceName == "" {
			bad("service-name", "required with --tls-mode=%s", TLSSelfManaged)
		} else if e := validation.IsDNS1035Label(c.ServiceName); len(e) > 0 {
			bad("service-name", "%q: %s", c.ServiceName, strings.Join(e, "; "))
		}
	case TLSCertManager, TLSExistingSecret:
		if c.TLSCertDir == "" {
			bad("tls-cert-dir", "required with --tls-mode=%s", c.TLSMode)
		}
	default:
		bad("tls-mode", "%q: want %s, %s or %s", c.TLSMode, TLSSelfManaged, TLSCertManager, TLSExistingSecret)
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		bad("log-level", "%v", err)
	}
	if c.LogFormat != "json" && c.LogFormat != "text" {
		bad("log-format", "%q: want json or text", c.LogFormat)
	}
	if c.ShutdownDelay < 0 {
		bad("shutdown-delay", "%v: must be non-negative (0: no delay)", c.ShutdownDelay)
	}
	return errors.Join(errs...)
}

// alwaysExcludedNamespace is never mutated, whatever --excluded-namespaces
// says: a broken or slow webhook must not stand in the way of the control
// plane's own pods.
const alwaysExcludedNamespace = "kube-system"

// excluded lists --excluded-namespaces as given.
func (c *Config) excluded() []string {
	var out []string
	for _, ns := range strings.Split(c.ExcludedNamespaces, ",") {
		if ns = strings.TrimSpace(ns); ns != "" {
			out = append(out, ns)
		}
	}
	return out
}

// allExcluded is every namespace never mutated: kube-system,
// --excluded-namespaces and --namespace (the webhook must not depend on
// itself), without duplicates.
func (c *Config) allExcluded() []string {
	var out []string
	for _, ns := range append(append([]string{alwaysExcludedNamespace}, c.excluded()...), c.Namespace) {
		if ns != "" && !slices.Contains(out, ns) {
			out = append(out, ns)
		}
	}
	return out
}

// MutateConfig is the mutation setting the flags describe.
func (c *Config) MutateConfig() mutate.Config {
	mode, _ := datadog.ParseMode(c.Mode)
	agentNS := c.AgentServiceNamespace
	if agentNS == "" {
		agentNS = c.Namespace
	}
	return mutate.Config{
		Mode:                  mode,
		TypeSocketVolumes:     c.TypeSocketVolumes,
		MutateUnlabelled:      c.MutateUnlabelled,
		APMSocketPath:         c.APMSocketPath,
		DSDSocketPath:         c.DSDSocketPath,
		AgentServiceName:      c.AgentServiceName,
		AgentServiceNamespace: agentNS,
		ClusterDomain:         c.ClusterDomain,
		ExcludedNamespaces:    c.allExcluded(),
	}
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("%q: want debug, info, warn or error", s)
	}
	return l, nil
}

// NewLogger returns the logger the flags ask for.
func (c *Config) NewLogger() *slog.Logger {
	level, _ := parseLevel(c.LogLevel)
	opts := &slog.HandlerOptions{Level: level}
	if c.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewJSONHandler(os.Stderr, opts))
}
