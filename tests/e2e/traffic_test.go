package e2e

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/datadog-csi/datadog-csi/pkg/datadog"
)

// trafficCase is one app pod of the traffic test: how it gets its volumes and
// what it must deliver to the agent.
type trafficCase struct {
	pod *corev1.Pod
	// types are the volume types (or "mode=<legacy mode>") the admitted pod must have.
	types    []string
	apm, dsd bool
}

// trafficCases covers every volume type and the legacy forms. The four types
// come from the webhook (directories by default, socket files with the
// type_socket_volumes label), so their env vars are the injected ones; the
// legacy and deprecated forms, which the webhook never writes, are written
// here as users of older charts have them.
func trafficCases() []trafficCase {
	apmURL, dsdURL := datadog.UnixURL(datadog.DefaultAPMSocketPath), datadog.UnixURL(datadog.DefaultDSDSocketPath)
	return []trafficCase{
		{
			pod:   optIn(appPod("webhook-dirs")),
			types: []string{string(datadog.APMSocketDirectory), string(datadog.DSDSocketDirectory)},
			apm:   true, dsd: true,
		},
		{
			pod:   optIn(appPod("webhook-sockets"), datadog.LabelTypeSocketVolumes, "true"),
			types: []string{string(datadog.APMSocket), string(datadog.DSDSocket)},
			apm:   true, dsd: true,
		},
		{
			// {mode: local, path: <dir>}: the agent's socket directory.
			pod: withEnv(withCSIVolume(appPod("legacy-local"), "datadog", datadog.SocketDir,
				map[string]string{datadog.AttrMode: datadog.LegacyModeLocal, datadog.AttrPath: datadog.SocketDir}),
				datadog.EnvTraceAgentURL, apmURL, datadog.EnvDogStatsDURL, dsdURL),
			types: []string{"mode=" + datadog.LegacyModeLocal},
			apm:   true, dsd: true,
		},
		{
			// {mode: socket, path: <socket>}: each socket file on its own.
			pod: withEnv(
				withCSIVolume(
					withCSIVolume(appPod("legacy-socket"), "dsd", datadog.DefaultDSDSocketPath,
						map[string]string{datadog.AttrMode: datadog.LegacyModeSocket, datadog.AttrPath: datadog.DefaultDSDSocketPath}),
					"apm", datadog.DefaultAPMSocketPath,
					map[string]string{datadog.AttrMode: datadog.LegacyModeSocket, datadog.AttrPath: datadog.DefaultAPMSocketPath}),
				datadog.EnvTraceAgentURL, apmURL, datadog.EnvDogStatsDURL, dsdURL),
			types: []string{"mode=" + datadog.LegacyModeSocket},
			apm:   true, dsd: true,
		},
		{
			// The deprecated DatadogSocketsDirectory: DogStatsD's directory.
			pod: withEnv(withCSIVolume(appPod("deprecated-dir"), "datadog", datadog.PodDSDSocketDirectory,
				map[string]string{datadog.AttrType: string(datadog.DatadogSocketsDirectory)}),
				datadog.EnvDogStatsDURL, datadog.UnixURL(datadog.PodDSDSocketDirectory+"/"+datadog.DSDSocketFile)),
			types: []string{string(datadog.DatadogSocketsDirectory)},
			dsd:   true,
		},
	}
}

// TestTraffic proves the sockets really work through the driver's mounts:
// app pods in a restricted namespace, one per volume form, send DogStatsD
// metrics and trace requests, and the dummy agent on the node gets each one
// from each pod. Every pod's CSI mounts on the node are read-only.
func TestTraffic(t *testing.T) {
	f := newFixture(t)
	a := f.installAgent()
	f.install(umbrellaChart, umbrellaValues(datadog.ModeCSI))
	ns := f.namespace("e2e-traffic", map[string]string{psaEnforce: "restricted", psaWarn: "restricted"})
	f.waitWebhookMode(ns, datadog.ModeCSI)

	cases := trafficCases()
	var wants []want
	for _, c := range cases {
		// Created under enforce=restricted: admission is the first assertion.
		pod := f.createPod(ns, c.pod)
		vols := ourVolumes(pod)
		for _, typ := range c.types {
			if _, ok := vols[typ]; !ok {
				t.Errorf("pod %s: no %s volume; volumes: %s", pod.Name, typ, describeVolumes(pod))
			}
		}
		if hp := hostPathVolumes(pod); len(hp) > 0 {
			t.Errorf("pod %s has hostPath volumes %v", pod.Name, hp)
		}
		wants = append(wants, want{pod: pod.Name, apm: c.apm, dsd: c.dsd})
	}
	uids := map[string]string{}
	for _, c := range cases {
		p := f.waitPodReady(ns, c.pod.Name, 2*time.Minute)
		uids[p.Name] = string(p.UID)
	}
	rec := f.waitTraffic(a, wants, 3, 90*time.Second, nil)
	t.Logf("agent record: %s", rec)

	mi, err := f.nodeMountInfo()
	if err != nil {
		t.Fatal(err)
	}
	for name, uid := range uids {
		lines := csiMountLines(mi, uid)
		if len(lines) == 0 {
			t.Errorf("pod %s (uid %s): no CSI mount on the node", name, uid)
		}
		for _, l := range lines {
			if !mountReadOnly(l) {
				t.Errorf("pod %s: CSI mount is not read-only: %s", name, l)
			}
		}
		t.Logf("pod %s: %d read-only CSI mounts on the node", name, len(lines))
	}

	// The umbrella's ValidatingAdmissionPolicy keeps the driver's volumes
	// read-only and of a known type, at admission rather than at mount time.
	writable := withCSIVolume(appPod("writable"), "dsd", datadog.PodDSDSocketDirectory,
		map[string]string{datadog.AttrType: string(datadog.DSDSocketDirectory)})
	writable.Spec.Volumes[0].CSI.ReadOnly = nil
	unknown := withCSIVolume(appPod("unknown-type"), "dsd", datadog.PodDSDSocketDirectory,
		map[string]string{datadog.AttrType: "HostRoot"})
	for _, c := range []struct {
		pod  *corev1.Pod
		want string
	}{{writable, "readOnly"}, {unknown, "volumeAttributes.type"}} {
		_, err := f.dryRunPod(f.ctx, ns, c.pod)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("pod %s: admission answered %v; want a rejection naming %s", c.pod.Name, err, c.want)
		}
	}
}
