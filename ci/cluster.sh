#!/usr/bin/env bash
# The kind cluster `datadog-csi`.
#
#   ci/cluster.sh up     reuse it if healthy, else (re)create it; kubeconfig in .cache/kubeconfig
#   ci/cluster.sh down   delete it and everything `up` set up on the host
#   ci/cluster.sh env    print the exports (DOCKER_HOST, KUBECONFIG) for a shell
#
# Two modes, chosen without any network probing:
#   KIND_NODE_IMAGE set  (a machine with a registry) the stock node image with
#                        the machine's own docker, as plain kind would;
#   otherwise (offline)  a dedicated dockerd (ci/docker.sh), a node image built
#                        here (ci/node-image.sh) and a sealed cluster network: no
#                        packet from the cluster leaves through another interface.
. "$(dirname "$0")/lib.sh"

CLUSTER=${CLUSTER_NAME:-datadog-csi}
KUBECONFIG_FILE=$REPO_ROOT/.cache/kubeconfig
KIND=$BIN_DIR/kind
KUBECTL=$BIN_DIR/kubectl
# The offline network: a fixed bridge name so the seal can name it.
NET_BRIDGE=dcsi-kind0
NET_SUBNET=${KIND_NET_SUBNET:-172.29.0.0/24}
POD_SUBNET=10.244.0.0/16
SERVICE_SUBNET=10.96.0.0/16

offline() { [[ -z ${KIND_NODE_IMAGE:-} ]]; }

docker_env() {
	if offline; then eval "$("$REPO_ROOT/ci/docker.sh" env)"; fi
}

node_container() { echo "$CLUSTER-control-plane"; }

kind_config() {
	cat <<YAML
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
networking:
  apiServerAddress: 127.0.0.1
  podSubnet: $POD_SUBNET
  serviceSubnet: $SERVICE_SUBNET
$(offline && echo "  disableDefaultCNI: true # the offline node image ships a bridge CNI config")
kubeadmConfigPatches:
  - |
    kind: KubeletConfiguration
    failCgroupV1: false
nodes:
  - role: control-plane
YAML
}

# seal: nothing from the cluster bridge may leave through another interface,
# and the host has no route into the pod or service ranges. Idempotent.
seal() {
	local bridge
	if bridge=$(docker network inspect kind -f '{{index .Options "com.docker.network.bridge.name"}}' 2>/dev/null) &&
		[[ $bridge != "$NET_BRIDGE" ]]; then
		# A leftover of an older layout, in this project's own dockerd: its
		# cluster cannot be sealed, so it goes, and the network with it.
		log "docker network 'kind' uses bridge '${bridge:-docker default}', not $NET_BRIDGE: deleting cluster $CLUSTER and that network"
		"$KIND" delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
		docker network rm kind >/dev/null || die "cannot remove docker network 'kind' (bridge $bridge); see 'docker network inspect kind'"
	fi
	docker network inspect kind >/dev/null 2>&1 ||
		docker network create --driver bridge --subnet "$NET_SUBNET" \
			-o com.docker.network.bridge.name=$NET_BRIDGE \
			-o com.docker.network.bridge.enable_ip_masquerade=false kind >/dev/null
	bridge=$(docker network inspect kind -f '{{index .Options "com.docker.network.bridge.name"}}')
	[[ $bridge == "$NET_BRIDGE" ]] || die "docker network 'kind' has bridge $bridge after being recreated with $NET_BRIDGE"
	# The dedicated dockerd runs with iptables off: these are the only rules.
	iptables -C FORWARD -i $NET_BRIDGE ! -o $NET_BRIDGE -j REJECT --reject-with icmp-admin-prohibited 2>/dev/null ||
		iptables -I FORWARD 1 -i $NET_BRIDGE ! -o $NET_BRIDGE -j REJECT --reject-with icmp-admin-prohibited
	iptables -C FORWARD -i $NET_BRIDGE -o $NET_BRIDGE -j ACCEPT 2>/dev/null ||
		iptables -I FORWARD 2 -i $NET_BRIDGE -o $NET_BRIDGE -j ACCEPT
	# Nor may the cluster open connections to the host itself (a proxy or
	# resolver listening there could carry them out); answers to the host's
	# own connections (docker-proxy to the API server) still come back.
	iptables -C INPUT -i $NET_BRIDGE -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT 2>/dev/null ||
		iptables -I INPUT 1 -i $NET_BRIDGE -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
	iptables -C INPUT -i $NET_BRIDGE -j REJECT --reject-with icmp-admin-prohibited 2>/dev/null ||
		iptables -I INPUT 2 -i $NET_BRIDGE -j REJECT --reject-with icmp-admin-prohibited
	ip route replace prohibit $POD_SUBNET
	ip route replace prohibit $SERVICE_SUBNET
}

unseal() {
	while iptables -D FORWARD -i $NET_BRIDGE ! -o $NET_BRIDGE -j REJECT --reject-with icmp-admin-prohibited 2>/dev/null; do :; done
	while iptables -D FORWARD -i $NET_BRIDGE -o $NET_BRIDGE -j ACCEPT 2>/dev/null; do :; done
	while iptables -D INPUT -i $NET_BRIDGE -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT 2>/dev/null; do :; done
	while iptables -D INPUT -i $NET_BRIDGE -j REJECT --reject-with icmp-admin-prohibited 2>/dev/null; do :; done
	ip route del prohibit $POD_SUBNET 2>/dev/null || true
	ip route del prohibit $SERVICE_SUBNET 2>/dev/null || true
}

healthy() {
	[[ $(docker inspect -f '{{.State.Running}}' "$(node_container)" 2>/dev/null) == true ]] || return 1
	# A running cluster that this checkout has no kubeconfig for (a fresh
	# clone, a cleaned .cache) is reused, not recreated.
	[[ -f $KUBECONFIG_FILE ]] || "$KIND" export kubeconfig --name "$CLUSTER" --kubeconfig "$KUBECONFIG_FILE" >/dev/null 2>&1 || return 1
	timeout 20 "$KUBECTL" --kubeconfig "$KUBECONFIG_FILE" get --raw /readyz >/dev/null 2>&1
}

wait_ready() {
	"$KUBECTL" --kubeconfig "$KUBECONFIG_FILE" wait --for=condition=Ready node --all --timeout=180s
	"$KUBECTL" --kubeconfig "$KUBECONFIG_FILE" -n kube-system rollout status deploy/coredns --timeout=180s
	"$KUBECTL" --kubeconfig "$KUBECONFIG_FILE" -n kube-system rollout status ds/kube-proxy --timeout=180s
	"$KUBECTL" --kubeconfig "$KUBECONFIG_FILE" get nodes -o wide
	"$KUBECTL" --kubeconfig "$KUBECONFIG_FILE" get pods -A
}

create() {
	local image
	"$KIND" delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
	if offline; then image=$("$REPO_ROOT/ci/node-image.sh"); else image=$KIND_NODE_IMAGE; fi
	mkdir -p "$(dirname "$KUBECONFIG_FILE")"
	kind_config >"$REPO_ROOT/.cache/kind-config.yaml"
	"$KIND" create cluster --name "$CLUSTER" --image "$image" --config "$REPO_ROOT/.cache/kind-config.yaml" \
		--kubeconfig "$KUBECONFIG_FILE" --retain=false --wait 0s
}

up() {
	if offline; then
		"$REPO_ROOT/ci/docker.sh" up >/dev/null
		docker_env
		# debootstrap waits on the network and disk, the Go builds on the CPU:
		# run them side by side (a warm cache makes both no-ops).
		local rootfs_pid
		"$REPO_ROOT/ci/node-image.sh" --rootfs-only &
		rootfs_pid=$!
		"$REPO_ROOT/ci/tools.sh" kind kubectl
		step k8s-binaries-all "$REPO_ROOT/ci/k8s-build.sh"
		wait "$rootfs_pid" || die "building the node's root file system failed; see $LOG_DIR/node-debootstrap.log"
		step node-image "$REPO_ROOT/ci/node-image.sh"
		step cluster-network seal
	else
		"$REPO_ROOT/ci/tools.sh" kind kubectl
	fi
	if healthy; then
		log "cluster $CLUSTER is up; reusing it"
		"$KIND" export kubeconfig --name "$CLUSTER" --kubeconfig "$KUBECONFIG_FILE" >/dev/null 2>&1
	else
		step kind-create create
	fi
	step cluster-ready wait_ready
	print_env
}

down() {
	docker_env
	if offline && ! timeout 10 docker version >/dev/null 2>&1; then
		log "dedicated dockerd not running; starting it to delete the cluster's containers"
		"$REPO_ROOT/ci/docker.sh" up >/dev/null
	fi
	if [[ -x $KIND ]]; then
		"$KIND" delete cluster --name "$CLUSTER" || die "kind could not delete cluster $CLUSTER (above); fix that and run 'make cluster-down' again"
	else
		# Without kind only an empty docker is proof that nothing is left to delete.
		local nodes
		nodes=$(docker ps -aq --filter "label=io.x-k8s.kind.cluster=$CLUSTER") ||
			die "$KIND is missing and docker cannot be asked for cluster $CLUSTER's containers: run 'make tools', then 'make cluster-down' again"
		[[ -z $nodes ]] ||
			die "$KIND is missing, so cluster $CLUSTER's containers cannot be deleted: run 'make tools', then 'make cluster-down' again"
		log "$KIND is missing, but cluster $CLUSTER has no containers: nothing for kind to delete"
	fi
	rm -f "$KUBECONFIG_FILE"
	if offline; then
		docker network rm kind >/dev/null 2>&1 || true
		unseal
		"$REPO_ROOT/ci/docker.sh" down
	fi
	log "cluster $CLUSTER deleted"
}

print_env() {
	offline && "$REPO_ROOT/ci/docker.sh" env
	echo "export KUBECONFIG=$KUBECONFIG_FILE"
}

case ${1:-} in
	up) up ;;
	down) down ;;
	env) print_env ;;
	*) die "usage: $0 up|down|env" ;;
esac
