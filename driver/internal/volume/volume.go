// Package volume decides which host path a CSI volume may expose. It turns
// the volume context of a NodePublishVolume request into a Spec whose Source
// is always one of the configured agent socket paths or their directories:
// a path taken from the request is never mounted unless it equals an
// allow-listed path.
package volume

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"

	"github.com/datadog-csi/datadog-csi/pkg/datadog"
)

// Labels used for volumes in the legacy form (no "type"), in logs and metrics.
const (
	LegacySocketLabel = "legacy-socket"
	LegacyLocalLabel  = "legacy-local"
)

// ErrInvalid wraps every error caused by bad volume attributes.
var ErrInvalid = errors.New("invalid volume attributes")

// Spec is what one volume exposes.
type Spec struct {
	// Label names the volume type for logs and metrics: a datadog.VolumeType
	// or one of the legacy labels. Its set of values is bounded.
	Label string
	// Socket is the agent socket the volume refers to.
	Socket datadog.Socket
	// Directory is true when Source is the socket's directory (the target
	// is then a directory), false when Source is the socket file itself.
	Directory bool
	// Source is the host path to bind mount, always from the AllowList
	// (resolved once at start).
	Source string
	// Deprecated is true for types kept only for backward compatibility.
	Deprecated bool
}

// AllowList holds the configured agent socket paths; they and their
// directories are the only paths a volume can expose. Requests are compared
// with the configured spelling; mounts use the sources resolved once at
// start (see ResolveSymlinks).
type AllowList struct {
	apmSocket, dsdSocket     string
	apmResolved, dsdResolved string
}

// NewAllowList validates the configured socket paths once: they must be
// absolute, already clean and free of "..", so the comparison with a
// request's path cannot be fooled by spelling.
func NewAllowList(apmSocketPath, dsdSocketPath string) (AllowList, error) {
	for _, p := range []string{apmSocketPath, dsdSocketPath} {
		if err := CheckAbsoluteClean(p); err != nil {
			return AllowList{}, err
		}
		if filepath.Dir(p) == p {
			return AllowList{}, fmt.Errorf("socket path %q must name a file, not the root directory", p)
		}
	}
	return AllowList{apmSocket: apmSocketPath, dsdSocket: dsdSocketPath, apmResolved: apmSocketPath, dsdResolved: dsdSocketPath}, nil
}

// ResolveSymlinks resolves, once, symbolic links in the directories of the
// configured socket paths (an admin may configure /var/run/datadog where
// /var/run links to /run). A directory that does not exist yet keeps its
// spelling below its deepest existing ancestor. The socket file itself is
// not resolved: a symlinked socket is refused at publish time, as is any
// symlink that appears in a resolved path after start.
func (a AllowList) ResolveSymlinks() (AllowList, error) {
	var err error
	if a.apmResolved, err = resolveDir(a.apmSocket); err != nil {
		return AllowList{}, err
	}
	if a.dsdResolved, err = resolveDir(a.dsdSocket); err != nil {
		return AllowList{}, err
	}
	return a, nil
}

// Resolved returns the path that publishing socket s mounts.
func (a AllowList) Resolved(s datadog.Socket) string {
	if s == datadog.SocketAPM {
		return a.apmResolved
	}
	return a.dsdResolved
}

func resolveDir(socketPath string) (string, error) {
	dir, rest := filepath.Dir(socketPath), filepath.Base(socketPath)
	for {
		resolved, err := filepath.EvalSymlinks(dir)
		if err == nil {
			return filepath.Join(resolved, rest), nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("resolve %s: %w", dir, err)
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return socketPath, nil
		}
		dir, rest = parent, filepath.Join(filepath.Base(dir), rest)
	}
}

// SocketPath returns the configured path of socket s.
func (a AllowList) SocketPath(s datadog.Socket) string {
	if s == datadog.SocketAPM {
		return a.apmSocket
	}
	return a.dsdSocket
}

// CheckAbsoluteClean refuses a path that is empty, relative, not in clean
// form (double slashes, trailing slash, ".") or that contains "..".
func CheckAbsoluteClean(p string) error {
	switch {
	case p == "":
		return errors.New("path is empty")
	case !filepath.IsAbs(p):
		return fmt.Errorf("path %q is relative; it must be absolute", p)
	case hasDotDot(p):
		return fmt.Errorf("path %q contains \"..\"", p)
	case filepath.Clean(p) != p:
		return fmt.Errorf("path %q is not clean; use %q", p, filepath.Clean(p))
	case strings.ContainsRune(p, 0):
		return fmt.Errorf("path %q contains a NUL byte", p)
	}
	return nil
}

func hasDotDot(p string) bool {
	for _, elem := range strings.Split(p, "/") {
		if elem == ".." {
			return true
		}
	}
	return false
}

// AllowedForms describes the accepted attributes, for error messages.
func AllowedForms() string {
	return fmt.Sprintf("%s must be one of %s, or, without %s, %s must be %q or %q with %s set to a configured socket path or its directory",
		datadog.AttrType, strings.Join(datadog.VolumeTypeNames(), ", "),
		datadog.AttrType, datadog.AttrMode, datadog.LegacyModeSocket, datadog.LegacyModeLocal, datadog.AttrPath)
}

// Resolve maps volume attributes to a Spec. The "type" attribute wins when
// present; otherwise the legacy "mode" + "path" form is used, and its path is
// accepted only when it equals an allow-listed path after cleaning.
// Every error wraps ErrInvalid.
func (a AllowList) Resolve(attrs map[string]string) (Spec, error) {
	if raw, ok := attrs[datadog.AttrType]; ok {
		t, valid := datadog.ParseVolumeType(raw)
		if !valid {
			if raw == "" {
				return Spec{}, invalid("%s is empty; %s", datadog.AttrType, AllowedForms())
			}
			return Spec{}, invalid("unknown %s %q; %s", datadog.AttrType, raw, AllowedForms())
		}
		socket, directory, _ := t.Socket()
		source := a.Resolved(socket)
		if directory {
			source = filepath.Dir(source)
		}
		return Spec{Label: string(t), Socket: socket, Directory: directory, Source: source, Deprecated: t.Deprecated()}, nil
	}

	mode, hasMode := attrs[datadog.AttrMode]
	if !hasMode {
		return Spec{}, invalid("no %s and no %s attribute; %s", datadog.AttrType, datadog.AttrMode, AllowedForms())
	}
	var directory bool
	var label string
	switch mode {
	case datadog.LegacyModeSocket:
		label = LegacySocketLabel
	case datadog.LegacyModeLocal:
		directory, label = true, LegacyLocalLabel
	default:
		return Spec{}, invalid("unknown %s %q; %s", datadog.AttrMode, mode, AllowedForms())
	}
	requested, ok := attrs[datadog.AttrPath]
	if !ok || requested == "" {
		return Spec{}, invalid("%s %q needs a %s attribute; %s", datadog.AttrMode, mode, datadog.AttrPath, AllowedForms())
	}
	if !filepath.IsAbs(requested) || hasDotDot(requested) || strings.ContainsRune(requested, 0) {
		return Spec{}, invalid("%s %q must be absolute and free of \"..\"", datadog.AttrPath, requested)
	}
	cleaned := filepath.Clean(requested)
	for _, socket := range []datadog.Socket{datadog.SocketAPM, datadog.SocketDSD} {
		allowed := a.SocketPath(socket)
		if directory {
			allowed = filepath.Dir(allowed)
		}
		if cleaned == allowed {
			source := a.Resolved(socket)
			if directory {
				source = filepath.Dir(source)
			}
			return Spec{Label: label, Socket: socket, Directory: directory, Source: source}, nil
		}
	}
	want := []string{a.apmSocket, a.dsdSocket}
	if directory {
		want = []string{filepath.Dir(a.apmSocket), filepath.Dir(a.dsdSocket)}
	}
	return Spec{}, invalid("%s %q is not allowed for %s %q; allowed: %s", datadog.AttrPath, requested, datadog.AttrMode, mode, strings.Join(want, ", "))
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}
