#!/usr/bin/env bash
# Builds Kubernetes, etcd, coredns and crictl from the Go module proxy into
# $CACHE_DIR/k8s/$K8S_VERSION/bin, keyed by version: a warm rerun builds nothing.
# etcd, coredns and crictl have versions of their own: each is built once per
# version and recipe into $CACHE_DIR/k8s/components/<name>-<version>-<hash> and
# linked into that bin dir, so bumping one in ci/versions.sh rebuilds it alone.
#
#   ci/k8s-build.sh                  build what is missing (all binaries)
#   ci/k8s-build.sh kubectl          build only kubectl (what `make tools` needs)
#   ci/k8s-build.sh --print-bin-dir  print the bin dir and exit
#
# Kubernetes is built in a scratch module that requires k8s.io/kubernetes and
# replaces each staging module (`=> ./staging/...` in its go.mod, which a module
# download cannot follow) with the published k8s.io/<name> v0.<minor>.<patch>.
. "$(dirname "$0")/lib.sh"

OUT=$CACHE_DIR/k8s/$K8S_VERSION
BIN=$OUT/bin
COMPONENTS=$CACHE_DIR/k8s/components
[[ ${1:-} == --print-bin-dir ]] && { echo "$BIN"; exit 0; }

K8S_CMDS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubeadm kube-proxy kubectl)
want=("${@:-all}")

have_all() { local f; for f in "$@"; do [[ -x $BIN/$f ]] || return 1; done; }

k8s_module() {
	local src=$OUT/src/kubernetes kdir minor staging
	mkdir -p "$src"
	kdir=$(go_mod_dir "k8s.io/kubernetes@$K8S_VERSION")
	minor=${K8S_VERSION#v1.}
	staging=$(sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\1#p' "$kdir/go.mod")
	[[ -n $staging ]] || die "no staging replaces found in $kdir/go.mod"
	{
		echo "module k8sbuild"
		echo
		echo "go 1.26"
		echo
		echo "require k8s.io/kubernetes $K8S_VERSION"
		echo
		for m in $staging; do echo "replace $m => $m v0.$minor"; done
	} >"$src/go.mod"
	echo "package main" >"$src/doc.go"
	local pkgs=()
	for c in "${K8S_CMDS[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c@$K8S_VERSION"); done
	(cd "$src" && go get "${pkgs[@]}")
}

k8s_ldflags() {
	local v=$K8S_VERSION major minor p flags="-s -w"
	major=${v#v}; major=${major%%.*}; minor=${v#v*.}; minor=${minor%%.*}
	for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		flags+=" -X $p.gitVersion=$v -X $p.gitMajor=$major -X $p.gitMinor=$minor"
		flags+=" -X $p.gitCommit=0000000000000000000000000000000000000000 -X $p.gitTreeState=clean"
		flags+=" -X $p.buildDate=2026-01-01T00:00:00Z"
	done
	echo "$flags"
}

build_k8s() {
	local cmds=("$@") pkgs=() c
	[[ -f $OUT/src/kubernetes/go.sum ]] || k8s_module
	for c in "${cmds[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
	(cd "$OUT/src/kubernetes" && CGO_ENABLED=0 go build -trimpath -ldflags "$(k8s_ldflags)" -o "$BIN/" "${pkgs[@]}")
}

# A main package in a scratch module, for modules whose own main cannot be
# `go install`ed (etcd's replace directives) or to pin the exact version.
#   name  module  version  package  main.go ("" when package is the main package)
ETCD_MAIN='package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }'
ETCD=(etcd go.etcd.io/etcd/server/v3 "$ETCD_VERSION" "" "$ETCD_MAIN")
COREDNS=(coredns github.com/coredns/coredns "$COREDNS_VERSION" github.com/coredns/coredns "")
CRICTL=(crictl sigs.k8s.io/cri-tools "$CRITOOLS_VERSION" sigs.k8s.io/cri-tools/cmd/crictl "")
SCRATCH_LDFLAGS="-s -w"

# component_dir NAME MODULE VERSION PACKAGE MAIN: keyed by everything that makes
# the binary (as tool_dir in ci/tools.sh), so a new version or recipe rebuilds.
component_dir() {
	echo "$COMPONENTS/$1-$3-$(printf '%s\n' "$@" "$SCRATCH_LDFLAGS" | sha256sum | cut -c1-8)"
}

build_scratch() {
	local dir=$1 name=$2 module=$3 version=$4 pkg=$5 main=$6
	# A concurrent run may have built it while we waited for the lock.
	[[ -x $dir/$name ]] && return 0
	local src=$dir/src
	rm -rf "$src" && mkdir -p "$src"
	printf 'module %sbuild\n\ngo 1.26\n' "$name" >"$src/go.mod"
	if [[ -n $main ]]; then
		printf '%s\n' "$main" >"$src/main.go"
		pkg=.
	else
		echo "package main" >"$src/doc.go"
	fi
	# With a main.go of ours, tidy records what it imports; without one, `go get
	# <package>@<version>` has already recorded what that package needs.
	if [[ -n $main ]]; then
		(cd "$src" && go get "$module@$version" && go mod tidy)
	else
		(cd "$src" && go get "$pkg@$version")
	fi
	(cd "$src" && CGO_ENABLED=0 go build -trimpath -ldflags "$SCRATCH_LDFLAGS" -o "$dir/$name.tmp" "$pkg")
	mv "$dir/$name.tmp" "$dir/$name"
}

# component NAME MODULE VERSION PACKAGE MAIN: build it unless cached, and point
# $BIN/NAME at it. The link is relative (CACHE_DIR may move) and replaced with a
# rename, so a test reading the bin dir meanwhile never finds it missing.
component() {
	local name=$1 dir rel
	dir=$(component_dir "$@")
	rel=../../components/${dir##*/}/$name
	[[ -x $dir/$name ]] || with_lock "$name" step "$name" build_scratch "$dir" "$@"
	[[ $(readlink "$BIN/$name" 2>/dev/null) == "$rel" ]] && return 0
	ln -sfn "$rel" "$BIN/.$name.$$"
	mv -fT "$BIN/.$name.$$" "$BIN/$name"
}

main() {
	mkdir -p "$BIN"
	if [[ ${want[0]} == kubectl ]]; then
		have_all kubectl || with_lock k8s step k8s-kubectl build_k8s kubectl
		return
	fi
	if ! have_all "${K8S_CMDS[@]}"; then
		log "building Kubernetes $K8S_VERSION (cold: about 11 min on 2 cores)"
		with_lock k8s step k8s-binaries build_k8s "${K8S_CMDS[@]}"
	fi
	# Before this layout they were plain files in $BIN: those are replaced by links.
	component "${ETCD[@]}"
	component "${COREDNS[@]}"
	component "${CRICTL[@]}"
	log "Kubernetes binaries ready in $BIN"
}
main
