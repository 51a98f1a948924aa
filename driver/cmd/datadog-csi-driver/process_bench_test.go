package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/datadog-csi/datadog-csi/driver/internal/testenv"
)

// BenchmarkPublishUnpublishProcess is the deployment's shape: the driver
// runs as its own process (this test binary re-executed as the driver) and
// the benchmark calls it over gRPC on the unix socket:
//
//   - grpc: one connection for every call, the cheapest way to call;
//   - kubelet: a new connection per call, which is what the kubelet's CSI
//     client does (pkg/volume/csi/csi_client.go dials, calls, closes);
//   - floor: the same mounts with bare syscalls, in the same run;
//   - empty-rpc: one NodeGetCapabilities, the transport's share of a call;
//   - raw-socket: one 300-byte write and its echo between two processes
//     on a unix socket, what the kernel alone costs for a round trip.
//
// The in-process variants, with the driver-only cost split out, are in
// driver/internal/server.
func BenchmarkPublishUnpublishProcess(b *testing.B) {
	testenv.RequireRoot(b)
	agent := testenv.NewAgent(b)
	endpoint := filepath.Join(testenv.ShortTempDir(b), "csi.sock")
	node, _, _ := driverProcess(b, endpoint, "--apm-host-socket-path="+agent.APMSocket, "--dsd-host-socket-path="+agent.DSDSocket)
	b.Run("raw-socket", benchmarkRawSocketRoundTrip)
	b.Run("empty-rpc", func(b *testing.B) { // NodeGetCapabilities: the transport's share
		for b.Loop() {
			if _, err := node.NodeGetCapabilities(context.Background(), &csi.NodeGetCapabilitiesRequest{}); err != nil {
				b.Fatal(err)
			}
		}
	})
	capability := &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
	}
	// Each variant is how the client reaches the driver for one call.
	variants := []struct {
		name string
		call func(b *testing.B, call func(context.Context, csi.NodeClient) error)
	}{
		{"grpc", func(b *testing.B, call func(context.Context, csi.NodeClient) error) {
			if err := call(context.Background(), node); err != nil {
				b.Fatal(err)
			}
		}},
		{"kubelet", func(b *testing.B, call func(context.Context, csi.NodeClient) error) {
			callOnNewConnection(b, endpoint, call)
		}},
	}
	for _, kind := range testenv.VolumeKinds {
		for _, variant := range variants {
			b.Run(kind.Name+"/"+variant.name, func(b *testing.B) {
				target := filepath.Join(testenv.TmpfsDir(b), "mount")
				publish := &csi.NodePublishVolumeRequest{VolumeId: "v", TargetPath: target, VolumeCapability: capability,
					VolumeContext: map[string]string{"type": kind.Type, "csi.storage.k8s.io/ephemeral": "true",
						"csi.storage.k8s.io/pod.name": "app-0", "csi.storage.k8s.io/pod.namespace": "team-a"}}
				unpublish := &csi.NodeUnpublishVolumeRequest{VolumeId: "v", TargetPath: target}
				for b.Loop() {
					variant.call(b, func(ctx context.Context, node csi.NodeClient) error {
						_, err := node.NodePublishVolume(ctx, publish)
						return err
					})
					variant.call(b, func(ctx context.Context, node csi.NodeClient) error {
						_, err := node.NodeUnpublishVolume(ctx, unpublish)
						return err
					})
				}
			})
		}
		b.Run(kind.Name+"/floor", func(b *testing.B) {
			target := filepath.Join(testenv.TmpfsDir(b), "mount")
			for b.Loop() {
				if err := testenv.FloorPair(agent.Source(kind), target, kind.Directory); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// callOnNewConnection makes one call on a connection of its own, closed
// afterwards, as the kubelet does for every CSI call.
func callOnNewConnection(b *testing.B, endpoint string, call func(context.Context, csi.NodeClient) error) {
	conn, err := grpc.NewClient("unix:"+endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	if err := call(context.Background(), csi.NewNodeClient(conn)); err != nil {
		b.Fatal(err)
	}
}

// benchmarkRawSocketRoundTrip sends 300 bytes (about a publish request's
// size) to an echo process and reads them back: the kernel's part of a call.
func benchmarkRawSocketRoundTrip(b *testing.B) {
	socket := filepath.Join(testenv.ShortTempDir(b), "echo.sock")
	listener, err := net.Listen("unix", socket)
	if err != nil {
		b.Fatal(err)
	}
	defer listener.Close()
	peer := exec.Command(os.Args[0])
	peer.Env = append(os.Environ(), asEchoEnv+"="+socket)
	peer.Stderr = os.Stderr
	if err := peer.Start(); err != nil {
		b.Fatal(err)
	}
	defer peer.Wait()
	conn, err := listener.Accept()
	if err != nil {
		peer.Process.Kill()
		b.Fatal(err)
	}
	defer conn.Close()
	message, reply := make([]byte, 300), make([]byte, 300)
	for b.Loop() {
		if _, err := conn.Write(message); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(conn, reply); err != nil {
			b.Fatal(err)
		}
	}
}

// echo is the peer of benchmarkRawSocketRoundTrip: it writes back what it
// reads until the connection closes.
func echo(socket string) int {
	conn, err := net.Dial("unix", socket)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if _, err := io.Copy(conn, conn); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}
