// Package tests holds the project's tests that need more than the product
// module: chart rendering with the Helm SDK, integration tests against a real
// kube-apiserver, and end-to-end tests on a kind cluster with terratest. It is
// its own module so that terratest, kind and Helm stay out of the product's go.mod.
package tests
