#!/usr/bin/env bash
# Builds the offline kind node image from Debian packages and the binaries of
# ci/k8s-build.sh, into the dedicated dockerd (ci/docker.sh), and prints its
# name. Everything is keyed by a hash of its inputs: a warm rerun builds nothing.
#
# Steps (each logged to $LOG_DIR/<step>.log, see docs/offline-cluster.md):
#   rootfs      debootstrap --variant=minbase + kind's base-image steps
#   components  FROM-scratch images of the control plane, kube-proxy, etcd,
#               coredns and pause, tagged as `kubeadm config images list` says
#   base        `docker import` of the rootfs
#   node        the base with the component images imported into its
#               containerd store, committed
#
# The sandbox fixes (ci/sandbox-runc as the node's runc, containerd without
# Limit*/OOMScoreAdjust and with restrict_oom_score_adj) go in only where
# ci/docker.sh's privileged probe chose the sandbox-runc runtime; that choice is
# an input of the image's hash.
. "$(dirname "$0")/lib.sh"
eval "$("$REPO_ROOT/ci/docker.sh" env)"

K8S_BIN=$("$REPO_ROOT/ci/k8s-build.sh" --print-bin-dir)
KIND_FILES=$(go_mod_dir "sigs.k8s.io/kind@$KIND_VERSION")/images/base/files
WRAPPER=$CACHE_DIR/docker/sandbox-runc
NODE_PACKAGES=systemd,dbus,conntrack,iptables,nftables,iproute2,ethtool,util-linux,mount,kmod,libseccomp2,pigz,bash,ca-certificates,jq,procps,containerd,runc,containernetworking-plugins,socat,e2fsprogs
POD_SUBNET=${POD_SUBNET:-10.244.0.0/16}

ROOTFS_TAR=$CACHE_DIR/node/rootfs-$DEBIAN_SUITE-$(echo "$NODE_PACKAGES" | sha256sum | cut -c1-10).tar

# node_keys: the names keyed by the image's inputs. Not computed for
# --rootfs-only, which needs neither the dockerd's runtime nor the binaries.
node_keys() {
	RUNTIME=$("$REPO_ROOT/ci/docker.sh" runtime)
	case $RUNTIME in
		runc | sandbox-runc) ;;
		*) die "unexpected default runtime '$RUNTIME' of the dedicated dockerd: run ci/docker.sh up (make cluster)" ;;
	esac
	KEY=$(inputs_hash)
	NODE_IMAGE=datadog-csi/kind-node:$K8S_VERSION-$KEY
	BASE_IMAGE=datadog-csi/kind-base:$KEY
	WORK=$CACHE_DIR/node/$KEY
}

# inputs_hash: the components' link targets name their version and recipe
# (ci/k8s-build.sh), so a rebuilt etcd, coredns or crictl makes a new image.
inputs_hash() {
	{
		echo "$K8S_VERSION $ETCD_VERSION $COREDNS_VERSION $CRITOOLS_VERSION $KIND_VERSION $DEBIAN_SUITE $NODE_PACKAGES $POD_SUBNET $RUNTIME"
		readlink "$K8S_BIN/etcd" "$K8S_BIN/coredns" "$K8S_BIN/crictl" || true
		cat "$REPO_ROOT/ci/node-image.sh" "$REPO_ROOT/ci/sandbox-runc/main.go" "$REPO_ROOT/ci/images/pause/pause.c"
	} | sha256sum | cut -c1-10
}

# sandboxed: the dedicated dockerd runs privileged containers through
# ci/sandbox-runc (ci/docker.sh found that a plain privileged one fails here),
# so the node's own containers need the same wrapper and fixes.
sandboxed() { [[ $RUNTIME == sandbox-runc ]]; }

# debian_mirror reads the machine's own apt source, so no host is written here.
debian_mirror() {
	local m
	m=$(sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v security | head -n1)
	[[ -n $m ]] || m=$(awk '$1=="deb" && $0 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null)
	[[ -n $m ]] || die "no Debian mirror found in /etc/apt/sources.list*"
	echo "$m"
}

build_debootstrap() {
	local dir=$CACHE_DIR/node/debootstrap.tmp
	umount_under "$dir"; rm -rf "$dir"; mkdir -p "$dir"
	debootstrap --variant=minbase --include="$NODE_PACKAGES" "$DEBIAN_SUITE" "$dir" "$(debian_mirror)"
	umount_under "$dir"
	tar -C "$dir" -cf "$ROOTFS_TAR.tmp" .
	mv "$ROOTFS_TAR.tmp" "$ROOTFS_TAR"
	rm -rf "$dir"
}

# umount_under DIR: a killed debootstrap leaves proc/sys mounted in its target.
umount_under() {
	local m
	for m in $(awk -v d="$1" '$5 ~ "^"d {print $5}' /proc/self/mountinfo | sort -r); do umount -l "$m" || true; done
}

# kind's base-image steps, applied to our Debian rootfs, plus (sandboxed) the sandbox fixes.
customize_rootfs() {
	local r=$WORK/rootfs
	umount_under "$r"; rm -rf "$r"; mkdir -p "$r"
	tar -C "$r" -xf "$ROOTFS_TAR"
	install -m 0755 "$KIND_FILES"/usr/local/bin/* "$r/usr/local/bin/"
	mkdir -p "$r/kind/bin" "$r/kind/manifests" "$r/etc/containerd" "$r/etc/systemd/system/kubelet.service.d" "$r/etc/kubernetes/manifests"
	cp -r "$KIND_FILES"/kind/. "$r/kind/"; chmod 0755 "$r/kind" "$r/kind/bin" "$r"/kind/bin/*
	install -m 0644 "$KIND_FILES"/etc/crictl.yaml "$r/etc/"
	install -m 0644 "$KIND_FILES"/etc/default/kubelet "$r/etc/default/"
	install -m 0644 "$KIND_FILES"/etc/sysctl.d/* "$r/etc/sysctl.d/"
	find "$KIND_FILES/etc/systemd/system" -maxdepth 1 -type f -exec install -m 0644 {} "$r/etc/systemd/system/" \;
	install -m 0644 "$KIND_FILES"/etc/systemd/system/kubelet.service.d/* "$r/etc/systemd/system/kubelet.service.d/"
	rm -f "$r/etc/systemd/system/containerd-fuse-overlayfs.service"
	# containerd: Debian's binary; sandboxed, no Limit*/OOMScoreAdjust (raising
	# them needs CAP_SYS_RESOURCE, which the sandbox lacks).
	local unit_edits=(-e 's#^ExecStart=.*#ExecStart=/usr/bin/containerd#')
	if sandboxed; then unit_edits+=(-e '/^LimitN/d' -e '/^LimitCORE/d' -e '/^OOMScoreAdjust/d'); fi
	sed "${unit_edits[@]}" "$KIND_FILES/etc/systemd/system/containerd.service" >"$r/etc/systemd/system/containerd.service"
	rm -f "$r/lib/systemd/system/containerd.service"
	# containerd config: kind's, without the fuse-overlayfs proxy (not built
	# here), our pause image, and, sandboxed, restrict_oom_score_adj (kubelet's
	# -997 for static pods would need CAP_SYS_RESOURCE).
	local config_edits=(-e "s#sandbox_image = .*#sandbox_image = \"$PAUSE_IMAGE\"#")
	if sandboxed; then config_edits+=(-e 's#restrict_oom_score_adj = false#restrict_oom_score_adj = true#'); fi
	awk '/^\[proxy_plugins/ {skip=1} /^\[plugins/ {skip=0} !skip' "$KIND_FILES/etc/containerd/config.toml" |
		sed "${config_edits[@]}" >"$r/etc/containerd/config.toml"
	if sandboxed; then
		grep -qx '  restrict_oom_score_adj = true' "$r/etc/containerd/config.toml" ||
			die "kind's containerd config no longer reads 'restrict_oom_score_adj = false'; update ci/node-image.sh"
	fi
	chroot "$r" /bin/sh -euc '
		find /lib/systemd/system/sysinit.target.wants/ -name systemd-tmpfiles-setup.service -delete
		rm -f /lib/systemd/system/multi-user.target.wants/* /etc/systemd/system/*.wants/* \
			/lib/systemd/system/local-fs.target.wants/* /lib/systemd/system/sockets.target.wants/*udev* \
			/lib/systemd/system/sockets.target.wants/*initctl* /lib/systemd/system/basic.target.wants/*
		echo ReadKMsg=no >>/etc/systemd/journald.conf
		ln -sf /usr/lib/systemd/systemd /sbin/init
		systemctl enable kubelet.service containerd.service undo-mount-hacks.service
		systemctl mask systemd-binfmt.service
		ctr oci spec | jq ".hooks.createContainer[.hooks.createContainer|length] |= . + {\"path\": \"/kind/bin/mount-product-files.sh\"}" \
			| jq "del(.process.rlimits)" >/etc/containerd/cri-base.json
		mkdir -p /opt/cni /etc/cni/net.d
		ln -sfn /usr/lib/cni /opt/cni/bin
		apt-get clean; rm -rf /var/lib/apt/lists/* /var/cache/debconf/*-old /usr/share/doc /usr/share/man
	'
	# Sandboxed, the runtime wrapper is the node's runc (PATH puts
	# /usr/local/sbin first); elsewhere Debian's runc (/usr/sbin) serves, as
	# kind's own runc does.
	if sandboxed; then install -m 0755 "$WRAPPER" "$r/usr/local/sbin/runc"; fi
	install -m 0755 "$K8S_BIN/kubelet" "$K8S_BIN/kubeadm" "$K8S_BIN/kubectl" "$r/usr/bin/"
	install -m 0755 "$K8S_BIN/crictl" "$r/usr/local/bin/"
	echo "$K8S_VERSION" >"$r/kind/version"
	# kindnet is not to be had offline: a bridge + host-local CNI config ships in
	# the image (single node: one subnet, no routes needed).
	cat >"$r/etc/cni/net.d/10-datadog-csi-bridge.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "kind-bridge",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "${POD_SUBNET%.0/16}.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}},
    {"type": "loopback"}
  ]
}
JSON
	# kind applies these when present; the storage class has no provisioner
	# (local-path-provisioner's image is not to be had offline).
	cat >"$r/kind/manifests/default-storage.yaml" <<'YAML'
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: standard
  annotations:
    storageclass.kubernetes.io/is-default-class: "true"
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: WaitForFirstConsumer
YAML
	cp "$r/kind/manifests/default-storage.yaml" "$WORK/default-storage.yaml"
}

# with_node_config SOURCE TARGET: the image config of kind's node (docker
# import/commit cannot set STOPSIGNAL; a FROM-local-image build can, pulling nothing).
with_node_config() {
	local ctx; ctx=$(mktemp -d)
	cat >"$ctx/Dockerfile" <<DOCKERFILE
FROM $1
ENV container=docker
STOPSIGNAL SIGRTMIN+3
ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]
CMD []
DOCKERFILE
	docker build -q -t "$2" "$ctx"
	rm -rf "$ctx"
}

build_base() {
	tar -C "$WORK/rootfs" -c . | docker import - "$BASE_IMAGE-rootfs"
	with_node_config "$BASE_IMAGE-rootfs" "$BASE_IMAGE"
	docker rmi "$BASE_IMAGE-rootfs" >/dev/null
	rm -rf "$WORK/rootfs"
}

# component_image NAME FILE... : FROM scratch with the files in /usr/local/bin.
component_image() {
	local tag=$1 entry=$2; shift 2
	local ctx; ctx=$(mktemp -d)
	mkdir -p "$ctx/root/usr/local/bin"
	# -L: etcd is a link into ci/k8s-build.sh's component cache.
	cp -pL "$@" "$ctx/root/usr/local/bin/"
	printf 'FROM scratch\nCOPY root/ /\nENV PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n' >"$ctx/Dockerfile"
	[[ -n $entry ]] && printf 'ENTRYPOINT ["%s"]\n' "$entry" >>"$ctx/Dockerfile"
	docker build -q -t "$tag" "$ctx"
	rm -rf "$ctx"
}

# kube-proxy needs iptables: copy the node's own iptables tools and their
# libraries from the rootfs (ldd in a chroot) into its image.
kube_proxy_image() {
	local tag=$1 r=$WORK/proxyfs ctx
	ctx=$(mktemp -d)
	mkdir -p "$r"; tar -C "$r" -xf "$ROOTFS_TAR"
	local files=(/usr/sbin/xtables-nft-multi /usr/sbin/xtables-legacy-multi /usr/sbin/conntrack)
	local f lib
	mkdir -p "$ctx/root/usr/local/bin" "$ctx/root/usr/sbin"
	for f in "${files[@]}"; do
		cp -a "$r$f" "$ctx/root$f"
		for lib in $(chroot "$r" ldd "$f" | awk '/=>/ {print $3} /^\t\/lib/ {print $1}'); do
			mkdir -p "$ctx/root$(dirname "$lib")"; cp -L "$r$lib" "$ctx/root$lib"
		done
	done
	# iptables loads its match/target extensions at run time (e.g. libxt_statistic,
	# for Services with several endpoints): they and their libraries come too.
	local ext
	mkdir -p "$ctx/root/usr/lib/x86_64-linux-gnu"
	cp -a "$r/usr/lib/x86_64-linux-gnu/xtables" "$ctx/root/usr/lib/x86_64-linux-gnu/"
	for ext in "$r"/usr/lib/x86_64-linux-gnu/xtables/*.so; do
		for lib in $(chroot "$r" ldd "${ext#"$r"}" | awk '/=>/ {print $3}'); do
			[[ -e $ctx/root$lib ]] && continue
			mkdir -p "$ctx/root$(dirname "$lib")"; cp -L "$r$lib" "$ctx/root$lib"
		done
	done
	mkdir -p "$ctx/root/lib64" "$ctx/root/etc" "$ctx/root/run" "$ctx/root/tmp"
	[[ -e $ctx/root/lib64/ld-linux-x86-64.so.2 ]] || cp -L "$r/lib64/ld-linux-x86-64.so.2" "$ctx/root/lib64/"
	for f in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
		ln -s xtables-nft-multi "$ctx/root/usr/sbin/$f"
	done
	cp -a "$r/etc/protocols" "$r/etc/services" "$ctx/root/etc/" 2>/dev/null || true
	cp "$K8S_BIN/kube-proxy" "$ctx/root/usr/local/bin/"
	printf 'FROM scratch\nCOPY root/ /\nENV PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\nENTRYPOINT ["/usr/local/bin/kube-proxy"]\n' >"$ctx/Dockerfile"
	docker build -q -t "$tag" "$ctx"
	rm -rf "$ctx" "$r"
}

build_components() {
	local img name tags=()
	while read -r img; do
		name=${img##*/}; name=${name%%:*}
		case $name in
			kube-apiserver | kube-controller-manager | kube-scheduler) component_image "$img" "" "$K8S_BIN/$name" ;;
			kube-proxy) kube_proxy_image "$img" ;;
			etcd) component_image "$img" "" "$K8S_BIN/etcd" ;;
			coredns)
				local ctx; ctx=$(mktemp -d); cp "$K8S_BIN/coredns" "$ctx/coredns"
				printf 'FROM scratch\nCOPY coredns /coredns\nENTRYPOINT ["/coredns"]\n' >"$ctx/Dockerfile"
				docker build -q -t "$img" "$ctx"; rm -rf "$ctx" ;;
			pause)
				local ctx; ctx=$(mktemp -d)
				gcc -static -O2 -o "$ctx/pause" "$REPO_ROOT/ci/images/pause/pause.c"
				printf 'FROM scratch\nCOPY pause /pause\nENTRYPOINT ["/pause"]\n' >"$ctx/Dockerfile"
				docker build -q -t "$img" "$ctx"; rm -rf "$ctx" ;;
			*) die "no offline recipe for image $img" ;;
		esac
		tags+=("$img")
	done < <(printf '%s\n' "${COMPONENT_IMAGES[@]}")
	docker save -o "$WORK/components.tar" "${tags[@]}"
}

build_node() {
	docker rm -f dcsi-node-build >/dev/null 2>&1 || true
	docker run -d --name dcsi-node-build --privileged --entrypoint /bin/sleep "$BASE_IMAGE" infinity
	docker cp "$WORK/components.tar" dcsi-node-build:/components.tar
	docker exec dcsi-node-build /bin/bash -euc '
		mkdir -p /run/containerd
		containerd --config /etc/containerd/config.toml >/tmp/containerd.log 2>&1 &
		for i in $(seq 1 60); do ctr version >/dev/null 2>&1 && break; sleep 1; done
		ctr --namespace=k8s.io images import --no-unpack --digests /components.tar
		ctr --namespace=k8s.io images ls -q
		kill %1; wait || true
		rm -f /components.tar /tmp/containerd.log
		rm -rf /run/containerd'
	docker stop -t 1 dcsi-node-build >/dev/null
	docker commit dcsi-node-build "$NODE_IMAGE-committed"
	docker rm -f dcsi-node-build >/dev/null
	with_node_config "$NODE_IMAGE-committed" "$NODE_IMAGE"
	docker rmi "$NODE_IMAGE-committed" >/dev/null
	rm -f "$WORK/components.tar"
}

main() {
	node_keys
	if docker image inspect "$NODE_IMAGE" >/dev/null 2>&1; then
		echo "$NODE_IMAGE"; return
	fi
	mkdir -p "$WORK"
	[[ -x $K8S_BIN/kubeadm ]] || die "Kubernetes binaries missing in $K8S_BIN: run ci/k8s-build.sh (make k8s-bins)"
	mapfile -t COMPONENT_IMAGES < <("$K8S_BIN/kubeadm" config images list --kubernetes-version "$K8S_VERSION")
	PAUSE_IMAGE=$(printf '%s\n' "${COMPONENT_IMAGES[@]}" | grep '/pause:')
	[[ -f $ROOTFS_TAR ]] || with_lock debootstrap step node-debootstrap build_debootstrap
	if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
		step node-rootfs customize_rootfs
		step node-base-import build_base
	fi
	step node-components build_components
	step node-commit build_node
	prune_old_images
	echo "$NODE_IMAGE"
}

# prune_old_images: node images of other input hashes are dead weight in the
# data root (an image still used by a container stays).
prune_old_images() {
	local img
	for img in $(docker images --format '{{.Repository}}:{{.Tag}}' | grep -E '^datadog-csi/kind-(node|base):' | grep -vxF -e "$NODE_IMAGE" -e "$BASE_IMAGE"); do
		docker rmi "$img" >/dev/null 2>&1 || true
	done
	rm -rf "$CACHE_DIR"/node/*/ 2>/dev/null || true
}

case ${1:-} in
	--rootfs-only) [[ -f $ROOTFS_TAR ]] || with_lock debootstrap step node-debootstrap build_debootstrap ;;
	--print-name) node_keys; echo "$NODE_IMAGE" ;;
	*) main ;;
esac
