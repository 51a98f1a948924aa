package server

import (
	"context"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"

	"github.com/datadog-csi/datadog-csi/driver/internal/mounter"
	"github.com/datadog-csi/datadog-csi/driver/internal/testenv"
)

// BenchmarkPublishUnpublish compares, per volume kind, side by side in one
// run (so a noisy machine affects both alike):
//
//   - grpc: one NodePublishVolume plus one NodeUnpublishVolume over gRPC on
//     the driver's unix socket, as the kubelet calls them, real mounts;
//   - transport: the same two calls over gRPC to a driver whose mount and
//     unmount system calls do nothing: everything but the mount table
//     changes, i.e. the least a gRPC driver can cost here;
//   - handler: the same two calls on the service directly, without gRPC,
//     to show what the transport costs;
//   - floor: the least any driver must do with bare system calls: create
//     the target, bind mount, remount read-only, unmount, remove;
//   - floor-busy: floor while another thread of this process spins on a
//     CPU, as the gRPC transport's threads do during the grpc variant:
//     umount waits for an expedited RCU grace period, which is cheap only
//     while every other CPU is idle.
//
// Besides wall time it reports cpu-ns/op, the process's user+system CPU
// per operation (client and server are in this process), which a loaded
// machine disturbs far less than wall time. Target: grpc <= 2x floor.
func BenchmarkPublishUnpublish(b *testing.B) {
	testenv.RequireRoot(b)
	agent := testenv.NewAgent(b)
	d := startDriver(b, agent.APMSocket, agent.DSDSocket, "--log-level=info")
	noMounts := startDriverWith(b, mounter.Syscalls{
		Mount:   func(string, string, string, uintptr, string) error { return nil },
		Unmount: func(string, int) error { return nil },
	}, agent.APMSocket, agent.DSDSocket, "--log-level=info")
	variants := []struct {
		name string
		node node
	}{
		{"grpc", grpcNode{d.node}},
		{"transport", grpcNode{noMounts.node}},
		{"handler", d.driver.node},
	}
	for _, kind := range testenv.VolumeKinds {
		for _, variant := range variants {
			b.Run(kind.Name+"/"+variant.name, func(b *testing.B) {
				target := filepath.Join(testenv.TmpfsDir(b), "mount")
				publish := publishRequest(target, map[string]string{"type": kind.Type})
				unpublish := &csi.NodeUnpublishVolumeRequest{VolumeId: publish.VolumeId, TargetPath: target}
				ctx := context.Background()
				cpu := startCPU(b)
				for b.Loop() {
					if _, err := variant.node.NodePublishVolume(ctx, publish); err != nil {
						b.Fatal(err)
					}
					if _, err := variant.node.NodeUnpublishVolume(ctx, unpublish); err != nil {
						b.Fatal(err)
					}
				}
				cpu.report(b)
			})
		}
		floor := func(b *testing.B) {
			target := filepath.Join(testenv.TmpfsDir(b), "mount")
			cpu := startCPU(b)
			for b.Loop() {
				if err := testenv.FloorPair(agent.Source(kind), target, kind.Directory); err != nil {
					b.Fatal(err)
				}
			}
			cpu.report(b)
		}
		b.Run(kind.Name+"/floor", floor)
		b.Run(kind.Name+"/floor-busy", func(b *testing.B) {
			defer spinOtherCPU()()
			floor(b)
		})
	}
}

// node is what the benchmark calls: the service itself, or a gRPC client.
type node interface {
	NodePublishVolume(context.Context, *csi.NodePublishVolumeRequest) (*csi.NodePublishVolumeResponse, error)
	NodeUnpublishVolume(context.Context, *csi.NodeUnpublishVolumeRequest) (*csi.NodeUnpublishVolumeResponse, error)
}

// grpcNode is a node reached through the driver's unix socket.
type grpcNode struct{ client csi.NodeClient }

func (n grpcNode) NodePublishVolume(ctx context.Context, req *csi.NodePublishVolumeRequest) (*csi.NodePublishVolumeResponse, error) {
	return n.client.NodePublishVolume(ctx, req)
}

func (n grpcNode) NodeUnpublishVolume(ctx context.Context, req *csi.NodeUnpublishVolumeRequest) (*csi.NodeUnpublishVolumeResponse, error) {
	return n.client.NodeUnpublishVolume(ctx, req)
}

// spinOtherCPU keeps one OS thread of this process busy in user space until
// the returned function is called. Its CPU time counts in cpu-ns/op, so
// floor-busy is compared on wall time only.
func spinOtherCPU() (stop func()) {
	var done atomic.Bool
	stopped := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		defer close(stopped)
		for !done.Load() {
		}
	}()
	return func() { done.Store(true); <-stopped }
}

type cpuClock struct{ start time.Duration }

func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func startCPU(b *testing.B) cpuClock { return cpuClock{start: processCPU(b)} }

func (c cpuClock) report(b *testing.B) {
	b.ReportMetric(float64(processCPU(b)-c.start)/float64(b.N), "cpu-ns/op")
}

// BenchmarkProbe is one empty CSI round trip on the unix socket: the
// transport's share of each publish or unpublish.
func BenchmarkProbe(b *testing.B) {
	agent := testenv.NewAgent(b)
	d := startDriver(b, agent.APMSocket, agent.DSDSocket, "--log-level=info")
	ctx := context.Background()
	cpu := startCPU(b)
	for b.Loop() {
		if _, err := d.identity.Probe(ctx, &csi.ProbeRequest{}); err != nil {
			b.Fatal(err)
		}
	}
	cpu.report(b)
}
