#!/usr/bin/env bash
# Chart checks, as `make charts` runs them (after docs-check and chart-repo):
#   1. helm lint --strict of each chart with its defaults and each ci/*-values.yaml,
#      with Helm v3 (bin/helm) and Helm v4 (bin/helm4);
#   2. helm template of the same combinations with both, the
#      ValidatingAdmissionPolicy API included so the umbrella renders it;
#   3. ct lint (ct.yaml: helm lint per ci values file, yamllint; no Yamale, no git remote);
#   4. the Go tests in tests/charts (render, contract, chart repository, and an
#      install on a real kube-apiserver from K8S_BIN_DIR).
# Offline: Helm runs with empty, private config/cache/data directories.
. "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"

for tool in helm helm4 ct; do
	[[ -x $BIN_DIR/$tool ]] || die "bin/$tool is missing: run 'make tools'"
done
install_yamllint() { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends yamllint; }
command -v yamllint >/dev/null || step apt-yamllint install_yamllint
[[ -n ${K8S_BIN_DIR:-} && -x ${K8S_BIN_DIR:-}/kube-apiserver ]] ||
	die "K8S_BIN_DIR must name the Kubernetes binaries (tests/charts/apiserver installs on a real kube-apiserver): run 'make charts', which builds them ('make k8s-bins')"
export PATH=$BIN_DIR:$PATH

HELM_HOME_TMP=$(mktemp -d)
trap 'rm -rf "$HELM_HOME_TMP"' EXIT
export HELM_CONFIG_HOME=$HELM_HOME_TMP/config HELM_CACHE_HOME=$HELM_HOME_TMP/cache HELM_DATA_HOME=$HELM_HOME_TMP/data

NAMESPACE=datadog-csi
VAP_API=admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy
CHARTS=(charts/datadog-csi-driver charts/datadog-csi-webhook charts/datadog-csi)

# The umbrella's file:// dependencies, packaged into charts/datadog-csi/charts.
step charts-dependency-build helm dependency build charts/datadog-csi --skip-refresh

lint_and_template() {
	local helm=$1 chart values args
	for chart in "${CHARTS[@]}"; do
		for values in "" "$chart"/ci/*-values.yaml; do
			args=()
			[[ -n $values ]] && args=(-f "$values")
			echo "== $helm lint --strict $chart ${values:+-f $values}"
			"$BIN_DIR/$helm" lint --strict "$chart" "${args[@]}"
			echo "== $helm template $chart ${values:+-f $values}"
			"$BIN_DIR/$helm" template ci "$chart" --namespace "$NAMESPACE" --api-versions "$VAP_API" "${args[@]}" >/dev/null
		done
	done
}
step charts-helm3 lint_and_template helm
step charts-helm4 lint_and_template helm4
step charts-ct-lint ct lint --config ct.yaml
go_test_charts() (
	cd tests
	go test -count=1 ./charts/...
)
step charts-go-test go_test_charts
log "charts: lint (helm v3, v4), template, ct lint, render and chart repo tests passed"
