// Package config reads the driver's settings from flags and environment
// variables (flag wins over env var, env var over default) and validates all
// of them at start, so a bad setting stops the driver with a message naming
// the flag instead of failing later on the first volume.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/datadog-csi/datadog-csi/driver/internal/volume"
	"github.com/datadog-csi/datadog-csi/pkg/datadog"
)

// Config is the validated configuration of one driver process.
type Config struct {
	DriverName string
	// CSIEndpoint is the unix:// URL given; CSISocketPath the path in it.
	CSIEndpoint   string
	CSISocketPath string
	APMSocketPath string
	DSDSocketPath string
	NodeID        string
	// HealthAddress and MetricsAddress are host:port; empty disables.
	HealthAddress  string
	MetricsAddress string
	LogLevel       slog.Level
	LogFormat      string
	// RegisterWithKubelet serves the kubelet plugin registration API on
	// RegistrationSocketPath(); KubeletRegistrationPath is the CSI socket
	// as the kubelet sees it on the host.
	RegisterWithKubelet     bool
	KubeletRegistrationDir  string
	KubeletRegistrationPath string
}

// RegistrationSocketPath is where the registration API is served.
func (c Config) RegistrationSocketPath() string {
	return filepath.Join(c.KubeletRegistrationDir, c.DriverName+"-reg.sock")
}

// Defaults.
const (
	DefaultCSIEndpoint             = "unix:///csi/csi.sock"
	DefaultHealthAddress           = ":9808"
	DefaultMetricsAddress          = ":9809"
	DefaultKubeletRegistrationDir  = "/registration"
	DefaultKubeletRegistrationPath = "/var/lib/kubelet/plugins/" + datadog.DriverName + "/csi.sock"
)

// option ties a flag to its env var.
type option struct {
	flag, env, def, usage string
}

var options = []option{
	{"driver-name", "DD_DRIVER_NAME", datadog.DriverName, "CSI driver name"},
	{"csi-endpoint", "DD_CSI_ENDPOINT", DefaultCSIEndpoint, "unix:// URL of the CSI socket to serve"},
	{"apm-host-socket-path", "DD_APM_HOST_SOCKET_PATH", datadog.DefaultAPMSocketPath, "the trace agent's socket on the host"},
	{"dsd-host-socket-path", "DD_DSD_HOST_SOCKET_PATH", datadog.DefaultDSDSocketPath, "DogStatsD's socket on the host"},
	{"node-id", "NODE_ID", "", "this node's name (required)"},
	{"health-address", "DD_HEALTH_ADDRESS", DefaultHealthAddress, "host:port serving GET /healthz (runs the CSI Probe); empty disables"},
	{"metrics-address", "DD_METRICS_ADDRESS", DefaultMetricsAddress, "host:port serving Prometheus /metrics; empty disables"},
	{"log-level", "DD_LOG_LEVEL", "info", "debug, info, warn or error"},
	{"log-format", "DD_LOG_FORMAT", "json", "json or text"},
	{"register-with-kubelet", "DD_REGISTER_WITH_KUBELET", "false", "serve the kubelet plugin registration API in-process (no node-driver-registrar sidecar needed)"},
	{"kubelet-registration-dir", "DD_KUBELET_REGISTRATION_DIR", DefaultKubeletRegistrationDir, "directory (the host's plugins_registry) for <driver-name>-reg.sock"},
	{"kubelet-registration-path", "DD_KUBELET_REGISTRATION_PATH", DefaultKubeletRegistrationPath, "the CSI socket's path as the kubelet on the host sees it"},
}

// ErrHelp is returned when -h or --help was given; usage was printed.
var ErrHelp = flag.ErrHelp

// Parse reads args (without the program name) and env vars through getenv,
// and validates the result. Usage and parse errors go to output.
func Parse(args []string, getenv func(string) string, output io.Writer) (Config, error) {
	fs := flag.NewFlagSet("datadog-csi-driver", flag.ContinueOnError)
	fs.SetOutput(output)
	values := make(map[string]*textValue, len(options))
	for _, o := range options {
		v := &textValue{text: o.def, isBool: o.def == "false"}
		if fromEnv, ok := lookup(getenv, o.env); ok {
			v.text = fromEnv
		}
		values[o.flag] = v
		fs.Var(v, o.flag, fmt.Sprintf("%s [env %s] (default %q)", o.usage, o.env, o.def))
	}
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected argument %q: every setting is a --flag", fs.Arg(0))
	}
	get := func(name string) string { return values[name].text }
	return build(get)
}

// textValue keeps a flag's raw text for validation after parsing; boolean
// options also accept the bare form --register-with-kubelet.
type textValue struct {
	text   string
	isBool bool
}

func (v *textValue) String() string {
	if v == nil {
		return ""
	}
	return v.text
}
func (v *textValue) Set(s string) error { v.text = s; return nil }
func (v *textValue) IsBoolFlag() bool   { return v.isBool }

func lookup(getenv func(string) string, key string) (string, bool) {
	v := getenv(key)
	return v, v != ""
}

// driverNamePattern is the CSI spec's rule for plugin names: at most 63
// characters, alphanumerics, '-' and '.', starting and ending alphanumeric.
var driverNamePattern = regexp.MustCompile(`^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$`)

func build(get func(string) string) (Config, error) {
	var errs []error
	bad := func(flagName, format string, args ...any) {
		o := optionFor(flagName)
		errs = append(errs, fmt.Errorf("--%s [%s]: %s", flagName, o.env, fmt.Sprintf(format, args...)))
	}
	c := Config{
		DriverName:              get("driver-name"),
		CSIEndpoint:             get("csi-endpoint"),
		APMSocketPath:           get("apm-host-socket-path"),
		DSDSocketPath:           get("dsd-host-socket-path"),
		NodeID:                  get("node-id"),
		HealthAddress:           get("health-address"),
		MetricsAddress:          get("metrics-address"),
		LogFormat:               get("log-format"),
		KubeletRegistrationDir:  get("kubelet-registration-dir"),
		KubeletRegistrationPath: get("kubelet-registration-path"),
	}
	if !driverNamePattern.MatchString(c.DriverName) {
		bad("driver-name", "%q is not a valid CSI driver name (lowercase letters, digits, '-', '.', at most 63 characters)", c.DriverName)
	}
	if p, ok := strings.CutPrefix(c.CSIEndpoint, "unix://"); !ok {
		bad("csi-endpoint", "%q must be a unix:// URL, e.g. %s", c.CSIEndpoint, DefaultCSIEndpoint)
	} else if err := volume.CheckAbsoluteClean(p); err != nil {
		bad("csi-endpoint", "%v", err)
	} else {
		c.CSISocketPath = p
	}
	for _, name := range []string{"apm-host-socket-path", "dsd-host-socket-path"} {
		if err := volume.CheckAbsoluteClean(get(name)); err != nil {
			bad(name, "%v", err)
		} else if filepath.Dir(get(name)) == get(name) {
			bad(name, "%q must name a socket file", get(name))
		}
	}
	if strings.TrimSpace(c.NodeID) == "" {
		bad("node-id", "is required (in a DaemonSet: env NODE_ID from fieldRef spec.nodeName)")
	} else if len(c.NodeID) > 256 {
		bad("node-id", "is longer than the CSI limit of 256 bytes")
	}
	for _, name := range []string{"health-address", "metrics-address"} {
		if addr := get(name); addr != "" {
			if _, port, err := net.SplitHostPort(addr); err != nil {
				bad(name, "%q is not host:port (e.g. :9808), or empty to disable: %v", addr, err)
			} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
				bad(name, "%q has an invalid port", addr)
			}
		}
	}
	if c.HealthAddress != "" && c.HealthAddress == c.MetricsAddress {
		bad("metrics-address", "%q is also the health address; use another port", c.MetricsAddress)
	}
	if err := c.LogLevel.UnmarshalText([]byte(get("log-level"))); err != nil || !knownLevel(get("log-level")) {
		bad("log-level", "%q is not one of debug, info, warn, error", get("log-level"))
	}
	if c.LogFormat != "json" && c.LogFormat != "text" {
		bad("log-format", "%q is not one of json, text", c.LogFormat)
	}
	register, err := strconv.ParseBool(get("register-with-kubelet"))
	if err != nil {
		bad("register-with-kubelet", "%q is not a boolean (true or false)", get("register-with-kubelet"))
	}
	c.RegisterWithKubelet = register
	if err := volume.CheckAbsoluteClean(c.KubeletRegistrationDir); err != nil {
		bad("kubelet-registration-dir", "%v", err)
	}
	if err := volume.CheckAbsoluteClean(c.KubeletRegistrationPath); err != nil {
		bad("kubelet-registration-path", "%v", err)
	}
	if err := errors.Join(errs...); err != nil {
		return Config{}, err
	}
	return c, nil
}

func knownLevel(s string) bool {
	switch strings.ToLower(s) {
	case "debug", "info", "warn", "error":
		return true
	}
	return false
}

func optionFor(flagName string) option {
	for _, o := range options {
		if o.flag == flagName {
			return o
		}
	}
	panic("config: no option " + flagName)
}

// NewLogger returns the logger the configuration asks for, writing to w.
func (c Config) NewLogger(w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: c.LogLevel}
	if c.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}
