#!/usr/bin/env bash
# Pinned tools into ./bin, built from the Go module proxy. Each tool is built
# once per version into $CACHE_DIR/tools/<name>-<version> and copied into ./bin,
# so a fresh clone on a warm machine only copies.
#
#   ci/tools.sh            all tools
#   ci/tools.sh helm kind  only those
. "$(dirname "$0")/lib.sh"

# name  module  version  package (main)
TOOLS=(
	"kind       sigs.k8s.io/kind                    $KIND_VERSION       sigs.k8s.io/kind"
	"helm       helm.sh/helm/v3                     $HELM_VERSION       helm.sh/helm/v3/cmd/helm"
	"helm4      helm.sh/helm/v4                     $HELM4_VERSION      helm.sh/helm/v4/cmd/helm"
	"helm-docs  github.com/norwoodj/helm-docs       $HELM_DOCS_VERSION  github.com/norwoodj/helm-docs/cmd/helm-docs"
	"ct         github.com/helm/chart-testing/v3    $CT_VERSION         github.com/helm/chart-testing/v3/ct"
	"benchstat  golang.org/x/perf                   $BENCHSTAT_VERSION  golang.org/x/perf/cmd/benchstat"
)

# Tools are built in a scratch module (not `go install`), so modules with
# replace directives build too and the exact version is what go.mod says.
tool_ldflags() {
	local name=$1 version=$2 ldflags="-s -w"
	case $name in
		# The Kubernetes version Helm reports to templates (.Capabilities) comes
		# from ldflags in upstream builds; without them it says 1.20.
		helm) ldflags+=" -X helm.sh/helm/v3/internal/version.version=$version"
			local k8s_minor=${K8S_VERSION#v1.}
			ldflags+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=${k8s_minor%%.*}" ;;
		helm4) ldflags+=" -X helm.sh/helm/v4/internal/version.version=$version" ;;
		kind) ;;
	esac
	echo "$ldflags"
}

# tool_dir: keyed by everything that makes the binary, so a changed recipe rebuilds.
tool_dir() {
	local name=$1 version=$3
	echo "$CACHE_DIR/tools/$name-$version-$(echo "$* $(tool_ldflags "$name" "$version")" | sha256sum | cut -c1-8)"
}

build_tool() {
	local name=$1 module=$2 version=$3 pkg=$4
	local dir ldflags
	dir=$(tool_dir "$@")
	ldflags=$(tool_ldflags "$name" "$version")
	[[ -x $dir/$name ]] && return 0
	rm -rf "$dir/src" && mkdir -p "$dir/src"
	printf 'module toolbuild\n\ngo 1.26\n' >"$dir/src/go.mod"
	echo "package main" >"$dir/src/doc.go"
	(cd "$dir/src" && go get "$pkg@$version" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$dir/$name.tmp" "$pkg")
	mv "$dir/$name.tmp" "$dir/$name"
}

install_tool() {
	local name=$1 module=$2 version=$3 pkg=$4
	with_lock "tool-$name" step "tool-$name-$version" build_tool "$name" "$module" "$version" "$pkg"
	cp -f "$(tool_dir "$@")/$name" "$BIN_DIR/$name"
}

selected() { [[ $# -eq 0 ]] && return 0; local n; for n in "${SELECT[@]}"; do [[ $n == "$1" ]] && return 0; done; return 1; }
SELECT=("$@")

for line in "${TOOLS[@]}"; do
	# shellcheck disable=SC2086
	set -- $line
	if [[ ${#SELECT[@]} -eq 0 ]] || selected "$1"; then install_tool "$@"; fi
done
if [[ ${#SELECT[@]} -eq 0 ]] || selected kubectl; then
	"$REPO_ROOT/ci/k8s-build.sh" kubectl
	cp -f "$("$REPO_ROOT/ci/k8s-build.sh" --print-bin-dir)/kubectl" "$BIN_DIR/kubectl"
fi
log "tools ready in $BIN_DIR"
