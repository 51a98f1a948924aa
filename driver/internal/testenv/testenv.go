// Package testenv gives the driver's tests real things to work with: agent
// sockets (a stream socket like the trace agent's, a datagram socket like
// DogStatsD's) in a temp directory, and a mount-table check that unmounts
// whatever a test left behind, so a failing test leaks no mount. Tests need
// root (real bind mounts); RequireRoot fails, never skips, without it.
package testenv

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/datadog-csi/datadog-csi/pkg/datadog"
)

// RequireRoot fails the test when not run as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test makes real bind mounts and needs root: run `make unit` as root (CI does)")
	}
}

// Agent is a fake node agent: a stream socket that answers every connection
// with "ok" (like the trace agent's HTTP socket) and a datagram socket that
// forwards what it receives to Received (like DogStatsD).
type Agent struct {
	Dir, APMSocket, DSDSocket string
	Received                  chan string
}

// Greeting is what the fake APM socket writes to every client.
const Greeting = "ok"

// NewAgent creates the sockets in a new short temp directory (a socket path
// must fit in 108 bytes, so t.TempDir's long names are not used here) and
// closes and removes them when the test ends.
func NewAgent(t testing.TB) *Agent {
	t.Helper()
	dir := ShortTempDir(t)
	a := &Agent{Dir: dir, APMSocket: filepath.Join(dir, "apm.socket"), DSDSocket: filepath.Join(dir, "dsd.socket"), Received: make(chan string, 16)}
	stream, err := net.Listen("unix", a.APMSocket)
	if err != nil {
		t.Fatalf("listen on %s: %v", a.APMSocket, err)
	}
	go func() {
		for {
			c, err := stream.Accept()
			if err != nil {
				return
			}
			c.Write([]byte(Greeting))
			c.Close()
		}
	}()
	dgram, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: a.DSDSocket, Net: "unixgram"})
	if err != nil {
		t.Fatalf("listen on %s: %v", a.DSDSocket, err)
	}
	go func() {
		buf := make([]byte, 1024)
		for {
			n, err := dgram.Read(buf)
			if err != nil {
				return
			}
			select {
			case a.Received <- string(buf[:n]):
			default:
			}
		}
	}()
	t.Cleanup(func() { stream.Close(); dgram.Close() })
	return a
}

// ShortTempDir is a temp directory with a short path, removed (after any
// mount under it is undone) when the test ends.
func ShortTempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "ddcsi")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		UnmountUnder(t, dir)
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("remove %s: %v", dir, err)
		}
	})
	return dir
}

// TargetDir is a temp directory for volume targets; every mount left under
// it is undone when the test ends, before the directory is removed.
func TargetDir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	t.Cleanup(func() { UnmountUnder(t, dir) })
	return dir
}

// UnmountUnder unmounts every mount at or below dir, reporting each one as a
// test error: a test that leaves a mount behind has a bug to show.
func UnmountUnder(t testing.TB, dir string) {
	t.Helper()
	for range 64 {
		mounts, err := MountsUnder(dir)
		if err != nil {
			t.Errorf("read mount table: %v", err)
			return
		}
		if len(mounts) == 0 {
			return
		}
		for _, m := range mounts {
			t.Errorf("leaked mount at %s: unmounting it", m)
			if err := unix.Unmount(m, unix.MNT_DETACH); err != nil {
				t.Errorf("unmount %s: %v", m, err)
			}
		}
	}
	t.Errorf("mounts under %s survive repeated unmounts", dir)
}

// MountsUnder lists mount points at or below dir in /proc/self/mountinfo,
// deepest first.
func MountsUnder(dir string) ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return mountsUnder(f, filepath.Clean(dir))
}

func mountsUnder(r io.Reader, dir string) ([]string, error) {
	var found []string
	s := bufio.NewScanner(r)
	s.Buffer(make([]byte, 64*1024), 1024*1024)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) < 5 {
			return nil, fmt.Errorf("malformed mountinfo line %q", s.Text())
		}
		mountPoint := unescapeOctal(fields[4])
		if mountPoint == dir || strings.HasPrefix(mountPoint, dir+"/") {
			found = append(found, mountPoint)
		}
	}
	sort.Slice(found, func(i, j int) bool { return len(found[i]) > len(found[j]) })
	return found, s.Err()
}

// unescapeOctal undoes mountinfo's \040-style escaping of spaces and the like.
func unescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// MountFlags returns the statfs flags of the mount at path.
func MountFlags(path string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return 0, err
	}
	return st.Flags, nil
}

// CheckReadOnlyMount fails unless path is a mount with rdonly, nosuid,
// nodev and noexec.
func CheckReadOnlyMount(t testing.TB, path string) {
	t.Helper()
	flags, err := MountFlags(path)
	if err != nil {
		t.Fatalf("statfs %s: %v", path, err)
	}
	want := map[string]int64{"ro": unix.ST_RDONLY, "nosuid": unix.ST_NOSUID, "nodev": unix.ST_NODEV, "noexec": unix.ST_NOEXEC}
	for name, bit := range want {
		if flags&bit == 0 {
			t.Errorf("mount at %s lacks %s (statfs flags %#x)", path, name, flags)
		}
	}
}

// DialAPM connects to a stream socket and returns what the server wrote.
func DialAPM(socketPath string) (string, error) {
	c, err := net.DialTimeout("unix", socketPath, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	b, err := io.ReadAll(c)
	return string(b), err
}

// SendDSD sends one datagram to socketPath and waits until the agent got it.
func (a *Agent) SendDSD(socketPath, payload string) error {
	c, err := net.Dial("unixgram", socketPath)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.Write([]byte(payload)); err != nil {
		return err
	}
	select {
	case got := <-a.Received:
		if got != payload {
			return fmt.Errorf("agent received %q, want %q", got, payload)
		}
		return nil
	case <-time.After(2 * time.Second):
		return errors.New("agent received nothing within 2s")
	}
}

// TmpfsDir mounts a small tmpfs on a new temp directory, unmounted when the
// test ends. Benchmarks put targets there so that journal contention on a
// shared disk does not drown the cost being measured.
func TmpfsDir(t testing.TB) string {
	t.Helper()
	dir := ShortTempDir(t)
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size=16m,mode=0750"); err != nil {
		t.Fatalf("mount tmpfs on %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmount tmpfs %s: %v", dir, err)
		}
	})
	return dir
}

// VolumeKind is one of the two shapes a volume takes, for the benchmarks
// that publish one of each.
type VolumeKind struct {
	Name      string // sub-benchmark name
	Type      string // volumeAttributes.type
	Directory bool   // the agent's socket directory, else the socket file
}

// VolumeKinds are the kinds every publish benchmark runs.
var VolumeKinds = []VolumeKind{
	{Name: "directory", Type: string(datadog.APMSocketDirectory), Directory: true},
	{Name: "file", Type: string(datadog.APMSocket), Directory: false},
}

// Source is the agent path a volume of kind k mounts.
func (a *Agent) Source(k VolumeKind) string {
	if k.Directory {
		return a.Dir
	}
	return a.APMSocket
}

// FloorPair does with bare system calls the least any driver must do for
// one publish and one unpublish: create the target, bind mount the source,
// remount it read-only, unmount, remove the target. Benchmarks run it as
// the floor their driver figures are compared with.
func FloorPair(source, target string, directory bool) error {
	var err error
	if directory {
		err = os.Mkdir(target, 0o750)
	} else {
		err = os.WriteFile(target, nil, 0o640)
	}
	if err != nil {
		return err
	}
	if err := unix.Mount(source, target, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind mount: %w", err)
	}
	// The driver's read-only flags, spelled out: testenv may not import the mounter.
	const readOnly = unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC
	if err := unix.Mount("", target, "", unix.MS_BIND|unix.MS_REMOUNT|readOnly, ""); err != nil {
		return fmt.Errorf("remount read-only: %w", err)
	}
	if err := unix.Unmount(target, 0); err != nil {
		return fmt.Errorf("unmount: %w", err)
	}
	return os.Remove(target)
}
