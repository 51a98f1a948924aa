package mounter_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/datadog-csi/datadog-csi/driver/internal/mounter"
	"github.com/datadog-csi/datadog-csi/driver/internal/testenv"
)

func TestPublishExposesSocketsReadOnly(t *testing.T) {
	testenv.RequireRoot(t)
	agent := testenv.NewAgent(t)
	m := mounter.New(mounter.RealSyscalls)

	tests := []struct {
		name      string
		source    string
		directory bool
		// apm and dsd are the socket paths relative to the target ("" = the target).
		apm, dsd string
	}{
		{name: "apm socket file", source: agent.APMSocket, apm: "."},
		{name: "dsd socket file", source: agent.DSDSocket, dsd: "."},
		{name: "socket directory", source: agent.Dir, directory: true, apm: "apm.socket", dsd: "dsd.socket"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			target := filepath.Join(testenv.TargetDir(t), "mount")
			if err := m.Publish(tt.source, tt.directory, target); err != nil {
				t.Fatalf("Publish: %v", err)
			}
			mounted, err := mounter.IsMountPoint(target)
			if err != nil || !mounted {
				t.Fatalf("IsMountPoint(%s) = %v, %v; want a mount", target, mounted, err)
			}
			testenv.CheckReadOnlyMount(t, target)

			if tt.apm != "" {
				got, err := testenv.DialAPM(filepath.Join(target, tt.apm))
				if err != nil || got != testenv.Greeting {
					t.Errorf("APM client through the read-only mount: got %q, %v; want %q", got, err, testenv.Greeting)
				}
			}
			if tt.dsd != "" {
				if err := agent.SendDSD(filepath.Join(target, tt.dsd), "metric:1|c"); err != nil {
					t.Errorf("DogStatsD client through the read-only mount: %v", err)
				}
			}
			if tt.directory {
				if err := os.WriteFile(filepath.Join(target, "planted"), nil, 0o600); !errors.Is(err, unix.EROFS) {
					t.Errorf("writing into the directory volume: got %v, want EROFS", err)
				}
			} else {
				var st unix.Stat_t
				if err := unix.Stat(target, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFSOCK {
					t.Errorf("target %s should show the socket: mode %o, %v", target, st.Mode, err)
				}
			}

			if err := m.Publish(tt.source, tt.directory, target); err != nil {
				t.Fatalf("second Publish of the same source must succeed: %v", err)
			}
			if n := countMounts(t, target); n != 1 {
				t.Errorf("after two publishes, %d mounts at the target; want 1", n)
			}
			for i := range 2 {
				if err := m.Unpublish(target); err != nil {
					t.Fatalf("Unpublish #%d: %v", i+1, err)
				}
			}
			if _, err := os.Lstat(target); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("target still exists after Unpublish: %v", err)
			}
			if n := countMounts(t, target); n != 0 {
				t.Errorf("%d mounts left at the target", n)
			}
			if _, err := os.Stat(tt.source); err != nil {
				t.Errorf("the source must survive: %v", err)
			}
		})
	}
}

func TestPublishRefusesBadSources(t *testing.T) {
	testenv.RequireRoot(t)
	agent := testenv.NewAgent(t)
	m := mounter.New(mounter.RealSyscalls)
	scratch := testenv.ShortTempDir(t)
	regular := filepath.Join(scratch, "regular.socket")
	if err := os.WriteFile(regular, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(scratch, "link.socket")
	if err := os.Symlink(agent.APMSocket, link); err != nil {
		t.Fatal(err)
	}
	linkDir := filepath.Join(scratch, "linkdir")
	if err := os.Symlink(agent.Dir, linkDir); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name      string
		source    string
		directory bool
		want      error
	}{
		{"missing socket", filepath.Join(agent.Dir, "absent.socket"), false, mounter.ErrSourceNotFound},
		{"missing directory", filepath.Join(scratch, "absent"), true, mounter.ErrSourceNotFound},
		{"regular file for a socket", regular, false, mounter.ErrSourceWrongKind},
		{"directory for a socket", agent.Dir, false, mounter.ErrSourceWrongKind},
		{"socket for a directory", agent.APMSocket, true, mounter.ErrSourceWrongKind},
		{"symlink to a socket", link, false, mounter.ErrSourceSymlink},
		{"symlinked directory", linkDir, true, mounter.ErrSourceSymlink},
		{"socket in a symlinked directory", filepath.Join(linkDir, "apm.socket"), false, mounter.ErrSourceSymlink},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			target := filepath.Join(testenv.TargetDir(t), "mount")
			err := m.Publish(tt.source, tt.directory, target)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Publish(%s): got %v, want %v", tt.source, err, tt.want)
			}
			if _, err := os.Lstat(target); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("a failed publish must not leave the target it would have created: %v", err)
			}
		})
	}
}

func TestPublishRefusesBadTargets(t *testing.T) {
	testenv.RequireRoot(t)
	agent := testenv.NewAgent(t)
	m := mounter.New(mounter.RealSyscalls)

	t.Run("occupied by another mount", func(t *testing.T) {
		dir := testenv.TargetDir(t)
		target := filepath.Join(dir, "mount")
		other := filepath.Join(dir, "other")
		for _, d := range []string{target, other} {
			if err := os.Mkdir(d, 0o750); err != nil {
				t.Fatal(err)
			}
		}
		if err := unix.Mount(other, target, "", unix.MS_BIND, ""); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Unmount(target, 0) })
		if err := m.Publish(agent.Dir, true, target); !errors.Is(err, mounter.ErrTargetOccupied) {
			t.Fatalf("got %v, want ErrTargetOccupied", err)
		}
		if n := countMounts(t, target); n != 1 {
			t.Errorf("the other mount must be left alone: %d mounts", n)
		}
	})
	t.Run("symlink", func(t *testing.T) {
		dir := testenv.TargetDir(t)
		target := filepath.Join(dir, "mount")
		os.Mkdir(filepath.Join(dir, "elsewhere"), 0o750)
		if err := os.Symlink(filepath.Join(dir, "elsewhere"), target); err != nil {
			t.Fatal(err)
		}
		if err := m.Publish(agent.Dir, true, target); !errors.Is(err, mounter.ErrTargetInvalid) {
			t.Fatalf("got %v, want ErrTargetInvalid", err)
		}
	})
	t.Run("non-empty directory for a socket", func(t *testing.T) {
		target := filepath.Join(testenv.TargetDir(t), "mount")
		os.Mkdir(target, 0o750)
		os.WriteFile(filepath.Join(target, "keep"), []byte("x"), 0o600)
		if err := m.Publish(agent.APMSocket, false, target); !errors.Is(err, mounter.ErrTargetInvalid) {
			t.Fatalf("got %v, want ErrTargetInvalid", err)
		}
		if _, err := os.Stat(filepath.Join(target, "keep")); err != nil {
			t.Errorf("content of the target must be kept: %v", err)
		}
	})
	t.Run("missing parent", func(t *testing.T) {
		target := filepath.Join(testenv.TargetDir(t), "absent", "mount")
		if err := m.Publish(agent.Dir, true, target); !errors.Is(err, mounter.ErrTargetInvalid) {
			t.Fatalf("got %v, want ErrTargetInvalid", err)
		}
	})
}

func TestPublishReplacesEmptyTargetOfOtherKind(t *testing.T) {
	testenv.RequireRoot(t)
	agent := testenv.NewAgent(t)
	m := mounter.New(mounter.RealSyscalls)
	target := filepath.Join(testenv.TargetDir(t), "mount")
	if err := os.Mkdir(target, 0o750); err != nil { // what older kubelets create
		t.Fatal(err)
	}
	if err := m.Publish(agent.APMSocket, false, target); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	if got, err := testenv.DialAPM(target); err != nil || got != testenv.Greeting {
		t.Errorf("dial through the mount: %q, %v", got, err)
	}
	if err := m.Unpublish(target); err != nil {
		t.Fatal(err)
	}
}

func TestPublishRestoresReadOnlyFlags(t *testing.T) {
	testenv.RequireRoot(t)
	agent := testenv.NewAgent(t)
	m := mounter.New(mounter.RealSyscalls)
	target := filepath.Join(testenv.TargetDir(t), "mount")
	if err := m.Publish(agent.Dir, true, target); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Unpublish(target) })
	if err := unix.Mount("", target, "", unix.MS_BIND|unix.MS_REMOUNT, ""); err != nil {
		t.Fatal(err)
	}
	if err := m.Publish(agent.Dir, true, target); err != nil {
		t.Fatal(err)
	}
	testenv.CheckReadOnlyMount(t, target)
}

func TestFailedPublishCleansUp(t *testing.T) {
	testenv.RequireRoot(t)
	agent := testenv.NewAgent(t)
	boom := errors.New("injected failure")

	t.Run("bind fails", func(t *testing.T) {
		sys := mounter.RealSyscalls
		sys.Mount = func(string, string, string, uintptr, string) error { return boom }
		target := filepath.Join(testenv.TargetDir(t), "mount")
		if err := mounter.New(sys).Publish(agent.Dir, true, target); !errors.Is(err, boom) {
			t.Fatalf("got %v, want the injected failure", err)
		}
		if _, err := os.Lstat(target); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("target left behind: %v", err)
		}
	})
	t.Run("remount read-only fails", func(t *testing.T) {
		sys := mounter.RealSyscalls
		var unmounted bool
		sys.Mount = func(src, tgt, fstype string, flags uintptr, data string) error {
			if flags&unix.MS_REMOUNT != 0 {
				return boom
			}
			return unix.Mount(src, tgt, fstype, flags, data)
		}
		sys.Unmount = func(tgt string, flags int) error { unmounted = true; return unix.Unmount(tgt, flags) }
		target := filepath.Join(testenv.TargetDir(t), "mount")
		if err := mounter.New(sys).Publish(agent.APMSocket, false, target); !errors.Is(err, boom) {
			t.Fatalf("got %v, want the injected failure", err)
		}
		if !unmounted {
			t.Error("the writable bind mount was not unmounted")
		}
		if n := countMounts(t, target); n != 0 {
			t.Errorf("%d mounts left at the target", n)
		}
		if _, err := os.Lstat(target); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("target left behind: %v", err)
		}
	})
	t.Run("existing target is kept", func(t *testing.T) {
		sys := mounter.RealSyscalls
		sys.Mount = func(string, string, string, uintptr, string) error { return boom }
		target := filepath.Join(testenv.TargetDir(t), "mount")
		os.Mkdir(target, 0o750)
		if err := mounter.New(sys).Publish(agent.Dir, true, target); !errors.Is(err, boom) {
			t.Fatalf("got %v", err)
		}
		if _, err := os.Stat(target); err != nil {
			t.Errorf("a target the driver did not create must stay: %v", err)
		}
	})
}

func TestUnpublish(t *testing.T) {
	testenv.RequireRoot(t)
	agent := testenv.NewAgent(t)
	m := mounter.New(mounter.RealSyscalls)

	t.Run("missing target", func(t *testing.T) {
		if err := m.Unpublish(filepath.Join(testenv.TargetDir(t), "absent")); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("never recursive", func(t *testing.T) {
		target := filepath.Join(testenv.TargetDir(t), "mount")
		os.Mkdir(target, 0o750)
		keep := filepath.Join(target, "keep")
		os.WriteFile(keep, []byte("x"), 0o600)
		if err := m.Unpublish(target); err == nil {
			t.Fatal("Unpublish of a non-empty unmounted directory must fail")
		}
		if _, err := os.Stat(keep); err != nil {
			t.Errorf("content removed: %v", err)
		}
	})
	t.Run("stacked mounts", func(t *testing.T) {
		target := filepath.Join(testenv.TargetDir(t), "mount")
		if err := m.Publish(agent.Dir, true, target); err != nil {
			t.Fatal(err)
		}
		if err := unix.Mount(agent.Dir, target, "", unix.MS_BIND, ""); err != nil {
			t.Fatal(err)
		}
		if err := m.Unpublish(target); err != nil {
			t.Fatal(err)
		}
		if n := countMounts(t, target); n != 0 {
			t.Errorf("%d mounts left", n)
		}
	})
	t.Run("unmount fails: target kept", func(t *testing.T) {
		sys := mounter.RealSyscalls
		sys.Unmount = func(string, int) error { return unix.EBUSY }
		target := filepath.Join(testenv.TargetDir(t), "mount")
		if err := m.Publish(agent.Dir, true, target); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Unpublish(target) })
		if err := mounter.New(sys).Unpublish(target); !errors.Is(err, unix.EBUSY) {
			t.Fatalf("got %v, want EBUSY", err)
		}
		if got, err := testenv.DialAPM(filepath.Join(target, "apm.socket")); err != nil || got != testenv.Greeting {
			t.Errorf("the still-mounted volume must keep working: %q, %v", got, err)
		}
	})
}

func countMounts(t *testing.T, target string) int {
	t.Helper()
	mounts, err := testenv.MountsUnder(target)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, m := range mounts {
		if m == target {
			n++
		}
	}
	return n
}
