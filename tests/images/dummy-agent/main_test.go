package main

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseDogStatsD(t *testing.T) {
	for _, c := range []struct{ line, metric, pod string }{
		{"e2e.ping:1|c|#pod:nginx", "e2e.ping", "nginx"},
		{"e2e.ping:1|c|@0.5|#env:test,pod:app-1", "e2e.ping", "app-1"},
		{"requests:3|g", "requests", ""},
	} {
		metric, pod := parseDogStatsD(c.line)
		if metric != c.metric || pod != c.pod {
			t.Errorf("parseDogStatsD(%q) = %q, %q; want %q, %q", c.line, metric, pod, c.metric, c.pod)
		}
	}
}

// A restarted agent replaces its stale socket, as the real agent does; it
// never removes anything that is not a socket.
func TestListenFreshReplacesStaleSocketOnly(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "apm.socket")
	first, err := listenFresh("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	first.Close() // leaves the file: SetUnlinkOnClose(false)
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("socket file removed on close: %v", err)
	}
	second, err := listenFresh("unix", path)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	defer second.Close()
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o666 {
		t.Fatalf("socket mode %v (%v), want 0666", fi.Mode(), err)
	}
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("new socket does not accept: %v", err)
	}
	c.Close()

	regular := filepath.Join(dir, "dsd.socket")
	if err := os.WriteFile(regular, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := listenFreshPacket(regular); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("listenFreshPacket over a regular file: %v; want a 'not a socket' error", err)
	}
	if b, _ := os.ReadFile(regular); string(b) != "keep" {
		t.Fatal("a regular file was removed")
	}
}
