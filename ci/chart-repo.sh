#!/usr/bin/env bash
# The chart repository users add with `helm repo add datadog <url>`: every
# chart packaged into dist/charts, plus dist/charts/index.yaml. Serve that
# directory over HTTP(S) as it is. The umbrella's file:// dependencies are
# packaged inside it by `helm dependency build`.
. "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"

[[ -x $BIN_DIR/helm ]] || die "bin/helm is missing: run 'make tools'"
OUT=$REPO_ROOT/dist/charts

HELM_HOME_TMP=$(mktemp -d)
trap 'rm -rf "$HELM_HOME_TMP"' EXIT
export HELM_CONFIG_HOME=$HELM_HOME_TMP/config HELM_CACHE_HOME=$HELM_HOME_TMP/cache HELM_DATA_HOME=$HELM_HOME_TMP/data

rm -rf "$OUT" && mkdir -p "$OUT"
step chart-repo-dependency-build "$BIN_DIR/helm" dependency build charts/datadog-csi --skip-refresh
for chart in datadog-csi-driver datadog-csi-webhook datadog-csi; do
	step "chart-repo-package-$chart" "$BIN_DIR/helm" package "charts/$chart" --destination "$OUT"
done
step chart-repo-index "$BIN_DIR/helm" repo index "$OUT"
log "chart repository in $OUT: $(cd "$OUT" && echo *.tgz) index.yaml"
