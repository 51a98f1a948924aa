// Package contract checks that what the charts pass to the binaries is what
// the binaries accept: the webhook Deployment's args, parsed and validated by
// the webhook's own flag set (webhook/pkg/app). It is apart from package
// charts so that a webhook that does not build fails only this package.
package contract
