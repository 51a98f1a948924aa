// Package apiserver installs and upgrades the charts with the helm CLIs
// against a real kube-apiserver (tests/internal/controlplane, from
// `make k8s-bins`): the API server validates every object, evaluates the
// volume policy, and a `helm upgrade` - client-side apply with Helm v3,
// server-side apply with Helm v4 - must keep the caBundle and certificate
// the webhook wrote. Run by `make integration` (it needs K8S_BIN_DIR).
package apiserver
