package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"

	"github.com/datadog-csi/datadog-csi/driver/internal/mounter"
	"github.com/datadog-csi/datadog-csi/driver/internal/testenv"
)

// BenchmarkPublishUnpublishProcess is the deployment's shape: the driver
// runs as its own process (this test binary re-executed as the driver) and
// the benchmark calls it like the kubelet, over gRPC on the unix socket.
// floor is the same mounts with bare syscalls, in the same run. The
// in-process variants, with the driver-only cost split out, are in
// driver/internal/server.
func BenchmarkPublishUnpublishProcess(b *testing.B) {
	testenv.RequireRoot(b)
	agent := testenv.NewAgent(b)
	endpoint := filepath.Join(testenv.ShortTempDir(b), "csi.sock")
	node, _, _ := driverProcess(b, endpoint, "--apm-host-socket-path="+agent.APMSocket, "--dsd-host-socket-path="+agent.DSDSocket)
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
	for _, kind := range []struct {
		name, typ, source string
		create            func(string) error
	}{
		{"directory", "APMSocketDirectory", agent.Dir, func(p string) error { return os.Mkdir(p, 0o750) }},
		{"file", "APMSocket", agent.APMSocket, func(p string) error { return os.WriteFile(p, nil, 0o640) }},
	} {
		b.Run(kind.name+"/grpc", func(b *testing.B) {
			target := filepath.Join(testenv.TmpfsDir(b), "mount")
			publish := &csi.NodePublishVolumeRequest{VolumeId: "v", TargetPath: target, VolumeCapability: capability,
				VolumeContext: map[string]string{"type": kind.typ, "csi.storage.k8s.io/ephemeral": "true",
					"csi.storage.k8s.io/pod.name": "app-0", "csi.storage.k8s.io/pod.namespace": "team-a"}}
			unpublish := &csi.NodeUnpublishVolumeRequest{VolumeId: "v", TargetPath: target}
			ctx := context.Background()
			for b.Loop() {
				if _, err := node.NodePublishVolume(ctx, publish); err != nil {
					b.Fatal(err)
				}
				if _, err := node.NodeUnpublishVolume(ctx, unpublish); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(kind.name+"/floor", func(b *testing.B) {
			target := filepath.Join(testenv.TmpfsDir(b), "mount")
			for b.Loop() {
				if err := kind.create(target); err != nil {
					b.Fatal(err)
				}
				if err := unix.Mount(kind.source, target, "", unix.MS_BIND, ""); err != nil {
					b.Fatal(err)
				}
				if err := unix.Mount("", target, "", unix.MS_BIND|unix.MS_REMOUNT|mounter.ReadOnlyFlags, ""); err != nil {
					b.Fatal(err)
				}
				if err := unix.Unmount(target, 0); err != nil {
					b.Fatal(err)
				}
				if err := os.Remove(target); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
