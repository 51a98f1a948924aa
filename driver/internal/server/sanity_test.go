package server

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"

	. "github.com/onsi/ginkgo/v2"
	"github.com/onsi/ginkgo/v2/types"
	. "github.com/onsi/gomega"

	"github.com/kubernetes-csi/csi-test/v5/pkg/sanity"

	"github.com/datadog-csi/datadog-csi/driver/internal/testenv"
)

// specsNeedingAController are the csi-sanity specs (regular expressions) that create a volume
// through the Controller service first, which a node-only plugin does not
// serve. Every other spec runs and must pass (the capability-gated ones
// skip themselves).
var specsNeedingAController = []string{
	`\[Controller Server\]`,
	`\[GroupController `,
	`Node Service NodeUnpublishVolume should remove target path`,
}

// sanityChildEnv marks the test binary re-executed to run the suite: Ginkgo
// allows one RunSpecs per process, and `go test -count=N` runs tests N times.
const sanityChildEnv = "DATADOG_CSI_SANITY_CHILD"

// TestSanity runs csi-sanity against the real gRPC server on a unix socket,
// in a child process of this test binary (driver and suite in one process).
func TestSanity(t *testing.T) {
	testenv.RequireRoot(t)
	if os.Getenv(sanityChildEnv) != "1" {
		cmd := exec.Command(os.Args[0], "-test.run=^TestSanity$", "-test.count=1", "-test.v")
		cmd.Env = append(os.Environ(), sanityChildEnv+"=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("csi-sanity failed: %v\n%s", err, out)
		}
		if summary := regexp.MustCompile(`Ran \d+ of \d+ Specs.*|SUCCESS!.*`).FindAll(out, -1); len(summary) > 0 {
			t.Logf("csi-sanity: %s", bytes.Join(summary, []byte("; ")))
		}
		return
	}
	agent := testenv.NewAgent(t)
	d := startDriver(t, agent.APMSocket, agent.DSDSocket)

	cfg := sanity.NewTestConfig()
	cfg.Address = d.cfg.CSISocketPath
	work := testenv.TargetDir(t)
	cfg.TargetPath = filepath.Join(work, "target")
	cfg.StagingPath = filepath.Join(work, "staging")
	cfg.IdempotentCount = 2
	sanity.GinkgoTest(&cfg)

	RegisterFailHandler(Fail)
	suiteConfig, reporterConfig := GinkgoConfiguration()
	suiteConfig.SkipStrings = append(suiteConfig.SkipStrings, specsNeedingAController...)
	RunSpecs(t, "csi-sanity", suiteConfig, reporterConfig)
	// Guard against a skip list that silently grows to cover everything.
	if passedSanitySpecs < minimumSanitySpecs {
		t.Errorf("only %d csi-sanity specs passed; expected at least %d", passedSanitySpecs, minimumSanitySpecs)
	}
}

// minimumSanitySpecs is how many specs apply to a node-only plugin without
// optional capabilities (csi-test v5.6.0): 3 Identity, 7 Node.
const minimumSanitySpecs = 10

var passedSanitySpecs int

var _ = ReportAfterEach(func(report SpecReport) {
	if report.State.Is(types.SpecStatePassed) {
		passedSanitySpecs++
	}
})
