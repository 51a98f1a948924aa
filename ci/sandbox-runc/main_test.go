package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestFixDropsCapabilitiesOutsideBoundingSet(t *testing.T) {
	l := limits{bounding: 1<<21 | 1<<0, oomScoreAdj: 0} // SYS_ADMIN, CHOWN
	p := map[string]any{"capabilities": map[string]any{
		"bounding":  []any{"CAP_CHOWN", "CAP_SYS_ADMIN", "CAP_SYS_RESOURCE"},
		"effective": []any{"CAP_SYS_RESOURCE"},
	}}
	if !l.fix(p) {
		t.Fatal("fix reported no change")
	}
	caps := p["capabilities"].(map[string]any)
	if got := caps["bounding"].([]any); len(got) != 2 || got[0] != "CAP_CHOWN" || got[1] != "CAP_SYS_ADMIN" {
		t.Errorf("bounding = %v", got)
	}
	if got := caps["effective"].([]any); len(got) != 0 {
		t.Errorf("effective = %v", got)
	}
}

func TestFixClampsOOMScoreAndRlimits(t *testing.T) {
	var own unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &own); err != nil {
		t.Fatal(err)
	}
	l := limits{bounding: ^uint64(0), oomScoreAdj: -500}
	p := map[string]any{
		"oomScoreAdj": json.Number("-999"),
		"rlimits":     []any{map[string]any{"type": "RLIMIT_NOFILE", "hard": json.Number("18446744073709551615"), "soft": json.Number("18446744073709551615")}},
	}
	if !l.fix(p) {
		t.Fatal("fix reported no change")
	}
	if p["oomScoreAdj"] != json.Number("-500") {
		t.Errorf("oomScoreAdj = %v", p["oomScoreAdj"])
	}
	r := p["rlimits"].([]any)[0].(map[string]any)
	if own.Max != ^uint64(0) && (r["hard"].(json.Number).String() == "18446744073709551615" || r["soft"] != r["hard"]) {
		t.Errorf("rlimit not clamped to %d: %v", own.Max, r)
	}
	if l.fix(p) {
		t.Error("second fix changed an already fixed spec")
	}
}

func TestRewriteCreateEditsBundleConfig(t *testing.T) {
	bundle := t.TempDir()
	spec := `{"ociVersion":"1.0.2","process":{"capabilities":{"bounding":["CAP_NOT_A_REAL_ONE","CAP_CHOWN"]},"rlimits":[{"type":"RLIMIT_NOFILE","hard":1,"soft":1}]},"root":{"path":"rootfs"}}`
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := rewrite([]string{"--root", "/run/x", "--log", "/tmp/l", "create", "--bundle", bundle, "--pid-file", "p", "id"}); err != nil {
		t.Fatal(err)
	}
	out, _ := os.ReadFile(filepath.Join(bundle, "config.json"))
	// Nothing needed fixing (CHOWN is in every bounding set, unknown names are
	// left to runc, a hard limit of 1 is below ours): the file is untouched.
	if string(out) != spec {
		t.Errorf("spec rewritten without need:\n%s", out)
	}
	if !strings.Contains(string(out), `"ociVersion":"1.0.2"`) {
		t.Error("unknown fields lost")
	}
}

func TestSplitCommand(t *testing.T) {
	cmd, rest := splitCommand([]string{"--root", "/r", "--systemd-cgroup", "exec", "--process", "/p.json", "id"})
	if cmd != "exec" || flagValue(rest, "--process", "-p") != "/p.json" {
		t.Errorf("got %q %v", cmd, rest)
	}
	if v := flagValue([]string{"--bundle=/b"}, "--bundle", "-b"); v != "/b" {
		t.Errorf("--bundle= form: %q", v)
	}
}
