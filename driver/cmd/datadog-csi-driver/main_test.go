package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/datadog-csi/datadog-csi/driver/internal/testenv"
	"github.com/datadog-csi/datadog-csi/pkg/datadog"
)

// asDriverEnv makes the test binary act as the driver binary, so the restart
// test runs real separate processes without building anything first.
const asDriverEnv = "DATADOG_CSI_TEST_AS_DRIVER"

// asEchoEnv makes the test binary an echo peer on the unix socket it names,
// for the raw socket round trip benchmark.
const asEchoEnv = "DATADOG_CSI_TEST_AS_ECHO"

func TestMain(m *testing.M) {
	if os.Getenv(asDriverEnv) == "1" {
		main()
		return
	}
	if socket := os.Getenv(asEchoEnv); socket != "" {
		os.Exit(echo(socket))
	}
	os.Exit(m.Run())
}

// driverProcess starts this test binary as the driver, waits until it
// answers Probe on its CSI socket and returns a client and a stop function.
func driverProcess(t testing.TB, endpoint string, args ...string) (node csi.NodeClient, stop func(), crash func()) {
	t.Helper()
	cmd := exec.Command(os.Args[0], append([]string{"--csi-endpoint=unix://" + endpoint, "--node-id=restart-node", "--health-address=", "--metrics-address="}, args...)...)
	cmd.Env = append(os.Environ(), asDriverEnv+"=1")
	var logs bytes.Buffer
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopped := false
	crash = func() {
		stopped = true
		cmd.Process.Kill()
		<-exited
	}
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("driver exited with %v; logs:\n%s", err, logs.String())
			}
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			t.Errorf("driver did not stop on SIGTERM within 15s")
		}
	}
	t.Cleanup(stop)

	conn, err := grpc.NewClient("unix:"+endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	identity := csi.NewIdentityClient(conn)
	deadline := time.Now().Add(15 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := identity.Probe(ctx, &csi.ProbeRequest{})
		cancel()
		if err == nil {
			break
		}
		select {
		case err := <-exited:
			t.Fatalf("driver exited before serving: %v; logs:\n%s", err, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("driver not serving within 15s: %v; logs:\n%s", err, logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return csi.NewNodeClient(conn), stop, crash
}

// TestRestartLeavesNoMounts publishes 50 volumes with one driver process,
// kills it (the harshest stop: no cleanup, a stale CSI socket left behind;
// the mounts must survive, pods still use them), and unpublishes them all
// with a new process.
func TestRestartLeavesNoMounts(t *testing.T) {
	testenv.RequireRoot(t)
	agent := testenv.NewAgent(t)
	endpoint := filepath.Join(testenv.ShortTempDir(t), "csi.sock")
	targets := testenv.TargetDir(t)
	socketArgs := []string{"--apm-host-socket-path=" + agent.APMSocket, "--dsd-host-socket-path=" + agent.DSDSocket}
	const volumes = 50
	ctx := context.Background()

	node, _, crash := driverProcess(t, endpoint, socketArgs...)
	for i := range volumes {
		typ := datadog.VolumeTypes[i%len(datadog.VolumeTypes)]
		_, err := node.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{
			VolumeId:   fmt.Sprintf("csi-%02d", i),
			TargetPath: filepath.Join(targets, fmt.Sprintf("pod-%02d", i)),
			VolumeCapability: &csi.VolumeCapability{
				AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
				AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
			},
			VolumeContext: map[string]string{datadog.AttrType: string(typ), datadog.AttrEphemeral: "true"},
		})
		if err != nil {
			t.Fatalf("publish %d (%s): %v", i, typ, err)
		}
	}
	crash()
	if info, err := os.Lstat(endpoint); err != nil || info.Mode().Type() != os.ModeSocket {
		t.Fatalf("the killed driver should have left its socket file: %v", err)
	}
	mounts, err := testenv.MountsUnder(targets)
	if err != nil || len(mounts) != volumes {
		t.Fatalf("after the first driver stopped: %d mounts (%v), want %d", len(mounts), err, volumes)
	}
	if got, err := testenv.DialAPM(filepath.Join(targets, "pod-00")); err != nil || got != testenv.Greeting {
		t.Errorf("volumes must keep working while no driver runs: %q, %v", got, err)
	}

	node, _, _ = driverProcess(t, endpoint, socketArgs...)
	for i := range volumes {
		_, err := node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{
			VolumeId:   fmt.Sprintf("csi-%02d", i),
			TargetPath: filepath.Join(targets, fmt.Sprintf("pod-%02d", i)),
		})
		if err != nil {
			t.Fatalf("unpublish %d: %v", i, err)
		}
	}
	if mounts, err := testenv.MountsUnder(targets); err != nil || len(mounts) != 0 {
		t.Fatalf("leaked mounts after the restart: %v (%v)", mounts, err)
	}
	entries, _ := os.ReadDir(targets)
	if len(entries) != 0 {
		t.Errorf("%d targets left behind", len(entries))
	}
}

func TestStartupRefusesBadConfiguration(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"node id missing", nil, nil, "--node-id [NODE_ID]"},
		{"relative socket path", []string{"--node-id=n", "--apm-host-socket-path=apm.socket"}, nil, "--apm-host-socket-path [DD_APM_HOST_SOCKET_PATH]"},
		{"dotdot in socket path from env", []string{"--node-id=n"}, map[string]string{"DD_DSD_HOST_SOCKET_PATH": "/var/run/../dsd.socket"}, "--dsd-host-socket-path [DD_DSD_HOST_SOCKET_PATH]"},
		{"tcp endpoint", []string{"--node-id=n", "--csi-endpoint=tcp://127.0.0.1:10000"}, nil, "--csi-endpoint"},
		{"bad driver name", []string{"--node-id=n", "--driver-name=Not_A_Name"}, nil, "--driver-name"},
		{"bad log level", []string{"--node-id=n", "--log-level=verbose"}, nil, "--log-level"},
		{"bad log format", []string{"--node-id=n", "--log-format=xml"}, nil, "--log-format"},
		{"bad bool from env", []string{"--node-id=n"}, map[string]string{"DD_REGISTER_WITH_KUBELET": "yes please"}, "--register-with-kubelet"},
		{"bad metrics address", []string{"--node-id=n", "--metrics-address=9809"}, nil, "--metrics-address"},
		{"same health and metrics address", []string{"--node-id=n", "--metrics-address=:9808"}, nil, "--metrics-address"},
		{"relative registration dir", []string{"--node-id=n", "--kubelet-registration-dir=registration"}, nil, "--kubelet-registration-dir"},
		{"stray argument", []string{"--node-id=n", "serve"}, nil, "unexpected argument"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr bytes.Buffer
			code := run(context.Background(), tt.args, func(k string) string { return tt.env[k] }, &stderr)
			if code == 0 || !strings.Contains(stderr.String(), tt.want) {
				t.Errorf("exit %d, stderr %q; want non-zero naming %q", code, stderr.String(), tt.want)
			}
		})
	}
}

func TestStartupRefusesToRemoveANonSocket(t *testing.T) {
	endpoint := filepath.Join(testenv.ShortTempDir(t), "csi.sock")
	if err := os.WriteFile(endpoint, []byte("not a socket"), 0o600); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	code := run(context.Background(), []string{"--node-id=n", "--csi-endpoint=unix://" + endpoint, "--health-address=", "--metrics-address="}, func(string) string { return "" }, &stderr)
	if code == 0 || !strings.Contains(stderr.String(), "not a socket") {
		t.Errorf("exit %d, stderr %q", code, stderr.String())
	}
	if b, _ := os.ReadFile(endpoint); string(b) != "not a socket" {
		t.Error("the file was changed")
	}
}
