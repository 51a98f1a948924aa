package main

import (
	"path/filepath"
	"testing"
)

func TestSocketPath(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct{ url, want, err string }{
		{"", "", ""},
		{"unix:///var/run/datadog/dsd.socket", "/var/run/datadog/dsd.socket", ""},
		{"unix://" + dir, filepath.Join(dir, "dsd.socket"), ""}, // a directory volume's URL
		{"udp://10.0.0.1:8125", "", "not a unix"},
		{"unix://relative/dsd.socket", "", "not a unix"},
	} {
		got, err := socketPath(c.url, "dsd.socket")
		if (err != nil) != (c.err != "") || got != c.want {
			t.Errorf("socketPath(%q) = %q, %v; want %q, error %q", c.url, got, err, c.want, c.err)
		}
	}
}
