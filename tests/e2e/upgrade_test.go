package e2e

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/datadog-csi/datadog-csi/pkg/datadog"
)

// TestHelmUpgradeSocketToCSI is the migration a user makes: the webhook runs
// in socket mode (hostPath), `helm upgrade --set
// datadog-csi-webhook.agentCommunicationMode=csi` switches it; new pods get
// CSI volumes, and pods created before keep running untouched and keep
// reaching the agent through their hostPath.
func TestHelmUpgradeSocketToCSI(t *testing.T) {
	f := newFixture(t)
	a := f.installAgent()
	rel := f.install(umbrellaChart, umbrellaValues(datadog.ModeSocket))
	// hostPath pods need a namespace that allows them.
	ns := f.namespace("e2e-upgrade", map[string]string{psaEnforce: "privileged"})
	f.waitWebhookMode(ns, datadog.ModeSocket)

	old := f.createPod(ns, optIn(appPod("before-upgrade")))
	if len(hostPathVolumes(old)) == 0 {
		t.Fatalf("socket mode: pod %s has no hostPath volume: %s", old.Name, describeVolumes(old))
	}
	old = f.waitPodReady(ns, old.Name, 2*time.Minute)
	f.waitTraffic(a, []want{{pod: old.Name, apm: true, dsd: true}}, 2, time.Minute, nil)

	f.upgrade(rel, umbrellaValues(datadog.ModeCSI))
	f.waitWebhookMode(ns, datadog.ModeCSI)

	newPod := f.createPod(ns, optIn(appPod("after-upgrade")))
	if hp := hostPathVolumes(newPod); len(hp) > 0 {
		t.Errorf("after the upgrade, pod %s has hostPath volumes %v", newPod.Name, hp)
	}
	if len(ourVolumes(newPod)) != 2 {
		t.Errorf("after the upgrade, pod %s has no CSI volumes: %s", newPod.Name, describeVolumes(newPod))
	}
	f.waitPodReady(ns, newPod.Name, 2*time.Minute)
	before, err := f.agentRecords(f.ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	f.waitTraffic(a, []want{{pod: old.Name, apm: true, dsd: true}, {pod: newPod.Name, apm: true, dsd: true}}, 2, time.Minute, &before)

	now, err := f.client.CoreV1().Pods(ns).Get(f.ctx, old.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the pod created before the upgrade is gone: %v", err)
	}
	if now.UID != old.UID {
		t.Errorf("pod %s was recreated (uid %s, was %s)", old.Name, now.UID, old.UID)
	}
	if got, was := describeVolumes(now), describeVolumes(old); got != was {
		t.Errorf("pod %s's volumes changed: %s, was %s", old.Name, got, was)
	}
	for _, cs := range now.Status.ContainerStatuses {
		if cs.RestartCount != 0 || !cs.Ready {
			t.Errorf("pod %s container %s: restarts %d ready %v; want untouched", old.Name, cs.Name, cs.RestartCount, cs.Ready)
		}
	}
}
