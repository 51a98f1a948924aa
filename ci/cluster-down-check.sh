#!/usr/bin/env bash
# `make cluster-down`, then proof that it left nothing behind on the host:
# no node container or dockerd of ours, no mounts under our run/data dirs, no
# cluster bridge, no seal rules, no prohibit routes, and nothing of the
# sealed-network test's outside host (tests/cluster). The last step of `make test`.
. "$(dirname "$0")/lib.sh"

CLUSTER=${CLUSTER_NAME:-datadog-csi}
DATA_ROOT=$CACHE_DIR/docker/data-root
# Offline, the cluster lives in the dedicated dockerd (ci/docker.sh).
[[ -n ${KIND_NODE_IMAGE:-} ]] || eval "$("$REPO_ROOT/ci/docker.sh" env)"

"$REPO_ROOT/ci/cluster.sh" down
fail=0
check() { # check WHAT CMD...: CMD must print nothing
	local out; out=$("${@:2}" 2>/dev/null || true)
	if [[ -n $out ]]; then printf 'left behind by cluster-down: %s:\n%s\n' "$1" "$out" >&2; fail=1; fi
}

# kind_containers: the cluster's node containers. Asked of the docker daemon if
# it still answers; and read from the dedicated dockerd's data root, where a
# stopped daemon keeps them (the next `make cluster` would find them there).
kind_containers() {
	if timeout 10 docker version >/dev/null 2>&1; then
		docker ps -a --filter "label=io.x-k8s.kind.cluster=$CLUSTER" --format '{{.Names}} ({{.Status}})'
	fi
	local f
	for f in "$DATA_ROOT"/containers/*/config.v2.json; do
		[[ -f $f ]] || continue
		grep -qE "\"io\.x-k8s\.kind\.cluster\": ?\"$CLUSTER\"" "$f" &&
			printf '%s in %s\n' "$(grep -oE '"Name": ?"[^"]*"' "$f" | head -n1)" "$(dirname "$f")"
	done
	return 0
}

check "dockerd process" pgrep -f "dockerd --config-file $CACHE_DIR/docker/daemon.json"
check "node container process" pgrep -f "$CLUSTER-control-plane"
check "kind node containers of cluster $CLUSTER" kind_containers
check "mounts" grep -E "/run/datadog-csi|$CACHE_DIR/docker" /proc/self/mountinfo
check "cluster bridge" ip -br link show dcsi-kind0
check "seal rules" bash -c "iptables -S | grep dcsi-kind0"
check "prohibit routes" bash -c "ip route show type prohibit | grep -E '10.244.0.0/16|10.96.0.0/16'"
# tests/cluster's outside host removes itself in t.Cleanup; a killed test
# leaves it, and a host route into the documentation range with it.
check "tests/cluster's veth (ip link del dcsi-seal0)" ip -br link show dcsi-seal0
check "tests/cluster's netns (ip netns del dcsi-seal-outside)" bash -c "ip netns list | awk '\$1 == \"dcsi-seal-outside\"'"
check "tests/cluster's address 198.51.100.1" ip -o addr show to 198.51.100.1
check "tests/cluster's counting rules (iptables-save | grep dcsi-seal-test)" bash -c "iptables-save | grep dcsi-seal-test"
(( fail == 0 )) || die "make cluster-down left things behind (above)"
log "cluster-down left no containers, processes, mounts, bridge, iptables rules, routes or test network behind"
