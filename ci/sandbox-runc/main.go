// Command sandbox-runc is a runc wrapper for machines whose capability
// bounding set is smaller than a container runtime assumes (here: a VM
// without CAP_SYS_RESOURCE). A privileged container asks for every
// capability, a negative oom_score_adj and raised rlimits; each of those needs
// a capability the sandbox does not have, so runc fails ("unable to apply
// caps"). The wrapper rewrites the OCI spec that `create`/`run` (config.json in
// the bundle) and `exec` (--process file) are given so that it asks only for
// what this process could grant, then execs the real runc with the same
// arguments:
//   - capabilities outside the current bounding set are dropped,
//   - oomScoreAdj is raised to at least our own oom_score_adj,
//   - rlimits are clamped to our own hard limits.
//
// It is used only where a local privileged container fails (see
// docs/offline-cluster.md); it is installed as the dedicated dockerd's default
// runtime on the host and as `runc` inside the offline kind node.
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// realRuncCandidates are tried in order; the first that is not this binary wins.
var realRuncCandidates = []string{"/usr/sbin/runc", "/usr/bin/runc", "/usr/local/bin/runc.real", "/usr/local/sbin/runc.real"}

// globalFlagsWithValue are runc's global flags that take a separate value.
var globalFlagsWithValue = map[string]bool{"--root": true, "--log": true, "--log-format": true, "--criu": true, "--rootless": true}

func main() {
	args := os.Args[1:]
	if err := rewrite(args); err != nil {
		fmt.Fprintf(os.Stderr, "sandbox-runc: %v\n", err)
		os.Exit(1)
	}
	real, err := realRunc()
	if err != nil {
		fmt.Fprintf(os.Stderr, "sandbox-runc: %v\n", err)
		os.Exit(1)
	}
	if err := syscall.Exec(real, append([]string{"runc"}, args...), os.Environ()); err != nil {
		fmt.Fprintf(os.Stderr, "sandbox-runc: exec %s: %v\n", real, err)
		os.Exit(1)
	}
}

func realRunc() (string, error) {
	if p := os.Getenv("SANDBOX_RUNC_REAL"); p != "" {
		return p, nil
	}
	self, _ := os.Executable()
	self, _ = filepath.EvalSymlinks(self)
	for _, c := range realRuncCandidates {
		resolved, err := filepath.EvalSymlinks(c)
		if err != nil || resolved == self {
			continue
		}
		return c, nil
	}
	return "", fmt.Errorf("no real runc found in %v (set SANDBOX_RUNC_REAL)", realRuncCandidates)
}

// rewrite finds the command and the spec file it reads, and fixes the spec in place.
func rewrite(args []string) error {
	cmd, rest := splitCommand(args)
	switch cmd {
	case "create", "run":
		bundle := flagValue(rest, "--bundle", "-b")
		if bundle == "" {
			bundle = "."
		}
		return fixFile(filepath.Join(bundle, "config.json"), true)
	case "exec":
		if p := flagValue(rest, "--process", "-p"); p != "" {
			return fixFile(p, false)
		}
	}
	return nil
}

func splitCommand(args []string) (string, []string) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") {
			return a, args[i+1:]
		}
		if globalFlagsWithValue[a] {
			i++
		}
	}
	return "", nil
}

func flagValue(args []string, names ...string) string {
	for i, a := range args {
		for _, n := range names {
			if a == n && i+1 < len(args) {
				return args[i+1]
			}
			if strings.HasPrefix(a, n+"=") {
				return strings.TrimPrefix(a, n+"=")
			}
		}
	}
	return ""
}

// fixFile rewrites a full OCI spec (wholeSpec) or a bare process spec.
func fixFile(path string, wholeSpec bool) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber() // rlimits may be 2^64-1: keep them exact
	var doc map[string]any
	if err := dec.Decode(&doc); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	process := doc
	if wholeSpec {
		p, ok := doc["process"].(map[string]any)
		if !ok {
			return nil
		}
		process = p
	}
	limits, err := currentLimits()
	if err != nil {
		return err
	}
	if !limits.fix(process) {
		return nil
	}
	out, err := json.Marshal(doc)
	if err != nil {
		return err
	}
	return os.WriteFile(path, out, 0o644)
}

type limits struct {
	bounding    uint64
	oomScoreAdj int64
}

func currentLimits() (limits, error) {
	var l limits
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return l, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "CapBnd:"); ok {
			l.bounding, err = strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				return l, fmt.Errorf("CapBnd: %w", err)
			}
		}
	}
	oom, err := os.ReadFile("/proc/self/oom_score_adj")
	if err != nil {
		return l, err
	}
	l.oomScoreAdj, err = strconv.ParseInt(strings.TrimSpace(string(oom)), 10, 64)
	return l, err
}

// fix edits a process spec; it reports whether anything changed.
func (l limits) fix(process map[string]any) bool {
	changed := false
	if caps, ok := process["capabilities"].(map[string]any); ok {
		for set, v := range caps {
			list, ok := v.([]any)
			if !ok {
				continue
			}
			kept := list[:0:0]
			for _, c := range list {
				name, _ := c.(string)
				if bit, known := capBits[strings.TrimPrefix(strings.ToUpper(name), "CAP_")]; known && l.bounding&(1<<bit) == 0 {
					changed = true
					continue
				}
				kept = append(kept, c)
			}
			caps[set] = kept
		}
	}
	if v, ok := process["oomScoreAdj"].(json.Number); ok {
		if n, err := v.Int64(); err == nil && n < l.oomScoreAdj {
			process["oomScoreAdj"] = json.Number(strconv.FormatInt(l.oomScoreAdj, 10))
			changed = true
		}
	}
	if rl, ok := process["rlimits"].([]any); ok {
		for _, r := range rl {
			m, ok := r.(map[string]any)
			if !ok {
				continue
			}
			res, known := rlimitResources[fmt.Sprint(m["type"])]
			if !known {
				continue
			}
			var own unix.Rlimit
			if unix.Getrlimit(res, &own) != nil {
				continue
			}
			hard := clampNumber(m, "hard", own.Max, &changed)
			clampNumber(m, "soft", hard, &changed)
		}
	}
	return changed
}

// clampNumber lowers m[key] to max and returns the resulting value.
func clampNumber(m map[string]any, key string, max uint64, changed *bool) uint64 {
	v, ok := m[key].(json.Number)
	if !ok {
		return max
	}
	n, err := strconv.ParseUint(v.String(), 10, 64)
	if err != nil || n <= max {
		return n
	}
	m[key] = json.Number(strconv.FormatUint(max, 10))
	*changed = true
	return max
}

var capBits = map[string]uint{
	"CHOWN": 0, "DAC_OVERRIDE": 1, "DAC_READ_SEARCH": 2, "FOWNER": 3, "FSETID": 4, "KILL": 5,
	"SETGID": 6, "SETUID": 7, "SETPCAP": 8, "LINUX_IMMUTABLE": 9, "NET_BIND_SERVICE": 10,
	"NET_BROADCAST": 11, "NET_ADMIN": 12, "NET_RAW": 13, "IPC_LOCK": 14, "IPC_OWNER": 15,
	"SYS_MODULE": 16, "SYS_RAWIO": 17, "SYS_CHROOT": 18, "SYS_PTRACE": 19, "SYS_PACCT": 20,
	"SYS_ADMIN": 21, "SYS_BOOT": 22, "SYS_NICE": 23, "SYS_RESOURCE": 24, "SYS_TIME": 25,
	"SYS_TTY_CONFIG": 26, "MKNOD": 27, "LEASE": 28, "AUDIT_WRITE": 29, "AUDIT_CONTROL": 30,
	"SETFCAP": 31, "MAC_OVERRIDE": 32, "MAC_ADMIN": 33, "SYSLOG": 34, "WAKE_ALARM": 35,
	"BLOCK_SUSPEND": 36, "AUDIT_READ": 37, "PERFMON": 38, "BPF": 39, "CHECKPOINT_RESTORE": 40,
}

var rlimitResources = map[string]int{
	"RLIMIT_CPU": unix.RLIMIT_CPU, "RLIMIT_FSIZE": unix.RLIMIT_FSIZE, "RLIMIT_DATA": unix.RLIMIT_DATA,
	"RLIMIT_STACK": unix.RLIMIT_STACK, "RLIMIT_CORE": unix.RLIMIT_CORE, "RLIMIT_RSS": unix.RLIMIT_RSS,
	"RLIMIT_NPROC": unix.RLIMIT_NPROC, "RLIMIT_NOFILE": unix.RLIMIT_NOFILE, "RLIMIT_MEMLOCK": unix.RLIMIT_MEMLOCK,
	"RLIMIT_AS": unix.RLIMIT_AS, "RLIMIT_LOCKS": unix.RLIMIT_LOCKS, "RLIMIT_SIGPENDING": unix.RLIMIT_SIGPENDING,
	"RLIMIT_MSGQUEUE": unix.RLIMIT_MSGQUEUE, "RLIMIT_NICE": unix.RLIMIT_NICE, "RLIMIT_RTPRIO": unix.RLIMIT_RTPRIO,
	"RLIMIT_RTTIME": unix.RLIMIT_RTTIME,
}
