package server

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"

	"github.com/datadog-csi/datadog-csi/driver/internal/testenv"
)

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func TestHealthMetricsAndKubeletRegistration(t *testing.T) {
	agent := testenv.NewAgent(t)
	addrs := freeAddresses(t, 2)
	health, metricsAddr := addrs[0], addrs[1]
	registrationDir := testenv.ShortTempDir(t)
	d := startDriver(t, agent.APMSocket, agent.DSDSocket,
		"--health-address="+health, "--metrics-address="+metricsAddr,
		"--register-with-kubelet", "--kubelet-registration-dir="+registrationDir,
		"--kubelet-registration-path=/var/lib/kubelet/plugins/k8s.csi.datadoghq.com/csi.sock")

	if code, body := httpGet(t, "http://"+health+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz: %d %q", code, body)
	}
	if code, body := httpGet(t, "http://"+metricsAddr+"/metrics"); code != http.StatusOK || !strings.Contains(body, "datadog_csi_driver_build_info") {
		t.Errorf("/metrics: %d, build info missing", code)
	}

	socket := filepath.Join(registrationDir, "k8s.csi.datadoghq.com-reg.sock")
	conn, err := grpc.NewClient("unix:"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	registration := registerapi.NewRegistrationClient(conn)
	info, err := registration.GetInfo(context.Background(), &registerapi.InfoRequest{})
	if err != nil {
		t.Fatalf("GetInfo on %s: %v", socket, err)
	}
	if info.Type != "CSIPlugin" || info.Name != "k8s.csi.datadoghq.com" || info.Endpoint != "/var/lib/kubelet/plugins/k8s.csi.datadoghq.com/csi.sock" || len(info.SupportedVersions) == 0 {
		t.Errorf("GetInfo = %+v", info)
	}
	// The kubelet rejects the plugin: /healthz turns unhealthy so the
	// container restarts and registration is retried.
	if _, err := registration.NotifyRegistrationStatus(context.Background(), &registerapi.RegistrationStatus{PluginRegistered: false, Error: "version mismatch"}); err != nil {
		t.Fatal(err)
	}
	if code, body := httpGet(t, "http://"+health+"/healthz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "version mismatch") {
		t.Errorf("/healthz after a rejected registration: %d %q", code, body)
	}
	registration.NotifyRegistrationStatus(context.Background(), &registerapi.RegistrationStatus{PluginRegistered: true})
	if code, _ := httpGet(t, "http://"+health+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz after a successful registration: %d", code)
	}
	// Without a reachable CSI socket the kubelet cannot call the driver.
	moved := d.cfg.CSISocketPath + ".moved"
	if err := os.Rename(d.cfg.CSISocketPath, moved); err != nil {
		t.Fatal(err)
	}
	if code, body := httpGet(t, "http://"+health+"/healthz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "CSI socket") {
		t.Errorf("/healthz without the CSI socket: %d %q", code, body)
	}
	if err := os.Rename(moved, d.cfg.CSISocketPath); err != nil {
		t.Fatal(err)
	}
}

func TestStartRemovesStaleSocketsOnly(t *testing.T) {
	agent := testenv.NewAgent(t)
	t.Run("stale socket", func(t *testing.T) {
		dir := testenv.ShortTempDir(t)
		stale := filepath.Join(dir, "csi.sock")
		l, err := net.Listen("unix", stale)
		if err != nil {
			t.Fatal(err)
		}
		l.(*net.UnixListener).SetUnlinkOnClose(false)
		l.Close()
		if _, err := listenUnix(stale); err != nil {
			t.Fatalf("a stale socket must be replaced: %v", err)
		}
	})
	t.Run("live socket", func(t *testing.T) {
		if _, err := listenUnix(agent.APMSocket); err == nil || !strings.Contains(err.Error(), "another running process") {
			t.Fatalf("a socket some process serves must not be removed: %v", err)
		}
	})
	t.Run("regular file", func(t *testing.T) {
		path := filepath.Join(testenv.ShortTempDir(t), "csi.sock")
		os.WriteFile(path, nil, 0o600)
		if _, err := listenUnix(path); err == nil || !strings.Contains(err.Error(), "not a socket") {
			t.Fatalf("got %v", err)
		}
	})
}
