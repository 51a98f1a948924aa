package app

import (
	"flag"
	"reflect"
	"testing"
)

// kube-system and --namespace are never mutated, whatever
// --excluded-namespaces says; the list the mutator gets has no duplicates.
func TestExcludedNamespacesAlwaysHoldKubeSystemAndOwn(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"default", nil, []string{"kube-system", "datadog"}},
		{"empty", []string{"--excluded-namespaces="}, []string{"kube-system", "datadog"}},
		{"without kube-system", []string{"--excluded-namespaces=team-a, team-b"}, []string{"kube-system", "team-a", "team-b", "datadog"}},
		{"duplicates", []string{"--excluded-namespaces=datadog,kube-system,team-a,team-a"}, []string{"kube-system", "datadog", "team-a"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c Config
			fs := flag.NewFlagSet("serve", flag.ContinueOnError)
			c.RegisterFlags(fs)
			if err := fs.Parse(append([]string{"--namespace=datadog", "--tls-mode=" + TLSCertManager}, tc.args...)); err != nil {
				t.Fatal(err)
			}
			if err := c.Validate(); err != nil {
				t.Fatal(err)
			}
			if got := c.MutateConfig().ExcludedNamespaces; !reflect.DeepEqual(got, tc.want) {
				t.Errorf("excluded namespaces %q, want %q", got, tc.want)
			}
		})
	}
}
