// Package charts tests the Helm charts in ../../charts: each renders with
// its defaults and with each ci/*-values.yaml into objects that decode
// strictly into the Kubernetes API types, Datadog's chart values land where
// they should, the webhook pod passes Pod Security "restricted", bad values
// fail with a message naming the value, and the packaged chart repository in
// ../../dist/charts serves `helm repo add` and `helm install`.
//
// Rendering uses the Helm v3 SDK, as `helm template` does; the chart
// repository test runs the helm CLI from ../../bin.
package charts
