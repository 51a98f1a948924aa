#!/usr/bin/env bash
# Builds the project's images locally (no registry): each binary is compiled
# on the host (static, CGO_ENABLED=0) into a build context whose Dockerfile is
# FROM scratch, so nothing is pulled. Then loads them into the kind cluster
# when it exists.
#
#   ci/images.sh            build all, load into the cluster if it runs
#   ci/images.sh --no-load  build only
#
# Images (tag $IMAGE_TAG, default dev):
#   ghcr.io/datadog-csi/datadog-csi-driver    driver/Dockerfile
#   ghcr.io/datadog-csi/datadog-csi-webhook   webhook/Dockerfile
#   ghcr.io/datadog-csi/dummy-agent           tests/images/dummy-agent (test only)
#   ghcr.io/datadog-csi/test-app              tests/images/test-app    (test only)
. "$(dirname "$0")/lib.sh"

IMAGE_TAG=${IMAGE_TAG:-dev}
IMAGE_PREFIX=${IMAGE_PREFIX:-ghcr.io/datadog-csi}
CLUSTER=${CLUSTER_NAME:-datadog-csi}
LOAD=true; [[ ${1:-} == --no-load ]] && LOAD=false
[[ -z ${KIND_NODE_IMAGE:-} ]] && eval "$("$REPO_ROOT/ci/docker.sh" env)"

# name  module-dir  package  dockerfile-dir
IMAGES=(
	"datadog-csi-driver   .      ./driver/cmd/datadog-csi-driver       driver"
	"datadog-csi-webhook  .      ./webhook/cmd/datadog-csi-webhook     webhook"
	"dummy-agent          tests  ./images/dummy-agent                  tests/images/dummy-agent"
	"test-app             tests  ./images/test-app                     tests/images/test-app"
)

build_one() {
	local name=$1 moddir=$2 pkg=$3 dfdir=$4 ctx bin
	ctx=$(mktemp -d)
	bin=$(basename "$pkg")
	# grpcnotrace: gRPC's x/net/trace costs the driver ~2 MiB of idle RSS.
	(cd "$REPO_ROOT/$moddir" && CGO_ENABLED=0 go build -trimpath -tags grpcnotrace \
		-ldflags="-s -w -X github.com/datadog-csi/datadog-csi/driver/internal/server.Version=$IMAGE_TAG" \
		-o "$ctx/$bin" "$pkg")
	cp "$REPO_ROOT/$dfdir/Dockerfile" "$ctx/Dockerfile"
	docker build -q -t "$IMAGE_PREFIX/$name:$IMAGE_TAG" "$ctx"
	rm -rf "$ctx"
}

for line in "${IMAGES[@]}"; do
	# shellcheck disable=SC2086
	set -- $line
	step "image-$1" build_one "$@"
done
if $LOAD && "$BIN_DIR/kind" get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
	for line in "${IMAGES[@]}"; do
		# shellcheck disable=SC2086
		set -- $line
		step "kind-load-$1" "$BIN_DIR/kind" load docker-image --name "$CLUSTER" "$IMAGE_PREFIX/$1:$IMAGE_TAG"
	done
fi
log "images built: ${IMAGE_PREFIX}/{datadog-csi-driver,datadog-csi-webhook,dummy-agent,test-app}:$IMAGE_TAG"
