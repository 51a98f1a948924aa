// Package mounter makes and removes the read-only bind mounts that expose an
// agent socket (or its directory) at a volume's target path. It talks to the
// kernel directly (golang.org/x/sys/unix): the driver image has no mount
// binary. The system calls are reached through Syscalls, a seam that tests
// use to inject failures.
package mounter

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// Errors the RPC layer maps to status codes; each is wrapped with detail.
var (
	// ErrSourceNotFound: the agent socket or its directory does not exist
	// (the agent is not running yet, or the feature is off).
	ErrSourceNotFound = errors.New("source does not exist")
	// ErrSourceWrongKind: the source exists but is not a socket (file
	// types) or not a directory (directory types).
	ErrSourceWrongKind = errors.New("source has the wrong file type")
	// ErrSourceSymlink: a component of the source path is a symbolic link.
	ErrSourceSymlink = errors.New("source path goes through a symbolic link")
	// ErrTargetOccupied: something other than the source is mounted at the target.
	ErrTargetOccupied = errors.New("target is occupied by another mount")
	// ErrTargetInvalid: the target cannot be used (a symlink, a non-empty
	// directory, missing parent, ...).
	ErrTargetInvalid = errors.New("target cannot be used")
)

// ReadOnlyFlags are the flags every bind mount ends with.
const ReadOnlyFlags = unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC

// statfs flags matching ReadOnlyFlags.
const readOnlyStatfsFlags = unix.ST_RDONLY | unix.ST_NOSUID | unix.ST_NODEV | unix.ST_NOEXEC

// maxStackedMounts bounds how many mounts Unpublish peels off one target.
const maxStackedMounts = 16

// Syscalls are the kernel calls that change the mount table.
type Syscalls struct {
	Mount   func(source, target, fstype string, flags uintptr, data string) error
	Unmount func(target string, flags int) error
}

// RealSyscalls calls the kernel.
var RealSyscalls = Syscalls{Mount: unix.Mount, Unmount: unix.Unmount}

// Mounter publishes and unpublishes volumes. It keeps no state: everything
// it needs is in the file system and the mount table, so a restarted driver
// unpublishes what an earlier one published.
type Mounter struct {
	sys Syscalls
}

// New returns a Mounter using sys.
func New(sys Syscalls) *Mounter {
	if sys.Mount == nil || sys.Unmount == nil {
		panic("mounter.New: Syscalls must set Mount and Unmount")
	}
	return &Mounter{sys: sys}
}

// Publish bind mounts source at target, read-only, nosuid, nodev, noexec.
// directory selects whether source must be a directory (target becomes a
// directory) or a socket (target becomes an empty regular file). Publishing
// the same source again is a no-op; a failed publish removes what it created.
func (m *Mounter) Publish(source string, directory bool, target string) (err error) {
	src, err := openSource(source, directory)
	if err != nil {
		return err
	}
	defer src.Close()

	created, err := prepareTarget(target, directory, src.stat)
	if errors.Is(err, errAlreadyPublished) {
		return m.ensureReadOnly(target)
	}
	if err != nil {
		return err
	}
	defer func() {
		if err != nil && created {
			if rmErr := os.Remove(target); rmErr != nil && !errors.Is(rmErr, fs.ErrNotExist) {
				err = fmt.Errorf("%w (and removing the target it created failed: %v)", err, rmErr)
			}
		}
	}()

	// Mounting the opened file, not the path, means the kernel binds exactly
	// what was checked, even if the path is swapped for a symlink meanwhile.
	if err := m.sys.Mount(src.procPath(), target, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind mount %s at %s: %w", source, target, err)
	}
	if err := m.sys.Mount("", target, "", unix.MS_BIND|unix.MS_REMOUNT|ReadOnlyFlags, ""); err != nil {
		if umErr := m.sys.Unmount(target, unix.UMOUNT_NOFOLLOW); umErr != nil {
			return fmt.Errorf("remount %s read-only: %w (and unmounting it failed: %v; it is left mounted)", target, err, umErr)
		}
		return fmt.Errorf("remount %s read-only: %w", target, err)
	}
	return nil
}

// ensureReadOnly remounts an already published target if its flags were
// changed since, so a repeated publish always ends read-only.
func (m *Mounter) ensureReadOnly(target string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(target, &st); err != nil {
		return fmt.Errorf("statfs %s: %w", target, err)
	}
	if st.Flags&readOnlyStatfsFlags == readOnlyStatfsFlags {
		return nil
	}
	if err := m.sys.Mount("", target, "", unix.MS_BIND|unix.MS_REMOUNT|ReadOnlyFlags, ""); err != nil {
		return fmt.Errorf("remount %s read-only: %w", target, err)
	}
	return nil
}

// Unpublish unmounts target and removes it. A missing target is success.
// The target is removed only once the mount table confirms nothing is
// mounted there, and never recursively: a non-empty directory is an error.
func (m *Mounter) Unpublish(target string) error {
	if _, err := os.Lstat(target); errors.Is(err, fs.ErrNotExist) {
		return nil
	} else if err != nil {
		return fmt.Errorf("stat target %s: %w", target, err)
	}
	for i := 0; ; i++ {
		mounted, err := IsMountPoint(target)
		if err != nil {
			return err
		}
		if !mounted {
			break
		}
		if i == maxStackedMounts {
			return fmt.Errorf("%s is still a mount point after %d unmounts", target, maxStackedMounts)
		}
		if err := m.sys.Unmount(target, unix.UMOUNT_NOFOLLOW); err != nil && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("unmount %s: %w", target, err)
		}
	}
	if err := os.Remove(target); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove target %s (never removed recursively): %w", target, err)
	}
	return nil
}

// IsMountPoint reports whether path is the root of a mount, bind mounts of
// files included. statx answers in one call; the mount table is the fallback
// for kernels without STATX_ATTR_MOUNT_ROOT.
func IsMountPoint(path string) (bool, error) {
	var stx unix.Statx_t
	err := unix.Statx(unix.AT_FDCWD, path, unix.AT_SYMLINK_NOFOLLOW|unix.AT_NO_AUTOMOUNT, unix.STATX_TYPE, &stx)
	if err != nil {
		return false, fmt.Errorf("statx %s: %w", path, err)
	}
	if stx.Attributes_mask&unix.STATX_ATTR_MOUNT_ROOT != 0 {
		return stx.Attributes&unix.STATX_ATTR_MOUNT_ROOT != 0, nil
	}
	if stx.Mode&unix.S_IFMT == unix.S_IFLNK {
		return false, nil
	}
	mounted, err := mountinfo.Mounted(path)
	if err != nil {
		return false, fmt.Errorf("read mount table for %s: %w", path, err)
	}
	return mounted, nil
}

// openedSource is the source opened with O_PATH: it pins the inode that
// was checked.
type openedSource struct {
	fd   int
	stat unix.Stat_t
}

func (s openedSource) procPath() string { return "/proc/self/fd/" + strconv.Itoa(s.fd) }
func (s openedSource) Close()           { unix.Close(s.fd) }

// openSource opens source without following any symbolic link on the way and
// checks its file type.
func openSource(source string, directory bool) (openedSource, error) {
	fd, err := unix.Openat2(unix.AT_FDCWD, source, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_CLOEXEC | unix.O_NOFOLLOW,
		Resolve: unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
	if errors.Is(err, unix.ENOSYS) {
		fd, err = openSourceWithoutOpenat2(source)
	}
	switch {
	case errors.Is(err, unix.ENOENT):
		return openedSource{}, fmt.Errorf("%w: %s", ErrSourceNotFound, source)
	case errors.Is(err, unix.ELOOP):
		return openedSource{}, fmt.Errorf("%w: %s", ErrSourceSymlink, source)
	case err != nil:
		return openedSource{}, fmt.Errorf("open %s: %w", source, err)
	}
	src := openedSource{fd: fd}
	if err := unix.Fstat(fd, &src.stat); err != nil {
		src.Close()
		return openedSource{}, fmt.Errorf("stat %s: %w", source, err)
	}
	kind := src.stat.Mode & unix.S_IFMT
	if kind == unix.S_IFLNK { // O_PATH|O_NOFOLLOW opens a final symlink itself
		src.Close()
		return openedSource{}, fmt.Errorf("%w: %s", ErrSourceSymlink, source)
	}
	if directory && kind != unix.S_IFDIR {
		src.Close()
		return openedSource{}, fmt.Errorf("%w: %s is a %s, want a directory", ErrSourceWrongKind, source, kindName(kind))
	}
	if !directory && kind != unix.S_IFSOCK {
		src.Close()
		return openedSource{}, fmt.Errorf("%w: %s is a %s, want a socket", ErrSourceWrongKind, source, kindName(kind))
	}
	return src, nil
}

func openSourceWithoutOpenat2(source string) (int, error) {
	resolved, err := filepath.EvalSymlinks(source)
	if err != nil {
		return -1, err
	}
	if resolved != source {
		return -1, unix.ELOOP
	}
	return unix.Open(source, unix.O_PATH|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
}

var errAlreadyPublished = errors.New("already published")

// prepareTarget makes sure target exists with the kind the source needs.
// It returns errAlreadyPublished when source is already mounted there, and
// created=true when it made the target (so a failure can remove it).
func prepareTarget(target string, directory bool, source unix.Stat_t) (created bool, err error) {
	var st unix.Stat_t
	err = unix.Lstat(target, &st)
	if errors.Is(err, unix.ENOENT) {
		return true, createTarget(target, directory)
	}
	if err != nil {
		return false, fmt.Errorf("stat target %s: %w", target, err)
	}
	kind := st.Mode & unix.S_IFMT
	if kind == unix.S_IFLNK {
		return false, fmt.Errorf("%w: %s is a symbolic link", ErrTargetInvalid, target)
	}
	mounted, err := IsMountPoint(target)
	if err != nil {
		return false, err
	}
	if mounted {
		if st.Dev == source.Dev && st.Ino == source.Ino {
			return false, errAlreadyPublished
		}
		return false, fmt.Errorf("%w: %s", ErrTargetOccupied, target)
	}
	switch {
	case directory && kind == unix.S_IFDIR, !directory && kind == unix.S_IFREG && st.Size == 0:
		return false, nil
	case kind == unix.S_IFDIR || kind == unix.S_IFREG && st.Size == 0:
		// An empty target of the other kind (an older kubelet creates a
		// directory for every volume): replace it. Remove is not
		// recursive, so a directory that gained content fails here.
		if err := os.Remove(target); err != nil {
			return false, fmt.Errorf("%w: replace %s %s: %v", ErrTargetInvalid, kindName(kind), target, err)
		}
		return true, createTarget(target, directory)
	}
	return false, fmt.Errorf("%w: %s is a %s", ErrTargetInvalid, target, kindName(kind))
}

func createTarget(target string, directory bool) error {
	if directory {
		if err := os.Mkdir(target, 0o750); err != nil {
			return fmt.Errorf("%w: create directory: %v", ErrTargetInvalid, err)
		}
		return nil
	}
	f, err := os.OpenFile(target, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o640)
	if err != nil {
		return fmt.Errorf("%w: create file: %v", ErrTargetInvalid, err)
	}
	return f.Close()
}

func kindName(kind uint32) string {
	switch kind {
	case unix.S_IFREG:
		return "regular file"
	case unix.S_IFDIR:
		return "directory"
	case unix.S_IFSOCK:
		return "socket"
	case unix.S_IFLNK:
		return "symbolic link"
	case unix.S_IFIFO:
		return "named pipe"
	case unix.S_IFCHR, unix.S_IFBLK:
		return "device"
	}
	return "file of unknown type"
}
