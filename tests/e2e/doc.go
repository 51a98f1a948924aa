// Package e2e holds the end-to-end tests of datadog-csi on the kind cluster
// that `make cluster` creates, with the images `make images` builds and loads.
// They install the Helm charts with terratest, run pods through the real
// admission chain (the webhook, Pod Security) and the real kubelet and CSI
// mounts, and check real socket traffic reaching a dummy agent.
//
// The tests reach the cluster only through the API server (client-go, kubectl,
// helm, pod proxy) and read the node's mount table through the kind provider.
// A missing cluster or image fails the test with the make target that provides
// it; nothing is skipped. See docs/e2e.md.
//
//	make e2e        # ci/e2e.sh: every Test in this package
//	make bench-e2e  # ci/e2e.sh -bench: BenchmarkPodStartOverhead
package e2e
