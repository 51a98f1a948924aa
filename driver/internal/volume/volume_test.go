package volume_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/datadog-csi/datadog-csi/driver/internal/volume"
	"github.com/datadog-csi/datadog-csi/pkg/datadog"
)

func defaultAllowList(t testing.TB) volume.AllowList {
	t.Helper()
	a, err := volume.NewAllowList(datadog.DefaultAPMSocketPath, "/var/run/datadog-dsd/dsd.socket")
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestResolveAccepts(t *testing.T) {
	a := defaultAllowList(t)
	tests := []struct {
		attrs map[string]string
		want  volume.Spec
	}{
		{map[string]string{"type": "APMSocket"}, volume.Spec{Label: "APMSocket", Socket: datadog.SocketAPM, Source: "/var/run/datadog/apm.socket"}},
		{map[string]string{"type": "DSDSocket"}, volume.Spec{Label: "DSDSocket", Socket: datadog.SocketDSD, Source: "/var/run/datadog-dsd/dsd.socket"}},
		{map[string]string{"type": "APMSocketDirectory"}, volume.Spec{Label: "APMSocketDirectory", Socket: datadog.SocketAPM, Directory: true, Source: "/var/run/datadog"}},
		{map[string]string{"type": "DSDSocketDirectory"}, volume.Spec{Label: "DSDSocketDirectory", Socket: datadog.SocketDSD, Directory: true, Source: "/var/run/datadog-dsd"}},
		{map[string]string{"type": "DatadogSocketsDirectory"}, volume.Spec{Label: "DatadogSocketsDirectory", Socket: datadog.SocketDSD, Directory: true, Source: "/var/run/datadog-dsd", Deprecated: true}},
		// type wins over the legacy keys, whatever they say.
		{map[string]string{"type": "APMSocket", "mode": "local", "path": "/etc"}, volume.Spec{Label: "APMSocket", Socket: datadog.SocketAPM, Source: "/var/run/datadog/apm.socket"}},
		{map[string]string{"mode": "socket", "path": "/var/run/datadog/apm.socket"}, volume.Spec{Label: volume.LegacySocketLabel, Socket: datadog.SocketAPM, Source: "/var/run/datadog/apm.socket"}},
		{map[string]string{"mode": "socket", "path": "/var/run/datadog-dsd//dsd.socket"}, volume.Spec{Label: volume.LegacySocketLabel, Socket: datadog.SocketDSD, Source: "/var/run/datadog-dsd/dsd.socket"}},
		{map[string]string{"mode": "local", "path": "/var/run/datadog/"}, volume.Spec{Label: volume.LegacyLocalLabel, Socket: datadog.SocketAPM, Directory: true, Source: "/var/run/datadog"}},
		{map[string]string{"mode": "local", "path": "/var/run/datadog-dsd/."}, volume.Spec{Label: volume.LegacyLocalLabel, Socket: datadog.SocketDSD, Directory: true, Source: "/var/run/datadog-dsd"}},
	}
	for _, tt := range tests {
		got, err := a.Resolve(tt.attrs)
		if err != nil || got != tt.want {
			t.Errorf("Resolve(%v) = %+v, %v; want %+v", tt.attrs, got, err, tt.want)
		}
	}
}

func TestResolveRefuses(t *testing.T) {
	a := defaultAllowList(t)
	tests := []struct {
		attrs       map[string]string
		wantMessage string
	}{
		{nil, "no type and no mode"},
		{map[string]string{"type": ""}, "type is empty"},
		{map[string]string{"type": "apmsocket"}, "APMSocket, APMSocketDirectory"},
		{map[string]string{"type": "HostPath"}, "unknown type"},
		{map[string]string{"mode": "hostpath", "path": "/var/run/datadog"}, "unknown mode"},
		{map[string]string{"mode": "socket"}, "needs a path"},
		{map[string]string{"mode": "socket", "path": ""}, "needs a path"},
		{map[string]string{"mode": "socket", "path": "/etc/shadow"}, "not allowed"},
		{map[string]string{"mode": "socket", "path": "/var/run/datadog"}, "not allowed"},
		{map[string]string{"mode": "local", "path": "/var/run/datadog/apm.socket"}, "not allowed"},
		{map[string]string{"mode": "local", "path": "/"}, "not allowed"},
		{map[string]string{"mode": "socket", "path": "var/run/datadog/apm.socket"}, "absolute"},
		{map[string]string{"mode": "socket", "path": "/var/run/datadog/../datadog/apm.socket"}, "\"..\""},
		{map[string]string{"mode": "local", "path": "/var/run/datadog/x/.."}, "\"..\""},
		{map[string]string{"mode": "socket", "path": "/var/run/datadog/apm.socket\x00"}, "absolute"},
	}
	for _, tt := range tests {
		_, err := a.Resolve(tt.attrs)
		if !errors.Is(err, volume.ErrInvalid) {
			t.Errorf("Resolve(%q): got %v, want ErrInvalid", tt.attrs, err)
			continue
		}
		if !strings.Contains(err.Error(), tt.wantMessage) {
			t.Errorf("Resolve(%q): message %q lacks %q", tt.attrs, err, tt.wantMessage)
		}
	}
}

func TestNewAllowListRefusesBadPaths(t *testing.T) {
	for _, p := range []string{"", "apm.socket", "/var/run/../apm.socket", "/var/run//apm.socket", "/var/run/datadog/", "/"} {
		if _, err := volume.NewAllowList(p, datadog.DefaultDSDSocketPath); err == nil {
			t.Errorf("NewAllowList(%q) accepted a bad path", p)
		}
	}
}

// FuzzResolve checks the allow-list invariant on arbitrary attributes: a
// resolved source is always a configured socket path or its directory, and
// every refusal wraps ErrInvalid.
func FuzzResolve(f *testing.F) {
	a := defaultAllowList(f)
	allowed := map[string]bool{
		"/var/run/datadog/apm.socket": true, "/var/run/datadog-dsd/dsd.socket": true,
		"/var/run/datadog": true, "/var/run/datadog-dsd": true,
	}
	f.Add("APMSocket", "", "", true, false, false)
	f.Add("", "socket", "/var/run/datadog/apm.socket", false, true, true)
	f.Add("", "local", "/var/run/datadog/../../etc", false, true, true)
	f.Fuzz(func(t *testing.T, typ, mode, path string, hasType, hasMode, hasPath bool) {
		attrs := map[string]string{}
		if hasType {
			attrs[datadog.AttrType] = typ
		}
		if hasMode {
			attrs[datadog.AttrMode] = mode
		}
		if hasPath {
			attrs[datadog.AttrPath] = path
		}
		spec, err := a.Resolve(attrs)
		if err != nil {
			if !errors.Is(err, volume.ErrInvalid) {
				t.Fatalf("refusal does not wrap ErrInvalid: %v", err)
			}
			return
		}
		if !allowed[spec.Source] {
			t.Fatalf("Resolve(%q) exposes %q, outside the allow-list", attrs, spec.Source)
		}
		if spec.Label == "" || spec.Socket == 0 {
			t.Fatalf("incomplete spec %+v", spec)
		}
	})
}

func TestResolveSymlinksOnceAtStart(t *testing.T) {
	dir := t.TempDir()
	real := filepath.Join(dir, "run", "datadog")
	if err := os.MkdirAll(real, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(dir, "run"), filepath.Join(dir, "varrun")); err != nil {
		t.Fatal(err)
	}
	configured := filepath.Join(dir, "varrun", "datadog", "apm.socket")
	notYet := filepath.Join(dir, "varrun", "later", "dsd.socket")
	a, err := volume.NewAllowList(configured, notYet)
	if err != nil {
		t.Fatal(err)
	}
	a, err = a.ResolveSymlinks()
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		attrs map[string]string
		want  string
	}{
		{map[string]string{"type": "APMSocket"}, filepath.Join(real, "apm.socket")},
		{map[string]string{"type": "APMSocketDirectory"}, real},
		{map[string]string{"type": "DSDSocket"}, filepath.Join(dir, "run", "later", "dsd.socket")},
		// Legacy paths are compared with the configured spelling, mounted resolved.
		{map[string]string{"mode": "socket", "path": configured}, filepath.Join(real, "apm.socket")},
		{map[string]string{"mode": "local", "path": filepath.Dir(configured)}, real},
	}
	for _, c := range cases {
		spec, err := a.Resolve(c.attrs)
		if err != nil || spec.Source != c.want {
			t.Errorf("Resolve(%v).Source = %q, %v; want %q", c.attrs, spec.Source, err, c.want)
		}
	}
	if _, err := a.Resolve(map[string]string{"mode": "socket", "path": filepath.Join(real, "apm.socket")}); err == nil {
		t.Error("a legacy path must match the configured spelling, not the resolved one")
	}
}
