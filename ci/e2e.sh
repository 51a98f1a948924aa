#!/usr/bin/env bash
# End-to-end tests on the kind cluster, as `make e2e` and `make bench-e2e` run
# them after `make cluster images` (the Makefile's prerequisites).
#
#   ci/e2e.sh [go test flags]          every Test in tests/e2e (e.g. -run TestSeedScenario)
#   ci/e2e.sh -bench [go test flags]   BenchmarkPodStartOverhead: pod start, csi vs hostip
#
# Environment (all optional):
#   KIND_NODE_IMAGE      set on a machine with a registry (see ci/cluster.sh); the
#                        seed's nginx is then the real nginx and the driver registers
#                        through the node-driver-registrar sidecar
#   E2E_APP_IMAGE        the seed scenario's "nginx" image
#   E2E_REGISTRAR        in-process | sidecar (default: in-process offline, sidecar otherwise)
#   E2E_REGISTRAR_IMAGE  repo:tag of node-driver-registrar for sidecar runs
#   E2E_BENCH_PODS       pods per mode in the benchmark (default 20)
# The tests reach the cluster only through the API server on 127.0.0.1 and
# the node container (docker exec, for its mount table). See docs/e2e.md.
. "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"

BENCH=false
if [[ ${1:-} == -bench ]]; then BENCH=true; shift; fi

# DOCKER_HOST of the offline cluster's dockerd (unset with KIND_NODE_IMAGE) and KUBECONFIG.
eval "$("$REPO_ROOT/ci/cluster.sh" env)"
export PATH=$BIN_DIR:$PATH
[[ -f $KUBECONFIG ]] || die "no kubeconfig at $KUBECONFIG: run 'make cluster'"
for tool in helm kubectl kind; do
	[[ -x $BIN_DIR/$tool ]] || die "bin/$tool is missing: run 'make tools'"
done

mkdir -p "$REPO_ROOT/.cache"
if $BENCH; then
	out=$REPO_ROOT/.cache/bench-e2e.txt
	log "BenchmarkPodStartOverhead (output also in $out)"
	cd tests
	go test -count=1 -timeout 30m -run '^$' -bench '^BenchmarkPodStartOverhead$' -benchtime=1x -v "$@" ./e2e/ 2>&1 | tee "$out"
	exit "${PIPESTATUS[0]}"
fi

# TestUserHelmRepo serves dist/charts: package the charts of this tree.
step e2e-chart-repo "$REPO_ROOT/ci/chart-repo.sh"
cd tests
# The test images' own unit tests (stale socket handling, URL forms): a second.
go test -count=1 ./images/...
t0=$(date +%s)
go test -count=1 -timeout 30m -v "$@" ./e2e/...
log "e2e passed in $(( $(date +%s) - t0 ))s"
