package server

import (
	"bytes"
	"context"
	"net"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/datadog-csi/datadog-csi/driver/internal/config"
	"github.com/datadog-csi/datadog-csi/driver/internal/mounter"
	"github.com/datadog-csi/datadog-csi/driver/internal/testenv"
)

// runningDriver is a Driver serving on a unix socket in a temp directory.
type runningDriver struct {
	driver   *Driver
	cfg      config.Config
	conn     *grpc.ClientConn
	node     csi.NodeClient
	identity csi.IdentityClient
	logs     *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// startDriver parses args like the real binary (plus a test CSI endpoint and
// the given socket paths), runs the driver until the test ends, and
// connects a client.
func startDriver(t testing.TB, apmSocket, dsdSocket string, extraArgs ...string) *runningDriver {
	t.Helper()
	return startDriverWith(t, mounter.RealSyscalls, apmSocket, dsdSocket, extraArgs...)
}

// startDriverWith is startDriver with the mount system calls replaced by sys.
func startDriverWith(t testing.TB, sys mounter.Syscalls, apmSocket, dsdSocket string, extraArgs ...string) *runningDriver {
	t.Helper()
	endpoint := filepath.Join(testenv.ShortTempDir(t), "csi.sock")
	args := append([]string{
		"--csi-endpoint=unix://" + endpoint,
		"--apm-host-socket-path=" + apmSocket,
		"--dsd-host-socket-path=" + dsdSocket,
		"--node-id=test-node",
		"--health-address=",
		"--metrics-address=",
		"--log-level=debug",
	}, extraArgs...)
	cfg, err := config.Parse(args, func(string) string { return "" }, &bytes.Buffer{})
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	logs := &syncBuffer{}
	d, err := New(cfg, cfg.NewLogger(logs), sys)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx, func() { close(ready) }) }()
	select {
	case <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("driver did not start: %v", err)
	case <-time.After(10 * time.Second):
		cancel()
		t.Fatal("driver did not start within 10s")
	}
	conn, err := grpc.NewClient("unix:"+endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("driver Run: %v", err)
		}
	})
	return &runningDriver{driver: d, cfg: cfg, conn: conn, node: csi.NewNodeClient(conn), identity: csi.NewIdentityClient(conn), logs: logs}
}

// freeAddresses returns n distinct loopback host:ports nothing listens on
// right now: each is held until all are picked, so two never coincide.
func freeAddresses(t testing.TB, n int) []string {
	t.Helper()
	addrs := make([]string, n)
	for i := range addrs {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		addrs[i] = "127.0.0.1:" + strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	}
	return addrs
}

func mountCapability() *csi.VolumeCapability {
	return &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
	}
}

// publishRequest is what the kubelet sends for an inline volume of a pod
// whose CSIDriver has podInfoOnMount.
func publishRequest(target string, attrs map[string]string) *csi.NodePublishVolumeRequest {
	ctx := map[string]string{
		"csi.storage.k8s.io/pod.name":            "app-0",
		"csi.storage.k8s.io/pod.namespace":       "team-a",
		"csi.storage.k8s.io/pod.uid":             "0b0e8b1e-1111-2222-3333-444455556666",
		"csi.storage.k8s.io/ephemeral":           "true",
		"csi.storage.k8s.io/serviceAccount.name": "default",
	}
	for k, v := range attrs {
		ctx[k] = v
	}
	return &csi.NodePublishVolumeRequest{
		VolumeId:         "csi-" + filepath.Base(filepath.Dir(target)),
		TargetPath:       target,
		VolumeCapability: mountCapability(),
		VolumeContext:    ctx,
		Readonly:         false, // the driver mounts read-only anyway
	}
}
