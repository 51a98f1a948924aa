package mounter_test

import (
	"path/filepath"
	"testing"

	"github.com/datadog-csi/datadog-csi/driver/internal/mounter"
	"github.com/datadog-csi/datadog-csi/driver/internal/testenv"
)

// BenchmarkMounter is Publish+Unpublish without gRPC, to split the cost
// of BenchmarkPublishUnpublish (driver/internal/server) between the mount
// work and the RPC.
func BenchmarkMounter(b *testing.B) {
	testenv.RequireRoot(b)
	agent := testenv.NewAgent(b)
	m := mounter.New(mounter.RealSyscalls)
	for _, kind := range testenv.VolumeKinds {
		b.Run(kind.Name, func(b *testing.B) {
			target := filepath.Join(testenv.TmpfsDir(b), "mount")
			for b.Loop() {
				if err := m.Publish(agent.Source(kind), kind.Directory, target); err != nil {
					b.Fatal(err)
				}
				if err := m.Unpublish(target); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
