#!/usr/bin/env bash
# `make cluster-down`, then proof that it left nothing behind on the host:
# no node container or dockerd of ours, no mounts under our run/data dirs, no
# cluster bridge, no seal rules, no prohibit routes. The last step of `make test`.
. "$(dirname "$0")/lib.sh"

"$REPO_ROOT/ci/cluster.sh" down
fail=0
check() { # check WHAT CMD...: CMD must print nothing
	local out; out=$("${@:2}" 2>/dev/null || true)
	if [[ -n $out ]]; then printf 'left behind by cluster-down: %s:\n%s\n' "$1" "$out" >&2; fail=1; fi
}
check "dockerd process" pgrep -f "dockerd --config-file $CACHE_DIR/docker/daemon.json"
check "node container process" pgrep -f "datadog-csi-control-plane"
check "mounts" grep -E "/run/datadog-csi|$CACHE_DIR/docker" /proc/self/mountinfo
check "cluster bridge" ip -br link show dcsi-kind0
check "seal rules" bash -c "iptables -S FORWARD | grep dcsi-kind0"
check "prohibit routes" bash -c "ip route show type prohibit | grep -E '10.244.0.0/16|10.96.0.0/16'"
(( fail == 0 )) || die "make cluster-down left things behind (above)"
log "cluster-down left no containers, processes, mounts, bridge, iptables rules or routes behind"
