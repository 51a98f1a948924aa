#!/usr/bin/env bash
# The demo: the seed scenario, replayed with real output on the kind cluster.
#
#   ci/demo.sh up     (make demo) create or reuse the cluster, build and load the
#                     images, install the dummy agent and the umbrella chart (csi
#                     mode), then run a labelled nginx and show its CSI volumes and
#                     `kubectl label ns ... enforce=baseline --dry-run=server`
#                     succeeding without a warning; for contrast, the same pod in
#                     socket mode (hostPath) and the warning it causes
#   ci/demo.sh down   (make demo-down) remove what `up` installed; the cluster
#                     stays (`make cluster-down` deletes it)
#
# Offline (no KIND_NODE_IMAGE) the "nginx" is our test app, which also sends
# DogStatsD and trace traffic through its sockets; E2E_APP_IMAGE overrides it.
. "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"

RELEASE=datadog-csi
RELEASE_NS=datadog-csi
AGENT_NS=datadog-agent
DEMO_NS=demo
CONTRAST_NS=demo-socket
IMAGE_TAG=${IMAGE_TAG:-dev}
IMAGE_PREFIX=${IMAGE_PREFIX:-ghcr.io/datadog-csi}
if [[ -z ${KIND_NODE_IMAGE:-} ]]; then
	APP_IMAGE=${E2E_APP_IMAGE:-$IMAGE_PREFIX/test-app:$IMAGE_TAG}
	REGISTRAR=false # the registrar sidecar's image cannot be pulled offline
else
	APP_IMAGE=${E2E_APP_IMAGE:-nginx}
	REGISTRAR=true
fi
export PATH=$BIN_DIR:$PATH
# A pod's agent volumes, one a line: "<name>: csi {...}" or "<name>: hostPath {...}".
VOLUMES_JSONPATH='{range .spec.volumes[?(@.csi)]}{.name}{": csi "}{.csi}{"\n"}{end}{range .spec.volumes[?(@.hostPath)]}{.name}{": hostPath "}{.hostPath}{"\n"}{end}'

# Helm with private config/cache: nothing of the user's helm setup is touched.
HELM_HOME_TMP=$(mktemp -d)
trap 'rm -rf "$HELM_HOME_TMP"' EXIT
export HELM_CONFIG_HOME=$HELM_HOME_TMP/config HELM_CACHE_HOME=$HELM_HOME_TMP/cache HELM_DATA_HOME=$HELM_HOME_TMP/data

# show CMD...: print the command as a user would type it, then run it with
# its real output (stderr included, where kubectl prints warnings).
show() {
	prompt "$@"
	"$@" 2>&1
}

# prompt CMD...: "$ CMD" as one would type it (arguments quoted where the
# shell needs it), in bold on a terminal.
prompt() {
	local line="$" a
	for a in "$@"; do
		if [[ $a =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then line+=" $a"; else line+=" '${a//\'/\'\\\'\'}'"; fi
	done
	if [[ -t 1 ]]; then printf '\n\033[1m%s\033[0m\n' "$line"; else printf '\n%s\n' "$line"; fi
}

k() { kubectl "$@"; }

wait_webhook_csi() {
	# The webhook patches its caBundle after it starts: until then pods are
	# admitted unmutated (failurePolicy Ignore). Wait for a mutated dry run.
	local i out
	for i in $(seq 1 120); do
		out=$(k -n "$DEMO_NS" run probe --image="$APP_IMAGE" --labels=admission.datadoghq.com/enabled=true \
			--dry-run=server -o jsonpath='{.spec.volumes[*].csi.driver}' 2>/dev/null || true)
		[[ $out == *k8s.csi.datadoghq.com* ]] && return 0
		sleep 1
	done
	die "the webhook does not inject CSI volumes after 2 minutes: kubectl -n $RELEASE_NS logs deploy/$RELEASE-datadog-csi-webhook"
}

# create_ns NS: create a namespace and wait until it has its ServiceAccount
# default, which the controller-manager adds: the ServiceAccount admission
# plugin rejects a pod created before it (after retrying a second or two).
create_ns() {
	local i
	k create namespace "$1" >/dev/null
	for i in $(seq 1 120); do
		k -n "$1" get serviceaccount default >/dev/null 2>&1 && return 0
		sleep 0.5
	done
	die "namespace $1 has no ServiceAccount default after 60 seconds: see kubectl -n kube-system logs -l component=kube-controller-manager"
}

delete_ns() {
	k delete namespace "$@" --ignore-not-found --wait=true --timeout=120s >/dev/null
}

up() {
	step demo-cluster "$REPO_ROOT/ci/cluster.sh" up
	eval "$("$REPO_ROOT/ci/cluster.sh" env)"
	[[ -x $BIN_DIR/helm ]] || step demo-tools "$REPO_ROOT/ci/tools.sh" helm
	step demo-images "$REPO_ROOT/ci/images.sh"
	# A rerun starts the scenario afresh.
	delete_ns "$DEMO_NS" "$CONTRAST_NS"

	step demo-agent k apply -f tests/images/dummy-agent/manifest.yaml
	step demo-agent-ready k -n "$AGENT_NS" rollout status ds/dummy-agent --timeout=120s
	step demo-chart-dependencies helm dependency update --skip-refresh charts/datadog-csi
	k create namespace "$RELEASE_NS" --dry-run=client -o yaml | k apply -f - >/dev/null
	k label namespace "$RELEASE_NS" pod-security.kubernetes.io/enforce=privileged --overwrite >/dev/null
	step demo-install helm upgrade --install "$RELEASE" charts/datadog-csi --namespace "$RELEASE_NS" --wait --timeout 5m \
		--set "datadog-csi-driver.image.repository=$IMAGE_PREFIX/datadog-csi-driver" \
		--set "datadog-csi-driver.image.tag=$IMAGE_TAG" \
		--set datadog-csi-driver.image.pullPolicy=IfNotPresent \
		--set "datadog-csi-driver.registrar.enabled=$REGISTRAR" \
		--set "datadog-csi-webhook.image.repository=$IMAGE_PREFIX/datadog-csi-webhook" \
		--set "datadog-csi-webhook.image.tag=$IMAGE_TAG" \
		--set datadog-csi-webhook.image.pullPolicy=IfNotPresent \
		--set datadog-csi-webhook.agentCommunicationMode=csi
	create_ns "$DEMO_NS"
	wait_webhook_csi
	log "installed; replaying the seed scenario"

	echo
	echo "== datadog-csi demo: a labelled nginx in csi mode =="
	show kubectl get pods -n "$RELEASE_NS" -o wide
	show kubectl -n "$DEMO_NS" run nginx --image="$APP_IMAGE" --image-pull-policy=IfNotPresent \
		--labels=admission.datadoghq.com/enabled=true
	show kubectl -n "$DEMO_NS" wait --for=condition=Ready pod/nginx --timeout=120s
	show kubectl -n "$DEMO_NS" get pod nginx -o jsonpath="$VOLUMES_JSONPATH"
	show kubectl -n "$DEMO_NS" get pod nginx -o jsonpath='{range .spec.containers[0].env[?(@.value)]}{.name}={.value}{"\n"}{end}'
	local vols
	vols=$(k -n "$DEMO_NS" get pod nginx -o jsonpath='{.spec.volumes[*].hostPath.path}')
	[[ -z $vols ]] || die "nginx has hostPath volumes ($vols): the webhook is not in csi mode"

	local out
	prompt kubectl label ns "$DEMO_NS" pod-security.kubernetes.io/enforce=baseline --dry-run=server
	out=$(k label ns "$DEMO_NS" pod-security.kubernetes.io/enforce=baseline --dry-run=server 2>&1)
	echo "$out"
	[[ $out != *Warning* ]] || die "the baseline dry run warned: see above"
	echo "(no warning: the namespace can enforce Pod Security baseline)"

	if [[ $APP_IMAGE == "$IMAGE_PREFIX/test-app:$IMAGE_TAG" ]]; then
		local agent
		agent=$(k -n "$AGENT_NS" get pods -l app.kubernetes.io/name=dummy-agent -o jsonpath='{.items[0].metadata.name}')
		sleep 3
		echo
		echo "== what the node's (dummy) agent received from nginx over the CSI-mounted sockets =="
		show kubectl get --raw "/api/v1/namespaces/$AGENT_NS/pods/$agent:5000/proxy/records"
		echo
	fi

	echo
	echo "== for contrast: the same pod in socket mode (hostPath, as Datadog's Cluster Agent's socket mode) =="
	create_ns "$CONTRAST_NS"
	show kubectl -n "$CONTRAST_NS" run nginx --image="$APP_IMAGE" --image-pull-policy=IfNotPresent \
		--labels=admission.datadoghq.com/enabled=true,admission.datadoghq.com/config.mode=socket
	show kubectl -n "$CONTRAST_NS" get pod nginx -o jsonpath="$VOLUMES_JSONPATH"
	# Pod Security checks the namespace's pods from its informer cache, which
	# may not have nginx yet: wait (about 30 s at most) for the dry run to warn.
	local i
	for i in $(seq 1 60); do
		[[ $(k label ns "$CONTRAST_NS" pod-security.kubernetes.io/enforce=baseline --dry-run=server 2>&1) == *"hostPath volumes"* ]] && break
		sleep 0.5
	done
	show kubectl label ns "$CONTRAST_NS" pod-security.kubernetes.io/enforce=baseline --dry-run=server
	echo
	log "demo done; 'make demo-down' removes it"
}

down() {
	if [[ -z ${KIND_NODE_IMAGE:-} ]]; then eval "$("$REPO_ROOT/ci/docker.sh" env)"; fi
	export KUBECONFIG=$REPO_ROOT/.cache/kubeconfig
	if [[ ! -f $KUBECONFIG ]] || ! timeout 20 kubectl get --raw /readyz >/dev/null 2>&1; then
		log "no cluster reachable: nothing to remove"
		return 0
	fi
	# Pods with CSI volumes first, while the driver can still unpublish them.
	step demo-down-namespaces delete_ns "$DEMO_NS" "$CONTRAST_NS"
	if helm status "$RELEASE" -n "$RELEASE_NS" >/dev/null 2>&1; then
		step demo-down-release helm uninstall "$RELEASE" -n "$RELEASE_NS" --wait --timeout 2m
	fi
	step demo-down-system delete_ns "$RELEASE_NS" "$AGENT_NS"
	log "demo removed (the cluster stays: 'make cluster-down' deletes it)"
}

case ${1:-} in
	up) up ;;
	down) down ;;
	*) die "usage: $0 up|down" ;;
esac
