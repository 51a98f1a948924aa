package config_test

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/datadog-csi/datadog-csi/driver/internal/config"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestDefaults(t *testing.T) {
	c, err := config.Parse([]string{"--node-id=node-1"}, env(nil), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	want := config.Config{
		DriverName: "k8s.csi.datadoghq.com", CSIEndpoint: "unix:///csi/csi.sock", CSISocketPath: "/csi/csi.sock",
		APMSocketPath: "/var/run/datadog/apm.socket", DSDSocketPath: "/var/run/datadog/dsd.socket", NodeID: "node-1",
		HealthAddress: ":9808", MetricsAddress: ":9809", LogLevel: slog.LevelInfo, LogFormat: "json",
		KubeletRegistrationDir: "/registration", KubeletRegistrationPath: "/var/lib/kubelet/plugins/k8s.csi.datadoghq.com/csi.sock",
	}
	if c != want {
		t.Errorf("defaults:\n got %+v\nwant %+v", c, want)
	}
	if got := c.RegistrationSocketPath(); got != "/registration/k8s.csi.datadoghq.com-reg.sock" {
		t.Errorf("RegistrationSocketPath = %s", got)
	}
}

func TestFlagWinsOverEnvWinsOverDefault(t *testing.T) {
	vars := map[string]string{
		"NODE_ID": "from-env", "DD_APM_HOST_SOCKET_PATH": "/env/apm.socket", "DD_DSD_HOST_SOCKET_PATH": "/env/dsd.socket",
		"DD_LOG_LEVEL": "debug", "DD_REGISTER_WITH_KUBELET": "true", "DD_METRICS_ADDRESS": "",
	}
	c, err := config.Parse([]string{"--apm-host-socket-path=/flag/apm.socket", "--log-format=text"}, env(vars), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if c.NodeID != "from-env" || c.APMSocketPath != "/flag/apm.socket" || c.DSDSocketPath != "/env/dsd.socket" ||
		c.LogLevel != slog.LevelDebug || c.LogFormat != "text" || !c.RegisterWithKubelet || c.MetricsAddress != ":9809" {
		t.Errorf("got %+v", c)
	}
	// The bare boolean form works, and a flag can turn off what env turned on.
	c, err = config.Parse([]string{"--register-with-kubelet=false", "--metrics-address="}, env(vars), &bytes.Buffer{})
	if err != nil || c.RegisterWithKubelet || c.MetricsAddress != "" {
		t.Errorf("got %+v, %v", c, err)
	}
	c, err = config.Parse([]string{"--node-id=n", "--register-with-kubelet"}, env(nil), &bytes.Buffer{})
	if err != nil || !c.RegisterWithKubelet {
		t.Errorf("bare --register-with-kubelet: %+v, %v", c, err)
	}
}

func TestEveryBadSettingIsNamed(t *testing.T) {
	_, err := config.Parse([]string{
		"--driver-name=-bad-", "--csi-endpoint=unix://csi.sock", "--apm-host-socket-path=/", "--dsd-host-socket-path=/a/../b",
		"--health-address=localhost", "--metrics-address=:99999", "--log-level=trace", "--log-format=logfmt",
		"--register-with-kubelet=maybe", "--kubelet-registration-dir=", "--kubelet-registration-path=csi.sock",
	}, env(nil), &bytes.Buffer{})
	if err == nil {
		t.Fatal("accepted")
	}
	for _, name := range []string{"driver-name", "csi-endpoint", "apm-host-socket-path", "dsd-host-socket-path", "node-id",
		"health-address", "metrics-address", "log-level", "log-format", "register-with-kubelet", "kubelet-registration-dir", "kubelet-registration-path"} {
		if !strings.Contains(err.Error(), "--"+name+" [") {
			t.Errorf("error does not name --%s:\n%v", name, err)
		}
	}
}
