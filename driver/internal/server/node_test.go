package server

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/datadog-csi/datadog-csi/driver/internal/testenv"
)

func TestPublishEveryType(t *testing.T) {
	testenv.RequireRoot(t)
	agent := testenv.NewAgent(t)
	d := startDriver(t, agent.APMSocket, agent.DSDSocket)
	ctx := context.Background()

	tests := []struct {
		name  string
		attrs map[string]string
		// apm and dsd locate the sockets relative to the target ("." = the target itself).
		apm, dsd string
	}{
		{"APMSocket", map[string]string{"type": "APMSocket"}, ".", ""},
		{"DSDSocket", map[string]string{"type": "DSDSocket"}, "", "."},
		{"APMSocketDirectory", map[string]string{"type": "APMSocketDirectory"}, "apm.socket", "dsd.socket"},
		{"DSDSocketDirectory", map[string]string{"type": "DSDSocketDirectory"}, "apm.socket", "dsd.socket"},
		{"DatadogSocketsDirectory", map[string]string{"type": "DatadogSocketsDirectory"}, "apm.socket", "dsd.socket"},
		{"legacy socket APM", map[string]string{"mode": "socket", "path": agent.APMSocket}, ".", ""},
		{"legacy socket DSD", map[string]string{"mode": "socket", "path": agent.DSDSocket}, "", "."},
		{"legacy local", map[string]string{"mode": "local", "path": agent.Dir + "/"}, "apm.socket", "dsd.socket"},
		{"without pod info", nil, ".", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			target := filepath.Join(testenv.TargetDir(t), "mount")
			req := publishRequest(target, tt.attrs)
			if tt.attrs == nil { // CSIDriver without podInfoOnMount: only the type
				req.VolumeContext = map[string]string{"type": "APMSocket"}
			}
			req.Readonly = tt.name == "APMSocket" // either value ends read-only
			if _, err := d.node.NodePublishVolume(ctx, req); err != nil {
				t.Fatalf("NodePublishVolume: %v", err)
			}
			testenv.CheckReadOnlyMount(t, target)
			if tt.apm != "" {
				if got, err := testenv.DialAPM(filepath.Join(target, tt.apm)); err != nil || got != testenv.Greeting {
					t.Errorf("APM client through the mount: %q, %v", got, err)
				}
			}
			if tt.dsd != "" {
				if err := agent.SendDSD(filepath.Join(target, tt.dsd), "page.views:1|c"); err != nil {
					t.Errorf("DogStatsD client through the mount: %v", err)
				}
			}
			if _, err := d.node.NodePublishVolume(ctx, req); err != nil {
				t.Fatalf("repeated NodePublishVolume must succeed: %v", err)
			}
			unpublish := &csi.NodeUnpublishVolumeRequest{VolumeId: req.VolumeId, TargetPath: target}
			for range 2 {
				if _, err := d.node.NodeUnpublishVolume(ctx, unpublish); err != nil {
					t.Fatalf("NodeUnpublishVolume: %v", err)
				}
			}
			if _, err := os.Lstat(target); !os.IsNotExist(err) {
				t.Errorf("target not removed: %v", err)
			}
		})
	}
}

// badInput is one request the driver must refuse with code.
type badInput struct {
	name    string
	driver  string // "good", "broken" or "symlinked" agent paths
	prepare func(t *testing.T, target string)
	request func(target string) *csi.NodePublishVolumeRequest
	code    codes.Code
	message string // a substring the message must contain
}

func withAttrs(attrs map[string]string) func(string) *csi.NodePublishVolumeRequest {
	return func(target string) *csi.NodePublishVolumeRequest { return publishRequest(target, attrs) }
}

func modify(attrs map[string]string, change func(*csi.NodePublishVolumeRequest)) func(string) *csi.NodePublishVolumeRequest {
	return func(target string) *csi.NodePublishVolumeRequest {
		req := publishRequest(target, attrs)
		change(req)
		return req
	}
}

func TestPublishRefusesBadInput(t *testing.T) {
	testenv.RequireRoot(t)
	agent := testenv.NewAgent(t)
	drivers := map[string]*runningDriver{"good": startDriver(t, agent.APMSocket, agent.DSDSocket)}

	// broken: the APM socket is missing, the DogStatsD "socket" is a regular file.
	broken := testenv.ShortTempDir(t)
	os.WriteFile(filepath.Join(broken, "dsd.socket"), nil, 0o600)
	drivers["broken"] = startDriver(t, filepath.Join(broken, "apm.socket"), filepath.Join(broken, "dsd.socket"))
	// missing: even the directory is missing.
	drivers["missing"] = startDriver(t, filepath.Join(broken, "absent", "apm.socket"), filepath.Join(broken, "absent", "dsd.socket"))
	// symlinked: the APM socket is a symlink to the real one; the DogStatsD
	// directory is a real directory at start, swapped for a symlink to the
	// agent's directory after start (a link configured before start is
	// resolved once, and allowed: TestPublishThroughLinkResolvedAtStart).
	linked := testenv.ShortTempDir(t)
	os.Symlink(agent.APMSocket, filepath.Join(linked, "apm.socket"))
	os.Mkdir(filepath.Join(linked, "dsd"), 0o750)
	drivers["symlinked"] = startDriver(t, filepath.Join(linked, "apm.socket"), filepath.Join(linked, "dsd", "dsd.socket"))
	os.Remove(filepath.Join(linked, "dsd"))
	os.Symlink(agent.Dir, filepath.Join(linked, "dsd"))

	apm := map[string]string{"type": "APMSocket"}
	allowedTypes := "APMSocket, APMSocketDirectory, DSDSocket, DSDSocketDirectory, DatadogSocketsDirectory"
	mountOther := func(t *testing.T, target string) {
		other := filepath.Join(filepath.Dir(target), "other")
		os.Mkdir(other, 0o750)
		os.Mkdir(target, 0o750)
		if err := unix.Mount(other, target, "", unix.MS_BIND, ""); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Unmount(target, 0) })
	}
	tests := []badInput{
		{name: "no volume id", request: modify(apm, func(r *csi.NodePublishVolumeRequest) { r.VolumeId = "" }), code: codes.InvalidArgument, message: "volume_id"},
		{name: "no target", request: modify(apm, func(r *csi.NodePublishVolumeRequest) { r.TargetPath = "" }), code: codes.InvalidArgument, message: "target_path"},
		{name: "no capability", request: modify(apm, func(r *csi.NodePublishVolumeRequest) { r.VolumeCapability = nil }), code: codes.InvalidArgument, message: "volume_capability"},
		{name: "block access", request: modify(apm, func(r *csi.NodePublishVolumeRequest) {
			r.VolumeCapability.AccessType = &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}}
		}), code: codes.InvalidArgument, message: "block"},
		{name: "no access type", request: modify(apm, func(r *csi.NodePublishVolumeRequest) { r.VolumeCapability.AccessType = nil }), code: codes.InvalidArgument, message: "access type mount"},
		{name: "no access mode", request: modify(apm, func(r *csi.NodePublishVolumeRequest) { r.VolumeCapability.AccessMode = nil }), code: codes.InvalidArgument, message: "access_mode"},
		{name: "relative target", request: modify(apm, func(r *csi.NodePublishVolumeRequest) { r.TargetPath = "pods/x/mount" }), code: codes.InvalidArgument, message: "relative"},
		{name: "target with dotdot", request: modify(apm, func(r *csi.NodePublishVolumeRequest) { r.TargetPath = r.TargetPath + "/../../etc" }), code: codes.InvalidArgument, message: `".."`},
		{name: "target not clean", request: modify(apm, func(r *csi.NodePublishVolumeRequest) { r.TargetPath += "/" }), code: codes.InvalidArgument, message: "not clean"},
		{name: "not ephemeral", request: withAttrs(map[string]string{"type": "APMSocket", "csi.storage.k8s.io/ephemeral": "false"}), code: codes.InvalidArgument, message: "ephemeral inline"},
		{name: "no attributes", request: modify(nil, func(r *csi.NodePublishVolumeRequest) { r.VolumeContext = nil }), code: codes.InvalidArgument, message: allowedTypes},
		{name: "empty type", request: withAttrs(map[string]string{"type": ""}), code: codes.InvalidArgument, message: allowedTypes},
		{name: "unknown type", request: withAttrs(map[string]string{"type": "HostPath"}), code: codes.InvalidArgument, message: allowedTypes},
		{name: "type in the wrong case", request: withAttrs(map[string]string{"type": "apmsocket"}), code: codes.InvalidArgument, message: allowedTypes},
		{name: "unknown legacy mode", request: withAttrs(map[string]string{"mode": "hostPath", "path": agent.Dir}), code: codes.InvalidArgument, message: "unknown mode"},
		{name: "legacy without path", request: withAttrs(map[string]string{"mode": "socket"}), code: codes.InvalidArgument, message: "needs a path"},
		{name: "legacy path outside the allow-list", request: withAttrs(map[string]string{"mode": "socket", "path": "/run/containerd/containerd.sock"}), code: codes.InvalidArgument, message: "not allowed"},
		{name: "legacy local path outside the allow-list", request: withAttrs(map[string]string{"mode": "local", "path": "/etc"}), code: codes.InvalidArgument, message: "not allowed"},
		{name: "legacy local root", request: withAttrs(map[string]string{"mode": "local", "path": "/"}), code: codes.InvalidArgument, message: "not allowed"},
		{name: "legacy socket mode with the directory", request: withAttrs(map[string]string{"mode": "socket", "path": agent.Dir}), code: codes.InvalidArgument, message: "not allowed"},
		{name: "legacy local mode with the socket", request: withAttrs(map[string]string{"mode": "local", "path": agent.APMSocket}), code: codes.InvalidArgument, message: "not allowed"},
		{name: "legacy path with dotdot", request: withAttrs(map[string]string{"mode": "socket", "path": agent.Dir + "/../" + filepath.Base(agent.Dir) + "/apm.socket"}), code: codes.InvalidArgument, message: `".."`},
		{name: "legacy relative path", request: withAttrs(map[string]string{"mode": "socket", "path": "apm.socket"}), code: codes.InvalidArgument, message: "absolute"},
		{name: "legacy symlink to elsewhere", prepare: func(t *testing.T, target string) {
			os.Symlink("/etc", filepath.Join(agent.Dir, "etc-link"))
			t.Cleanup(func() { os.Remove(filepath.Join(agent.Dir, "etc-link")) })
		}, request: withAttrs(map[string]string{"mode": "local", "path": agent.Dir + "/etc-link"}), code: codes.InvalidArgument, message: "not allowed"},
		{name: "missing APM socket", driver: "broken", request: withAttrs(apm), code: codes.Unavailable, message: "apm.socket does not exist"},
		{name: "missing socket directory", driver: "missing", request: withAttrs(map[string]string{"type": "DSDSocketDirectory"}), code: codes.Unavailable, message: "absent does not exist"},
		{name: "missing socket in a missing directory", driver: "missing", request: withAttrs(map[string]string{"type": "DSDSocket"}), code: codes.Unavailable, message: "dsd.socket does not exist"},
		{name: "socket path is a regular file", driver: "broken", request: withAttrs(map[string]string{"type": "DSDSocket"}), code: codes.FailedPrecondition, message: "regular file, want a socket"},
		{name: "socket path is a symlink", driver: "symlinked", request: withAttrs(apm), code: codes.FailedPrecondition, message: "symbolic link"},
		{name: "socket directory swapped for a symlink after start", driver: "symlinked", request: withAttrs(map[string]string{"type": "DSDSocketDirectory"}), code: codes.FailedPrecondition, message: "symbolic link"},
		{name: "socket behind a directory swapped for a symlink", driver: "symlinked", request: withAttrs(map[string]string{"type": "DSDSocket"}), code: codes.FailedPrecondition, message: "symbolic link"},
		{name: "target occupied by another mount", prepare: mountOther, request: withAttrs(map[string]string{"type": "APMSocketDirectory"}), code: codes.AlreadyExists, message: "occupied"},
		{name: "target is a symlink", prepare: func(t *testing.T, target string) { os.Symlink("/etc", target) }, request: withAttrs(map[string]string{"type": "APMSocketDirectory"}), code: codes.FailedPrecondition, message: "symbolic link"},
		{name: "target is a non-empty directory", prepare: func(t *testing.T, target string) {
			os.Mkdir(target, 0o750)
			os.WriteFile(filepath.Join(target, "data"), []byte("x"), 0o600)
		}, request: withAttrs(apm), code: codes.FailedPrecondition, message: "directory not empty"},
		{name: "target parent missing", request: modify(apm, func(r *csi.NodePublishVolumeRequest) { r.TargetPath = filepath.Join(r.TargetPath, "deeper", "mount") }), code: codes.FailedPrecondition, message: "no such file"},
	}
	ctx := context.Background()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			driver := drivers[tt.driver]
			if tt.driver == "" {
				driver = drivers["good"]
			}
			target := filepath.Join(testenv.TargetDir(t), "mount")
			if tt.prepare != nil {
				tt.prepare(t, target)
			}
			_, err := driver.node.NodePublishVolume(ctx, tt.request(target))
			if got := status.Code(err); got != tt.code {
				t.Fatalf("code %v (%v), want %v", got, err, tt.code)
			}
			if msg := status.Convert(err).Message(); !strings.Contains(msg, tt.message) {
				t.Errorf("message %q lacks %q", msg, tt.message)
			}
			if mounts, _ := testenv.MountsUnder(target); tt.prepare == nil && len(mounts) > 0 {
				t.Errorf("a refused publish left mounts: %v", mounts)
			}
		})
	}
	if len(tests) < 30 {
		t.Errorf("only %d bad inputs; the issue asks for at least 30", len(tests))
	}
}

// TestPublishThroughLinkResolvedAtStart: an admin may configure a path
// through a symlink (/var/run -> /run); it is resolved once at start.
func TestPublishThroughLinkResolvedAtStart(t *testing.T) {
	testenv.RequireRoot(t)
	agent := testenv.NewAgent(t)
	links := testenv.ShortTempDir(t)
	if err := os.Symlink(agent.Dir, filepath.Join(links, "datadog")); err != nil {
		t.Fatal(err)
	}
	d := startDriver(t, filepath.Join(links, "datadog", "apm.socket"), filepath.Join(links, "datadog", "dsd.socket"))
	if !strings.Contains(d.logs.String(), "goes through a symbolic link") {
		t.Errorf("the resolution is not logged:\n%s", d.logs.String())
	}
	ctx := context.Background()
	for _, attrs := range []map[string]string{{"type": "APMSocket"}, {"mode": "socket", "path": filepath.Join(links, "datadog", "apm.socket")}} {
		target := filepath.Join(testenv.TargetDir(t), "mount")
		if _, err := d.node.NodePublishVolume(ctx, publishRequest(target, attrs)); err != nil {
			t.Fatalf("publish %v: %v", attrs, err)
		}
		if got, err := testenv.DialAPM(target); err != nil || got != testenv.Greeting {
			t.Errorf("APM client through the mount: %q, %v", got, err)
		}
		if _, err := d.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: "v", TargetPath: target}); err != nil {
			t.Fatal(err)
		}
	}
}

func TestUnpublishRefusesBadInput(t *testing.T) {
	testenv.RequireRoot(t)
	agent := testenv.NewAgent(t)
	d := startDriver(t, agent.APMSocket, agent.DSDSocket)
	ctx := context.Background()
	full := filepath.Join(testenv.TargetDir(t), "full")
	os.Mkdir(full, 0o750)
	os.WriteFile(filepath.Join(full, "data"), []byte("x"), 0o600)
	tests := []struct {
		name string
		req  *csi.NodeUnpublishVolumeRequest
		code codes.Code
	}{
		{"no volume id", &csi.NodeUnpublishVolumeRequest{TargetPath: full}, codes.InvalidArgument},
		{"no target", &csi.NodeUnpublishVolumeRequest{VolumeId: "v"}, codes.InvalidArgument},
		{"relative target", &csi.NodeUnpublishVolumeRequest{VolumeId: "v", TargetPath: "x/mount"}, codes.InvalidArgument},
		{"target with dotdot", &csi.NodeUnpublishVolumeRequest{VolumeId: "v", TargetPath: full + "/../full"}, codes.InvalidArgument},
		{"non-empty directory, never removed recursively", &csi.NodeUnpublishVolumeRequest{VolumeId: "v", TargetPath: full}, codes.Internal},
		{"missing target", &csi.NodeUnpublishVolumeRequest{VolumeId: "v", TargetPath: full + "-absent"}, codes.OK},
	}
	for _, tt := range tests {
		_, err := d.node.NodeUnpublishVolume(ctx, tt.req)
		if got := status.Code(err); got != tt.code {
			t.Errorf("%s: code %v (%v), want %v", tt.name, got, err, tt.code)
		}
	}
	if _, err := os.Stat(filepath.Join(full, "data")); err != nil {
		t.Errorf("data inside the target was deleted: %v", err)
	}
	if _, err := d.node.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{}); status.Code(err) != codes.Unimplemented {
		t.Errorf("NodeStageVolume: %v, want Unimplemented", err)
	}
}

func TestLogsAndMetrics(t *testing.T) {
	testenv.RequireRoot(t)
	agent := testenv.NewAgent(t)
	d := startDriver(t, agent.APMSocket, agent.DSDSocket)
	ctx := context.Background()
	target := filepath.Join(testenv.TargetDir(t), "mount")
	if _, err := d.node.NodePublishVolume(ctx, publishRequest(target, map[string]string{"type": "DSDSocket"})); err != nil {
		t.Fatal(err)
	}
	if _, err := d.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: "v", TargetPath: target}); err != nil {
		t.Fatal(err)
	}
	d.node.NodePublishVolume(ctx, publishRequest(target, map[string]string{"type": "Nope"}))
	d.node.NodePublishVolume(ctx, publishRequest(target, map[string]string{"type": "DatadogSocketsDirectory"}))
	d.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: "v", TargetPath: target})

	m := d.driver.node.metrics
	checks := []struct {
		got  float64
		want float64
		what string
	}{
		{testutil.ToFloat64(m.publish.WithLabelValues("DSDSocket", "OK")), 1, "publish DSDSocket OK"},
		{testutil.ToFloat64(m.publish.WithLabelValues("invalid", "InvalidArgument")), 1, "publish invalid InvalidArgument"},
		{testutil.ToFloat64(m.publish.WithLabelValues("DatadogSocketsDirectory", "OK")), 1, "publish DatadogSocketsDirectory OK"},
		{testutil.ToFloat64(m.unpublish.WithLabelValues("OK")), 2, "unpublish OK"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.what, c.got, c.want)
		}
	}
	if n := testutil.CollectAndCount(m.duration); n != 3 { // publish OK, publish InvalidArgument, unpublish OK
		t.Errorf("duration histogram has %d series, want 3", n)
	}

	var published, deprecated bool
	for _, line := range strings.Split(strings.TrimSpace(d.logs.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line is not JSON: %q", line)
		}
		if rec["msg"] == "published" && rec["type"] == "DSDSocket" {
			published = true
			for _, key := range []string{"pod_namespace", "pod_name", "code", "duration", "volume_id", "target"} {
				if _, ok := rec[key]; !ok {
					t.Errorf("publish log line lacks %q: %s", key, line)
				}
			}
			if rec["pod_namespace"] != "team-a" || rec["pod_name"] != "app-0" || rec["code"] != "OK" {
				t.Errorf("publish log line: %s", line)
			}
		}
		if strings.Contains(fmtAny(rec["msg"]), "deprecated volume type") {
			deprecated = true
		}
	}
	if _, err := d.node.NodeGetInfo(ctx, &csi.NodeGetInfoRequest{}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(d.logs.String(), `"rpc":"/csi.v1.Node/NodeGetInfo"`) {
		t.Error("other RPCs are not logged at debug level")
	}
	if !published || !deprecated {
		t.Errorf("missing log lines (published=%v, deprecation warning=%v):\n%s", published, deprecated, d.logs.String())
	}
}

func fmtAny(v any) string { s, _ := v.(string); return s }
