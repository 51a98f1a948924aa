# Pinned versions of everything the scripts build or install. One place to bump.
# shellcheck shell=bash
K8S_VERSION=v1.37.2        # kubelet, kubeadm, control plane, kubectl (from the Go module proxy)
ETCD_VERSION=v3.7.3        # go.etcd.io/etcd/server/v3
COREDNS_VERSION=v1.14.6    # github.com/coredns/coredns
CRITOOLS_VERSION=v1.37.0   # sigs.k8s.io/cri-tools (crictl)
KIND_VERSION=v0.33.0       # sigs.k8s.io/kind
HELM_VERSION=v3.22.0       # helm.sh/helm/v3 -> bin/helm
HELM4_VERSION=v4.3.1       # helm.sh/helm/v4 -> bin/helm4
HELM_DOCS_VERSION=v1.14.2  # github.com/norwoodj/helm-docs
CT_VERSION=v3.14.0         # github.com/helm/chart-testing/v3
BENCHSTAT_VERSION=v0.0.0-20260908200009-22c9c6c9d4da # golang.org/x/perf (benchstat)
DEBIAN_SUITE=bookworm      # node image root file system
