// Package cluster tests the offline kind cluster that `make cluster` builds:
// that it is sealed (no packet from it leaves through another interface) and
// that it runs what the project needs (privileged pods with Bidirectional
// mount propagation). Run it with `make e2e`, which creates the cluster first.
package cluster

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

const (
	nodeContainer = "datadog-csi-control-plane"
	clusterBridge = "dcsi-kind0"
	// The "outside world" of the seal test: a network namespace of our own with
	// an address of the documentation range, reached through a veth whose host
	// end is NOT the cluster bridge.
	outsideNS   = "dcsi-seal-outside"
	outsideHost = "dcsi-seal0"
	outsideIP   = "198.51.100.2"
)

func repoRoot(t *testing.T) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

func run(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

func mustRun(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := run(t, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// offline reports whether the cluster is the offline one (sealed, dedicated dockerd).
func offline() bool { return os.Getenv("KIND_NODE_IMAGE") == "" }

func requireCluster(t *testing.T) (kubectl string) {
	t.Helper()
	root := repoRoot(t)
	kubeconfig := filepath.Join(root, ".cache", "kubeconfig")
	kubectl = filepath.Join(root, "bin", "kubectl")
	if _, err := os.Stat(kubeconfig); err != nil {
		t.Fatalf("no cluster: %s missing — run `make cluster`", kubeconfig)
	}
	os.Setenv("KUBECONFIG", kubeconfig)
	if offline() && os.Getenv("DOCKER_HOST") == "" {
		os.Setenv("DOCKER_HOST", "unix:///run/datadog-csi/docker.sock")
	}
	if out, err := run(t, "docker", "inspect", "-f", "{{.State.Running}}", nodeContainer); err != nil || strings.TrimSpace(out) != "true" {
		t.Fatalf("node container %s not running (%v: %s) — run `make cluster`", nodeContainer, err, out)
	}
	return kubectl
}

func TestClusterIsSealed(t *testing.T) {
	if !offline() {
		// Not infrastructure missing: a registry user's cluster is not sealed by design.
		t.Skip("KIND_NODE_IMAGE is set: the cluster uses the machine's own docker network, which this project does not seal")
	}
	requireCluster(t)

	rules := mustRun(t, "iptables", "-S", "FORWARD")
	if !strings.Contains(rules, "-A FORWARD -i "+clusterBridge+" ! -o "+clusterBridge+" -j REJECT") {
		t.Fatalf("FORWARD has no seal rule for %s:\n%s", clusterBridge, rules)
	}
	if input := mustRun(t, "iptables", "-S", "INPUT"); !strings.Contains(input, "-A INPUT -i "+clusterBridge+" -j REJECT") {
		t.Fatalf("INPUT has no seal rule for %s:\n%s", clusterBridge, input)
	}
	routes := mustRun(t, "ip", "route", "show", "type", "prohibit")
	for _, cidr := range []string{"10.244.0.0/16", "10.96.0.0/16"} {
		if !strings.Contains(routes, cidr) {
			t.Errorf("no prohibit route for %s on the host:\n%s", cidr, routes)
		}
	}

	// An outside host of our own: veth into a namespace we made, routed on the host.
	run(t, "ip", "netns", "del", outsideNS)
	run(t, "ip", "link", "del", outsideHost)
	mustRun(t, "ip", "netns", "add", outsideNS)
	t.Cleanup(func() { run(t, "ip", "link", "del", outsideHost); run(t, "ip", "netns", "del", outsideNS) })
	mustRun(t, "ip", "link", "add", outsideHost, "type", "veth", "peer", "name", "eth0", "netns", outsideNS)
	mustRun(t, "sysctl", "-qw", "net.ipv6.conf."+outsideHost+".disable_ipv6=1")
	mustRun(t, "ip", "netns", "exec", outsideNS, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
	// Count, in the outside host, every packet that does not come from the host end.
	mustRun(t, "ip", "netns", "exec", outsideNS, "iptables", "-A", "INPUT", "!", "-s", "198.51.100.1", "-j", "ACCEPT")
	mustRun(t, "ip", "addr", "add", "198.51.100.1/30", "dev", outsideHost)
	mustRun(t, "ip", "link", "set", outsideHost, "up")
	mustRun(t, "ip", "netns", "exec", outsideNS, "ip", "addr", "add", outsideIP+"/30", "dev", "eth0")
	mustRun(t, "ip", "netns", "exec", outsideNS, "ip", "link", "set", "eth0", "up")
	mustRun(t, "ip", "netns", "exec", outsideNS, "ip", "link", "set", "lo", "up")
	mustRun(t, "ip", "netns", "exec", outsideNS, "ip", "route", "add", "default", "via", "198.51.100.1")

	// Control: the host reaches the outside host (no listener: the kernel
	// answers RST, "Connection refused"), so the path exists and the seal
	// check below can fail.
	out, _ := run(t, "bash", "-c", "timeout 5 bash -c 'echo > /dev/tcp/"+outsideIP+"/9' 2>&1")
	if !strings.Contains(out, "refused") {
		t.Fatalf("control: the host does not reach %s as expected: %q", outsideIP, out)
	}

	rxBefore, rejectedBefore := rxPackets(t), rejectedBySeal(t)
	out, err := run(t, "docker", "exec", nodeContainer, "bash", "-c", "timeout 5 bash -c 'echo > /dev/tcp/"+outsideIP+"/9' 2>&1")
	if err == nil {
		t.Fatalf("the node connected to %s outside the cluster network: %s", outsideIP, out)
	}
	// The seal answers with ICMP admin-prohibited, but the kernel rate-limits
	// ICMP per peer (the cluster's own rejected DNS forwarding uses up the
	// budget), so the node may see "No route to host" or only a time-out. What
	// must hold: the seal rule matched, and nothing reached the outside host.
	if rejectedBySeal(t) <= rejectedBefore {
		t.Errorf("the seal rule did not match the node's packets to %s (%q)", outsideIP, out)
	}
	if rx := rxPackets(t); rx != rxBefore {
		t.Errorf("the outside host received %d packet(s) from the cluster", rx-rxBefore)
	}

	// The trap measured when the project started: a packet to a ClusterIP
	// that kube-proxy has no rule for (as before it syncs), or to another
	// node's pod range, takes the node's default route to the host. Count, on
	// the host, such packets arriving from the bridge and leaving by any
	// interface: they must arrive, and never leave.
	for _, dst := range []string{"10.96.255.254", "10.244.255.254"} {
		match := []string{"-d", dst + "/32", "-m", "comment", "--comment", sealTestComment}
		arrived := append([]string{"-t", "raw", "PREROUTING", "-i", clusterBridge}, match...)
		left := append([]string{"-t", "mangle", "POSTROUTING"}, match...)
		for _, rule := range [][]string{arrived, left} {
			mustRun(t, "iptables", append([]string{"-t", rule[1], "-I", rule[2], "1"}, rule[3:]...)...)
			t.Cleanup(func() { run(t, "iptables", append([]string{"-t", rule[1], "-D", rule[2]}, rule[3:]...)...) })
		}
		out, err := run(t, "docker", "exec", nodeContainer, "bash", "-c", "timeout 5 bash -c 'echo > /dev/tcp/"+dst+"/80' 2>&1")
		if err == nil {
			t.Fatalf("the node connected to %s: %s", dst, out)
		}
		if n := countedBy(t, "raw", "PREROUTING", dst); n == 0 {
			t.Errorf("control: the node's packets to %s did not reach the host (%q), so this check proves nothing", dst, out)
		}
		if n := countedBy(t, "mangle", "POSTROUTING", dst); n != 0 {
			t.Errorf("%d packet(s) to %s left the host", n, dst)
		}
	}

	// The host itself: a listener on the bridge's own address takes the
	// host's connections, never the cluster's (a proxy or resolver listening
	// there could otherwise carry the cluster's traffic out).
	gateway := bridgeAddress(t)
	listener, err := net.Listen("tcp", gateway+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer listener.Close()
	var accepted atomic.Int32
	go func() {
		for {
			c, err := listener.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c.Close()
		}
	}()
	port := fmt.Sprint(listener.Addr().(*net.TCPAddr).Port)
	if c, err := net.DialTimeout("tcp", listener.Addr().String(), 5*time.Second); err != nil {
		t.Fatalf("control: the host cannot reach its own listener on %s: %v", listener.Addr(), err)
	} else {
		c.Close()
	}
	waitFor(t, func() bool { return accepted.Load() == 1 })
	inputBefore := rejectedBy(t, "INPUT", "*")
	out, err = run(t, "docker", "exec", nodeContainer, "bash", "-c", "timeout 5 bash -c 'echo > /dev/tcp/"+gateway+"/"+port+"' 2>&1")
	if err == nil {
		t.Fatalf("the node connected to the host's listener on %s:%s: %s", gateway, port, out)
	}
	if rejectedBy(t, "INPUT", "*") <= inputBefore {
		t.Errorf("the INPUT seal rule did not match the node's packets to the host (%q)", out)
	}
	if n := accepted.Load(); n != 1 {
		t.Errorf("the host's listener accepted %d connection(s) from the cluster", n-1)
	}
}

// rejectedBySeal is the packet counter of the FORWARD rule that seals the cluster bridge.
func rejectedBySeal(t *testing.T) int {
	t.Helper()
	return rejectedBy(t, "FORWARD", "!"+clusterBridge)
}

// rejectedBy is the packet counter of the REJECT rule in chain for packets
// in from the cluster bridge and out to outIface ("*" for any).
func rejectedBy(t *testing.T, chain, outIface string) int {
	t.Helper()
	out := mustRun(t, "iptables", "-L", chain, "-v", "-x", "-n")
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) > 6 && f[2] == "REJECT" && f[5] == clusterBridge && f[6] == outIface {
			var n int
			fmt.Sscan(f[0], &n)
			return n
		}
	}
	t.Fatalf("no seal rule in %s:\n%s", chain, out)
	return 0
}

// sealTestComment marks the counting rules TestClusterIsSealed adds (and
// ci/cluster-down-check.sh looks for, should a killed test leave them).
const sealTestComment = "dcsi-seal-test"

// countedBy is the packet counter of the counting rule for dst in chain.
func countedBy(t *testing.T, table, chain, dst string) int {
	t.Helper()
	out := mustRun(t, "iptables", "-t", table, "-L", chain, "-v", "-x", "-n")
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, sealTestComment) && strings.Contains(line, dst) {
			var n int
			fmt.Sscan(strings.Fields(line)[0], &n)
			return n
		}
	}
	t.Fatalf("no counting rule for %s in %s %s:\n%s", dst, table, chain, out)
	return 0
}

// bridgeAddress is the host's IPv4 address on the cluster bridge.
func bridgeAddress(t *testing.T) string {
	t.Helper()
	out := mustRun(t, "ip", "-4", "-o", "addr", "show", "dev", clusterBridge)
	f := strings.Fields(out)
	if len(f) < 4 {
		t.Fatalf("no IPv4 address on %s: %q", clusterBridge, out)
	}
	return strings.SplitN(f[3], "/", 2)[0]
}

// waitFor polls cond for up to 5 s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
	}
}

func rxPackets(t *testing.T) int {
	t.Helper()
	out := mustRun(t, "ip", "netns", "exec", outsideNS, "iptables", "-L", "INPUT", "-v", "-x", "-n")
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) > 2 && f[2] == "ACCEPT" {
			var n int
			fmt.Sscan(f[0], &n)
			return n
		}
	}
	t.Fatalf("no counting rule in the outside host:\n%s", out)
	return 0
}

// waitDefaultServiceAccount waits up to 60 s until the controller-manager
// created the namespace's ServiceAccount default: the ServiceAccount
// admission plugin rejects a pod without it after retrying for only a
// second or two.
func waitDefaultServiceAccount(t *testing.T, kubectl, ns string) {
	t.Helper()
	var out string
	var err error
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		if out, err = run(t, kubectl, "-n", ns, "get", "serviceaccount", "default"); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("namespace %s has no ServiceAccount default after 60s (the controller-manager creates it): %v\n%s", ns, err, out)
		}
	}
}

// A privileged pod with Bidirectional mount propagation: a mount it makes
// under a hostPath must appear on the node (what the CSI driver relies on).
func TestPrivilegedBidirectionalPropagation(t *testing.T) {
	kubectl := requireCluster(t)
	ns := fmt.Sprintf("cluster-test-%d", time.Now().UnixNano()%100000)
	mustRun(t, kubectl, "create", "namespace", ns)
	t.Cleanup(func() { run(t, kubectl, "delete", "namespace", ns, "--wait=false") })
	waitDefaultServiceAccount(t, kubectl, ns)
	mustRun(t, kubectl, "label", "namespace", ns, "pod-security.kubernetes.io/enforce=privileged")
	manifest := `apiVersion: v1
kind: Pod
metadata: {name: propagator}
spec:
  containers:
  - name: c
    image: ghcr.io/datadog-csi/test-app:dev
    imagePullPolicy: IfNotPresent
    securityContext: {privileged: true}
    volumeMounts:
    - {name: host, mountPath: /host, mountPropagation: Bidirectional}
  volumes:
  - name: host
    hostPath: {path: /var/lib/dcsi-propagation-test, type: DirectoryOrCreate}
`
	cmd := exec.Command(kubectl, "-n", ns, "apply", "-f", "-")
	cmd.Stdin = strings.NewReader(manifest)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	if out, err := run(t, kubectl, "-n", ns, "wait", "--for=condition=Ready", "pod/propagator", "--timeout=120s"); err != nil {
		desc, _ := run(t, kubectl, "-n", ns, "describe", "pod", "propagator")
		t.Fatalf("privileged pod not Ready: %v\n%s\n%s", err, out, desc)
	}
	// The container's view of the hostPath must be a shared mount (what
	// Bidirectional means); and a mount made on the node under it must show in
	// the container. The other direction — a mount made in the container
	// reaching the node — is what the CSI driver does, proven by the e2e tests.
	pid := strings.TrimSpace(mustRun(t, "docker", "exec", nodeContainer, "bash", "-c",
		"crictl inspect --output go-template --template '{{.info.pid}}' $(crictl ps -q --name '^c$' --label io.kubernetes.pod.namespace="+ns+")"))
	containerMounts := mustRun(t, "docker", "exec", nodeContainer, "cat", "/proc/"+pid+"/mountinfo")
	hostLine := ""
	for _, line := range strings.Split(containerMounts, "\n") {
		if f := strings.Fields(line); len(f) > 6 && f[4] == "/host" {
			hostLine = line
		}
	}
	if !strings.Contains(hostLine, "shared:") {
		t.Fatalf("/host in the privileged container is not a shared mount: %q", hostLine)
	}
	mustRun(t, "docker", "exec", nodeContainer, "mount", "-t", "tmpfs", "-o", "size=1m", "dcsi-propagated", "/var/lib/dcsi-propagation-test")
	t.Cleanup(func() { run(t, "docker", "exec", nodeContainer, "umount", "/var/lib/dcsi-propagation-test") })
	containerMounts = mustRun(t, "docker", "exec", nodeContainer, "cat", "/proc/"+pid+"/mountinfo")
	if !strings.Contains(containerMounts, "dcsi-propagated") {
		t.Fatalf("a mount made on the node did not propagate into the container:\n%s", containerMounts)
	}
}
