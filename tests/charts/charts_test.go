package charts

import (
	"encoding/base64"
	"fmt"
	"path"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"

	"github.com/datadog-csi/datadog-csi/pkg/datadog"
)

// Every chart renders with its defaults and with each ci values file, and
// every object decodes strictly into its API type and carries the
// app.kubernetes.io labels.
func TestChartsRenderStrictly(t *testing.T) {
	for _, name := range allCharts {
		cases := map[string]map[string]any{"defaults": nil}
		for _, f := range ciValuesFiles(t, name) {
			cases[filepath.Base(f)] = valuesFile(t, f)
		}
		for file, vals := range cases {
			for _, caps := range [][]string{nil, {vapAPI}} {
				t.Run(name+"/"+file+"/"+strings.Join(caps, ","), func(t *testing.T) {
					r := mustRender(t, name, vals, renderOptions{apiVersions: caps})
					if len(r.docs) == 0 {
						t.Fatal("rendered nothing")
					}
					r.objects(t)
					for _, d := range r.docs {
						labels := nestedMap(d.obj, "metadata", "labels")
						for _, key := range []string{"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version", "app.kubernetes.io/managed-by", "helm.sh/chart"} {
							if labels[key] == nil || labels[key] == "" {
								t.Errorf("%s %q (%s) lacks label %s", d.kind, d.name, d.source, key)
							}
						}
					}
					if strings.TrimSpace(r.notes) == "" {
						t.Error("NOTES.txt rendered empty")
					}
				})
			}
		}
	}
}

func nestedMap(obj map[string]any, keys ...string) map[string]any {
	cur := obj
	for _, k := range keys {
		next, _ := cur[k].(map[string]any)
		if next == nil {
			return map[string]any{}
		}
		cur = next
	}
	return cur
}

// The chart's strings that pkg/datadog defines must match it.
func TestChartsUseSharedVocabulary(t *testing.T) {
	r := mustRender(t, umbrellaChart, nil, renderOptions{apiVersions: []string{vapAPI}})
	if got := only[*storagev1.CSIDriver](t, r).Name; got != datadog.DriverName {
		t.Errorf("CSIDriver name %q, want datadog.DriverName %q", got, datadog.DriverName)
	}
	ds := only[*appsv1.DaemonSet](t, r)
	driver := container(t, ds.Spec.Template.Spec, "csi-node-driver")
	if v, _ := argValue(driver.Args, "apm-host-socket-path"); v != datadog.DefaultAPMSocketPath {
		t.Errorf("default APM socket %q, want %q", v, datadog.DefaultAPMSocketPath)
	}
	if v, _ := argValue(driver.Args, "dsd-host-socket-path"); v != datadog.DefaultDSDSocketPath {
		t.Errorf("default DogStatsD socket %q, want %q", v, datadog.DefaultDSDSocketPath)
	}
	if v, _ := env(driver, "DD_KUBELET_REGISTRATION_PATH"); v != "/var/lib/kubelet/plugins/"+datadog.DriverName+"/csi.sock" {
		t.Errorf("DD_KUBELET_REGISTRATION_PATH = %q", v)
	}
	if got := ds.Spec.Template.Labels[datadog.LabelEnabled]; got != "false" {
		t.Errorf("driver pods must opt out of injection (%s=false), got %q", datadog.LabelEnabled, got)
	}

	dep := only[*appsv1.Deployment](t, r)
	webhook := container(t, dep.Spec.Template.Spec, "webhook")
	for flag, want := range map[string]string{"apm-socket-path": datadog.DefaultAPMSocketPath, "dsd-socket-path": datadog.DefaultDSDSocketPath, "mode": string(datadog.ModeAuto)} {
		if v, _ := argValue(webhook.Args, flag); v != want {
			t.Errorf("webhook --%s=%q, want %q", flag, v, want)
		}
	}
	if got := dep.Spec.Template.Labels[datadog.LabelEnabled]; got != "false" {
		t.Errorf("webhook pods must opt out of injection, got %s=%q", datadog.LabelEnabled, got)
	}

	// The volume policy's type list is pkg/datadog's.
	vap := only[*admissionregistrationv1.ValidatingAdmissionPolicy](t, r)
	var expr string
	for _, v := range vap.Spec.Variables {
		expr += v.Expression
	}
	if !strings.Contains(expr, "'"+datadog.DriverName+"'") {
		t.Errorf("policy does not match driver %s: %s", datadog.DriverName, expr)
	}
	for _, typ := range datadog.VolumeTypes {
		if !strings.Contains(expr, "'"+string(typ)+"'") {
			t.Errorf("policy does not allow volume type %s", typ)
		}
	}
	if n := strings.Count(expr, "Socket'") + strings.Count(expr, "Directory'"); n != len(datadog.VolumeTypes) {
		t.Errorf("policy lists %d volume types, pkg/datadog has %d: %s", n, len(datadog.VolumeTypes), expr)
	}

	// The webhook chart's mode enum is pkg/datadog's Modes.
	schema := loadChart(t, webhookChart).Schema
	var modes []string
	for _, m := range datadog.Modes {
		modes = append(modes, `"`+string(m)+`"`)
	}
	if !strings.Contains(strings.Join(strings.Fields(string(schema)), ""), `"enum":[`+strings.Join(modes, ",")+`]`) {
		t.Errorf("webhook values.schema.json agentCommunicationMode enum differs from datadog.Modes %v", modes)
	}
}

// A values file that sets every key of Datadog's chart 0.17.0 to a
// non-default value renders, and each key lands where it should.
func TestDriverAcceptsDatadogValues(t *testing.T) {
	r := mustRender(t, driverChart, valuesFile(t, filepath.Join(chartsDir, driverChart, "ci", "datadog-values.yaml")), renderOptions{})
	ds := only[*appsv1.DaemonSet](t, r)
	pod := ds.Spec.Template.Spec
	driver := container(t, pod, "csi-node-driver")
	registrar := container(t, pod, "csi-node-driver-registrar")
	sa := only[*corev1.ServiceAccount](t, r)

	check := func(key string, ok bool, got any) {
		t.Helper()
		if !ok {
			t.Errorf("%s: not applied, got %#v", key, got)
		}
	}
	check("nameOverride", ds.Name == "dd-csi-node-server" && ds.Labels["app.kubernetes.io/name"] == "dd-csi", ds.Name)
	check("fullnameOverride", sa.Name == "dd-csi-full" && pod.ServiceAccountName == "dd-csi-full", sa.Name)
	check("image.repository+tag", driver.Image == "registry.example.com/mirror/csi-driver:1.4.0-custom", driver.Image)
	check("image.pullPolicy", driver.ImagePullPolicy == corev1.PullAlways, driver.ImagePullPolicy)
	check("image.pullSecrets", reflect.DeepEqual(pod.ImagePullSecrets, []corev1.LocalObjectReference{{Name: "regcred"}}), pod.ImagePullSecrets)
	check("priorityClassName", pod.PriorityClassName == "system-node-critical", pod.PriorityClassName)
	check("registrar.image", registrar.Image == "registry.example.com/mirror/csi-node-driver-registrar:v2.13.0", registrar.Image)
	check("registrar.image.pullPolicy", registrar.ImagePullPolicy == corev1.PullAlways, registrar.ImagePullPolicy)
	check("registrar.securityContext", registrar.SecurityContext != nil && registrar.SecurityContext.RunAsUser != nil && *registrar.SecurityContext.RunAsUser == 0, registrar.SecurityContext)
	check("driver.securityContext", driver.SecurityContext != nil && driver.SecurityContext.RunAsUser != nil && *driver.SecurityContext.RunAsUser == 0 &&
		*driver.SecurityContext.Privileged && *driver.SecurityContext.ReadOnlyRootFilesystem, driver.SecurityContext)
	check("driver.resources", driver.Resources.Limits.Cpu().String() == "200m" && driver.Resources.Requests.Memory().String() == "64Mi", driver.Resources)
	check("tolerations", len(pod.Tolerations) == 1 && pod.Tolerations[0].Key == "dedicated" && pod.Tolerations[0].Value == "observability", pod.Tolerations)
	check("nodeSelector", reflect.DeepEqual(pod.NodeSelector, map[string]string{"kubernetes.io/os": "linux"}), pod.NodeSelector)
	check("nodeAffinity", pod.Affinity != nil && pod.Affinity.NodeAffinity != nil &&
		pod.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms[0].MatchExpressions[0].Key == "node-role.example.com/apps", pod.Affinity)
	check("updateStrategy", ds.Spec.UpdateStrategy.RollingUpdate != nil && ds.Spec.UpdateStrategy.RollingUpdate.MaxUnavailable.IntValue() == 2, ds.Spec.UpdateStrategy)
	check("securityContext", pod.SecurityContext != nil && pod.SecurityContext.SeccompProfile != nil && pod.SecurityContext.SeccompProfile.Type == corev1.SeccompProfileTypeRuntimeDefault, pod.SecurityContext)
	check("annotations", ds.Spec.Template.Annotations["example.com/owner"] == "platform", ds.Spec.Template.Annotations)
	check("labels", ds.Spec.Template.Labels["team"] == "platform", ds.Spec.Template.Labels)
	check("apm.enabled (accepted; never advertised)", only[*storagev1.CSIDriver](t, r).Annotations["csi.datadoghq.com/apm-enabled"] == "false", nil)

	// sockets.* land in the driver's args and their directories are mounted
	// read-only at the same paths.
	apm, _ := argValue(driver.Args, "apm-host-socket-path")
	dsd, _ := argValue(driver.Args, "dsd-host-socket-path")
	check("sockets.apmHostSocketPath", apm == "/run/dd-apm/trace.sock", apm)
	check("sockets.dsdHostSocketPath", dsd == "/run/dd-dsd/statsd.sock", dsd)
	for _, dir := range []string{"/run/dd-apm", "/run/dd-dsd"} {
		m, ok := mountAt(driver, dir)
		check("socket directory mount "+dir, ok && m.ReadOnly, m)
		v, ok := volumeNamed(pod, m.Name)
		check("socket directory volume "+dir, ok && v.HostPath != nil && v.HostPath.Path == dir &&
			*v.HostPath.Type == corev1.HostPathDirectoryOrCreate, v)
	}
}

// An image repository left empty or null, as in values files from Datadog's
// early charts, means the chart's default (the templates repeat values.yaml's,
// since Helm deletes a key set to null), in the driver chart and via the umbrella.
func TestDriverEmptyRepositoryMeansDefault(t *testing.T) {
	images := func(r rendered) (string, string) {
		pod := only[*appsv1.DaemonSet](t, r).Spec.Template.Spec
		return container(t, pod, "csi-node-driver").Image, container(t, pod, "csi-node-driver-registrar").Image
	}
	wantDriver, wantRegistrar := images(mustRender(t, driverChart, nil, renderOptions{}))
	if !strings.HasPrefix(wantDriver, "ghcr.io/datadog-csi/datadog-csi-driver:") || !strings.HasPrefix(wantRegistrar, "registry.k8s.io/sig-storage/csi-node-driver-registrar:") {
		t.Fatalf("default images %s, %s", wantDriver, wantRegistrar)
	}
	for _, empty := range []any{nil, "", " "} {
		vals := map[string]any{
			"image":     map[string]any{"repository": empty},
			"registrar": map[string]any{"image": map[string]any{"repository": empty}},
		}
		for _, tc := range []struct {
			chart string
			vals  map[string]any
		}{{driverChart, vals}, {umbrellaChart, map[string]any{"datadog-csi-driver": vals}}} {
			for _, skip := range []bool{false, true} {
				driver, registrar := images(mustRender(t, tc.chart, tc.vals, renderOptions{skipSchemaValidation: skip}))
				if driver != wantDriver || registrar != wantRegistrar {
					t.Errorf("%s, repositories %#v (skip schema %v): images %s, %s; want the defaults %s, %s", tc.chart, empty, skip, driver, registrar, wantDriver, wantRegistrar)
				}
			}
		}
	}
}

// With both sockets in one directory it is mounted once.
func TestDriverMountsSharedSocketDirectoryOnce(t *testing.T) {
	r := mustRender(t, driverChart, nil, renderOptions{})
	driver := container(t, only[*appsv1.DaemonSet](t, r).Spec.Template.Spec, "csi-node-driver")
	n := 0
	for _, m := range driver.VolumeMounts {
		if m.MountPath == datadog.SocketDir {
			n++
			if !m.ReadOnly {
				t.Errorf("socket directory mounted writable")
			}
		}
	}
	if n != 1 {
		t.Errorf("%s mounted %d times, want once", datadog.SocketDir, n)
	}
}

func mountAt(c corev1.Container, path string) (corev1.VolumeMount, bool) {
	for _, m := range c.VolumeMounts {
		if m.MountPath == path {
			return m, true
		}
	}
	return corev1.VolumeMount{}, false
}

func volumeNamed(spec corev1.PodSpec, name string) (corev1.Volume, bool) {
	for _, v := range spec.Volumes {
		if v.Name == name {
			return v, true
		}
	}
	return corev1.Volume{}, false
}

// The DaemonSet wiring the driver's contract relies on: mounts at the
// kubelet's paths, Bidirectional propagation, the CSI socket directory, the
// liveness probe, and registration by sidecar or in-process.
func TestDriverDaemonSetWiring(t *testing.T) {
	for _, tc := range []struct {
		name      string
		vals      map[string]any
		root      string
		inProcess bool
	}{
		{"registrar sidecar", nil, "/var/lib/kubelet", false},
		{"in-process registration", map[string]any{"registrar": map[string]any{"enabled": false}}, "/var/lib/kubelet", true},
		{"custom kubelet root", map[string]any{"kubeletRootDir": "/data/kubelet"}, "/data/kubelet", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := mustRender(t, driverChart, tc.vals, renderOptions{})
			pod := only[*appsv1.DaemonSet](t, r).Spec.Template.Spec
			driver := container(t, pod, "csi-node-driver")
			pluginDir := tc.root + "/plugins/" + datadog.DriverName

			pods, ok := mountAt(driver, tc.root+"/pods")
			if !ok || pods.MountPropagation == nil || *pods.MountPropagation != corev1.MountPropagationBidirectional || pods.ReadOnly {
				t.Errorf("pods dir mount %+v: want %s/pods, writable, Bidirectional", pods, tc.root)
			}
			if v, _ := volumeNamed(pod, pods.Name); v.HostPath == nil || v.HostPath.Path != tc.root+"/pods" {
				t.Errorf("pods volume %+v", v)
			}
			csi, ok := mountAt(driver, "/csi")
			if v, _ := volumeNamed(pod, csi.Name); !ok || v.HostPath == nil || v.HostPath.Path != pluginDir || *v.HostPath.Type != corev1.HostPathDirectoryOrCreate {
				t.Errorf("/csi volume %+v, want hostPath %s", v, pluginDir)
			}
			if v, _ := env(driver, "DD_CSI_ENDPOINT"); v != "unix:///csi/csi.sock" {
				t.Errorf("DD_CSI_ENDPOINT = %q", v)
			}
			if v, _ := env(driver, "DD_KUBELET_REGISTRATION_PATH"); v != pluginDir+"/csi.sock" {
				t.Errorf("DD_KUBELET_REGISTRATION_PATH = %q, want %s/csi.sock", v, pluginDir)
			}
			var nodeID bool
			for _, e := range driver.Env {
				nodeID = nodeID || (e.Name == "NODE_ID" && e.ValueFrom != nil && e.ValueFrom.FieldRef.FieldPath == "spec.nodeName")
			}
			if !nodeID {
				t.Error("NODE_ID is not from spec.nodeName")
			}
			if p := driver.LivenessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/healthz" || p.HTTPGet.Port.String() != "healthz" {
				t.Errorf("liveness probe %+v, want GET /healthz on port healthz", p)
			}
			ports := map[string]int32{}
			for _, p := range driver.Ports {
				ports[p.Name] = p.ContainerPort
			}
			if ports["healthz"] != 9808 || ports["metrics"] != 9809 {
				t.Errorf("ports %v", ports)
			}
			if v, _ := env(driver, "DD_HEALTH_ADDRESS"); v != ":9808" {
				t.Errorf("DD_HEALTH_ADDRESS = %q", v)
			}

			register, _ := env(driver, "DD_REGISTER_WITH_KUBELET")
			_, driverHasRegistry := mountAt(driver, "/registration")
			if tc.inProcess {
				if len(pod.Containers) != 1 || register != "true" || !driverHasRegistry {
					t.Errorf("in-process: containers=%d DD_REGISTER_WITH_KUBELET=%q registration mount=%v", len(pod.Containers), register, driverHasRegistry)
				}
			} else {
				registrar := container(t, pod, "csi-node-driver-registrar")
				want := []string{"--csi-address=/csi/csi.sock", "--kubelet-registration-path=" + pluginDir + "/csi.sock"}
				if !reflect.DeepEqual(registrar.Args, want) || register != "false" || driverHasRegistry {
					t.Errorf("sidecar: args %v (want %v), DD_REGISTER_WITH_KUBELET=%q, driver registration mount=%v", registrar.Args, want, register, driverHasRegistry)
				}
				if !strings.HasPrefix(registrar.Image, "registry.k8s.io/sig-storage/csi-node-driver-registrar:v") {
					t.Errorf("registrar image %s is not a pinned registry.k8s.io tag", registrar.Image)
				}
			}
			m, _ := mountAt(container(t, pod, pod.Containers[len(pod.Containers)-1].Name), "/registration")
			if v, _ := volumeNamed(pod, m.Name); v.HostPath == nil || v.HostPath.Path != tc.root+"/plugins_registry" {
				t.Errorf("registration volume %+v, want %s/plugins_registry", v, tc.root)
			}
		})
	}
}

// driver.extraEnv reaches the driver container after the chart's own
// variables, which stay as they were.
func TestDriverExtraEnv(t *testing.T) {
	vals := map[string]any{"driver": map[string]any{"extraEnv": []any{
		map[string]any{"name": "GOMAXPROCS", "value": "1"},
		map[string]any{"name": "POD_IP", "valueFrom": map[string]any{"fieldRef": map[string]any{"fieldPath": "status.podIP"}}},
	}}}
	for _, tc := range []struct {
		chart string
		vals  map[string]any
	}{{driverChart, vals}, {umbrellaChart, map[string]any{"datadog-csi-driver": vals}}} {
		t.Run(tc.chart, func(t *testing.T) {
			defaults := container(t, only[*appsv1.DaemonSet](t, mustRender(t, driverChart, nil, renderOptions{})).Spec.Template.Spec, "csi-node-driver")
			driver := container(t, only[*appsv1.DaemonSet](t, mustRender(t, tc.chart, tc.vals, renderOptions{})).Spec.Template.Spec, "csi-node-driver")
			n := len(defaults.Env)
			if len(driver.Env) != n+2 || !reflect.DeepEqual(driver.Env[:n], defaults.Env) {
				t.Fatalf("env %+v: want the chart's %d variables, then the 2 extra ones", driver.Env, n)
			}
			if e := driver.Env[n]; e.Name != "GOMAXPROCS" || e.Value != "1" {
				t.Errorf("first extra variable %+v", e)
			}
			if e := driver.Env[n+1]; e.Name != "POD_IP" || e.ValueFrom == nil || e.ValueFrom.FieldRef.FieldPath != "status.podIP" {
				t.Errorf("second extra variable %+v", e)
			}
		})
	}
}

// By default the DaemonSet tolerates every taint: a labelled pod can run
// wherever it is scheduled only if the driver runs there too.
func TestDriverToleratesEveryTaintByDefault(t *testing.T) {
	pod := only[*appsv1.DaemonSet](t, mustRender(t, driverChart, nil, renderOptions{})).Spec.Template.Spec
	tolerateAll := false
	for _, tol := range pod.Tolerations {
		tolerateAll = tolerateAll || (tol.Key == "" && tol.Operator == corev1.TolerationOpExists && tol.Effect == "")
	}
	if !tolerateAll {
		t.Errorf("tolerations %+v do not tolerate every taint", pod.Tolerations)
	}
}

func TestCSIDriverSpec(t *testing.T) {
	d := only[*storagev1.CSIDriver](t, mustRender(t, driverChart, nil, renderOptions{}))
	s := d.Spec
	if s.AttachRequired == nil || *s.AttachRequired || s.PodInfoOnMount == nil || !*s.PodInfoOnMount ||
		s.FSGroupPolicy == nil || *s.FSGroupPolicy != storagev1.NoneFSGroupPolicy ||
		!reflect.DeepEqual(s.VolumeLifecycleModes, []storagev1.VolumeLifecycleMode{storagev1.VolumeLifecycleEphemeral}) {
		t.Errorf("CSIDriver spec %+v", s)
	}
}

// Only the driver DaemonSet may use hostPath; everything else must pass
// Pod Security baseline as far as volumes go.
func TestHostPathOnlyInDriverDaemonSet(t *testing.T) {
	for _, name := range allCharts {
		for _, f := range append([]string{""}, ciValuesFiles(t, name)...) {
			var vals map[string]any
			if f != "" {
				vals = valuesFile(t, f)
			}
			r := mustRender(t, name, vals, renderOptions{apiVersions: []string{vapAPI}})
			for _, d := range r.docs {
				if d.kind == "DaemonSet" && strings.Contains(d.source, "datadog-csi-driver/templates/daemonset.yaml") {
					continue
				}
				if strings.Contains(d.yaml, "hostPath") {
					t.Errorf("%s/%s: %s %q (%s) uses hostPath", name, filepath.Base(f), d.kind, d.name, d.source)
				}
			}
		}
	}
}

// The webhook pod passes Pod Security "restricted" with every values file;
// the driver pod, which is privileged, does not even pass "baseline" (which
// shows the evaluator is not vacuous).
func TestPodSecurity(t *testing.T) {
	evaluator, err := policy.NewEvaluator(policy.DefaultChecks(), nil)
	if err != nil {
		t.Fatal(err)
	}
	latest := func(level api.Level) api.LevelVersion {
		return api.LevelVersion{Level: level, Version: api.LatestVersion()}
	}
	failures := func(results []policy.CheckResult) []string {
		var out []string
		for _, r := range results {
			if !r.Allowed {
				out = append(out, r.ForbiddenReason+": "+r.ForbiddenDetail)
			}
		}
		return out
	}
	for _, name := range []string{webhookChart, umbrellaChart} {
		for _, f := range append([]string{""}, ciValuesFiles(t, name)...) {
			var vals map[string]any
			if f != "" {
				vals = valuesFile(t, f)
			}
			r := mustRender(t, name, vals, renderOptions{})
			for _, dep := range all[*appsv1.Deployment](t, r) {
				if bad := failures(evaluator.EvaluatePod(latest(api.LevelRestricted), &dep.Spec.Template.ObjectMeta, &dep.Spec.Template.Spec)); len(bad) > 0 {
					t.Errorf("%s/%s: webhook pod fails Pod Security restricted: %v", name, filepath.Base(f), bad)
				}
			}
		}
	}
	ds := only[*appsv1.DaemonSet](t, mustRender(t, driverChart, nil, renderOptions{}))
	if bad := failures(evaluator.EvaluatePod(latest(api.LevelBaseline), &ds.Spec.Template.ObjectMeta, &ds.Spec.Template.Spec)); len(bad) == 0 {
		t.Error("the privileged driver pod passes baseline: the evaluator is not checking")
	}
}

// The driver never talks to the API server: no token anywhere.
func TestDriverPodHasNoAPIToken(t *testing.T) {
	for _, f := range append([]string{""}, ciValuesFiles(t, driverChart)...) {
		var vals map[string]any
		if f != "" {
			vals = valuesFile(t, f)
		}
		r := mustRender(t, driverChart, vals, renderOptions{})
		sa := only[*corev1.ServiceAccount](t, r)
		pod := only[*appsv1.DaemonSet](t, r).Spec.Template.Spec
		if sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken {
			t.Errorf("%s: ServiceAccount automountServiceAccountToken is not false", f)
		}
		if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
			t.Errorf("%s: pod automountServiceAccountToken is not false", f)
		}
		if pod.ServiceAccountName != sa.Name {
			t.Errorf("%s: pod uses ServiceAccount %q, chart creates %q", f, pod.ServiceAccountName, sa.Name)
		}
		for _, v := range pod.Volumes {
			if v.Projected != nil || v.Secret != nil {
				t.Errorf("%s: driver pod mounts volume %s with credentials", f, v.Name)
			}
		}
		if n := len(all[*rbacv1.ClusterRole](t, r)) + len(all[*rbacv1.Role](t, r)); n != 0 {
			t.Errorf("%s: driver chart grants API access (%d roles)", f, n)
		}
	}
}

// The webhook's names in its flags, RBAC, Service and webhook configuration
// agree, and each TLS mode renders what it needs.
func TestWebhookWiring(t *testing.T) {
	for _, tc := range []struct {
		file             string
		tlsMode          string
		secret           string
		wantSecretObject bool
		wantCertificate  bool
		wantCABundle     string
	}{
		{"", "selfManaged", "dd-datadog-csi-webhook-tls", true, false, ""},
		{"cert-manager-values.yaml", "certManager", "dd-datadog-csi-webhook-tls", false, true, ""},
		{"existing-secret-values.yaml", "existingSecret", "my-webhook-tls", false, false, "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg=="},
	} {
		t.Run(tc.tlsMode, func(t *testing.T) {
			var vals map[string]any
			if tc.file != "" {
				vals = valuesFile(t, filepath.Join(chartsDir, webhookChart, "ci", tc.file))
			}
			r := mustRender(t, webhookChart, vals, renderOptions{})
			const fullname = "dd-datadog-csi-webhook"
			dep := only[*appsv1.Deployment](t, r)
			pod := dep.Spec.Template.Spec
			c := container(t, pod, "webhook")
			if len(c.Args) == 0 || c.Args[0] != "serve" {
				t.Errorf("args %v do not start with serve", c.Args)
			}
			for flag, want := range map[string]string{
				"tls-mode": tc.tlsMode, "tls-secret-name": tc.secret, "webhook-config-name": fullname,
				"service-name": fullname, "namespace": "$(POD_NAMESPACE)", "tls-cert-dir": "/etc/datadog-csi-webhook/certs",
				"listen-address": ":8443", "probe-address": ":8080",
			} {
				if got, _ := argValue(c.Args, flag); got != want {
					t.Errorf("--%s=%q, want %q", flag, got, want)
				}
			}
			if c.Env[0].Name != "POD_NAMESPACE" || c.Env[0].ValueFrom.FieldRef.FieldPath != "metadata.namespace" {
				t.Errorf("POD_NAMESPACE env %+v", c.Env)
			}
			for _, p := range []*corev1.Probe{c.LivenessProbe, c.ReadinessProbe} {
				if p == nil || p.HTTPGet == nil || p.HTTPGet.Port.String() != "http-probe" {
					t.Errorf("probe %+v must use the HTTP probe port", p)
				}
			}
			if *dep.Spec.Replicas != 2 && tc.file == "" {
				t.Errorf("replicas %d, want 2", *dep.Spec.Replicas)
			}
			if len(pod.TopologySpreadConstraints) == 0 {
				t.Error("no topology spread")
			}

			svc := only[*corev1.Service](t, r)
			mwc := only[*admissionregistrationv1.MutatingWebhookConfiguration](t, r)
			wh := mwc.Webhooks[0]
			if svc.Name != fullname || mwc.Name != fullname || wh.ClientConfig.Service.Name != fullname ||
				wh.ClientConfig.Service.Namespace != releaseNamespace || *wh.ClientConfig.Service.Path != "/injectconfig" || *wh.ClientConfig.Service.Port != 443 {
				t.Errorf("service %s, webhook config %s -> %+v", svc.Name, mwc.Name, wh.ClientConfig.Service)
			}
			if svc.Spec.Ports[0].TargetPort.String() != "https" {
				t.Errorf("service targets %s", svc.Spec.Ports[0].TargetPort.String())
			}
			if *wh.FailurePolicy != admissionregistrationv1.Ignore || *wh.SideEffects != admissionregistrationv1.SideEffectClassNone ||
				*wh.TimeoutSeconds != 10 || *wh.MatchPolicy != admissionregistrationv1.Equivalent ||
				*wh.ReinvocationPolicy != admissionregistrationv1.IfNeededReinvocationPolicy ||
				!reflect.DeepEqual(wh.Rules[0].Operations, []admissionregistrationv1.OperationType{admissionregistrationv1.Create}) ||
				!reflect.DeepEqual(wh.Rules[0].Resources, []string{"pods"}) {
				t.Errorf("webhook settings %+v", wh)
			}
			if string(wh.ClientConfig.CABundle) != decodedOrEmpty(t, tc.wantCABundle) {
				t.Errorf("caBundle %q", wh.ClientConfig.CABundle)
			}
			excluded := wh.NamespaceSelector.MatchExpressions[0]
			if excluded.Key != "kubernetes.io/metadata.name" || excluded.Operator != "NotIn" ||
				!slices.Contains(excluded.Values, "kube-system") || !slices.Contains(excluded.Values, releaseNamespace) {
				t.Errorf("namespaceSelector %+v must exclude kube-system and %s", excluded, releaseNamespace)
			}
			optOut := wh.ObjectSelector.MatchExpressions[0]
			if optOut.Key != datadog.LabelEnabled || slices.Contains(optOut.Values, "false") == (optOut.Operator == "In") {
				t.Errorf("objectSelector %+v must exclude %s=false", optOut, datadog.LabelEnabled)
			}

			secrets := all[*corev1.Secret](t, r)
			if (len(secrets) == 1) != tc.wantSecretObject || (tc.wantSecretObject && secrets[0].Name != tc.secret) {
				t.Errorf("secrets %v", secrets)
			}
			certs := all[*certificate](t, r)
			if (len(certs) == 1) != tc.wantCertificate {
				t.Errorf("certificates %v", certs)
			}
			if tc.wantCertificate {
				if certs[0].Spec.SecretName != tc.secret || !slices.Contains(certs[0].Spec.DNSNames, fullname+"."+releaseNamespace+".svc") ||
					mwc.Annotations["cert-manager.io/inject-ca-from"] != releaseNamespace+"/"+certs[0].Name {
					t.Errorf("certificate %+v / annotations %v", certs[0].Spec, mwc.Annotations)
				}
			}
			certVolume, _ := volumeNamed(pod, "certs")
			if (certVolume.Secret != nil) != (tc.tlsMode != "selfManaged") || (certVolume.Secret != nil && certVolume.Secret.SecretName != tc.secret) {
				t.Errorf("certs volume %+v", certVolume)
			}

			checkWebhookRBAC(t, r, fullname, tc.secret, tc.tlsMode == "selfManaged")
		})
	}
}

// kube-system and the release namespace are never sent to the webhook nor
// mutated by it, whatever excludedNamespaces says; the list has no duplicates.
// TestWebhookShutdownDelay: the flag carries the value, and the grace
// period covers the delay plus the 5 s drain, never below Kubernetes' 30 s.
func TestWebhookShutdownDelay(t *testing.T) {
	for _, tc := range []struct {
		delay     any
		wantFlag  string
		wantGrace int64
	}{
		{nil, "5s", 30},
		{"0", "0", 30},
		{0, "0", 30},
		{"1500ms", "1500ms", 30},
		{"20s", "20s", 35},
		{"1m30s", "1m30s", 105},
		{"90.5s", "90.5s", 106},
	} {
		t.Run(fmt.Sprint(tc.delay), func(t *testing.T) {
			var vals map[string]any
			if tc.delay != nil {
				vals = map[string]any{"shutdownDelay": tc.delay}
			}
			pod := only[*appsv1.Deployment](t, mustRender(t, webhookChart, vals, renderOptions{})).Spec.Template.Spec
			if got, _ := argValue(container(t, pod, "webhook").Args, "shutdown-delay"); got != tc.wantFlag {
				t.Errorf("--shutdown-delay=%q, want %q", got, tc.wantFlag)
			}
			if g := pod.TerminationGracePeriodSeconds; g == nil || *g != tc.wantGrace {
				t.Errorf("terminationGracePeriodSeconds %v, want %d", g, tc.wantGrace)
			}
		})
	}
}

func TestWebhookAlwaysExcludesKubeSystemAndOwnNamespace(t *testing.T) {
	for _, tc := range []struct {
		name     string
		excluded []any
		want     []string
	}{
		{"default", nil, []string{"kube-system", releaseNamespace}},
		{"empty", []any{}, []string{"kube-system", releaseNamespace}},
		{"without kube-system", []any{"team-a"}, []string{"kube-system", "team-a", releaseNamespace}},
		{"duplicates", []any{releaseNamespace, "kube-system", "team-a", "team-a"}, []string{"kube-system", releaseNamespace, "team-a"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vals := map[string]any{}
			if tc.excluded != nil {
				vals["excludedNamespaces"] = tc.excluded
			}
			for chart, vals := range map[string]map[string]any{webhookChart: vals, umbrellaChart: {"datadog-csi-webhook": vals}} {
				r := mustRender(t, chart, vals, renderOptions{})
				selector := only[*admissionregistrationv1.MutatingWebhookConfiguration](t, r).Webhooks[0].NamespaceSelector.MatchExpressions[0]
				if selector.Key != "kubernetes.io/metadata.name" || selector.Operator != "NotIn" || !reflect.DeepEqual(selector.Values, tc.want) {
					t.Errorf("%s: namespaceSelector %+v, want NotIn %v", chart, selector, tc.want)
				}
				webhook := container(t, only[*appsv1.Deployment](t, r).Spec.Template.Spec, "webhook")
				if got, _ := argValue(webhook.Args, "excluded-namespaces"); got != strings.Join(tc.want, ",") {
					t.Errorf("%s: --excluded-namespaces=%s, want %s", chart, got, strings.Join(tc.want, ","))
				}
			}
		})
	}
}

func decodedOrEmpty(t *testing.T, b64 string) string {
	t.Helper()
	if b64 == "" {
		return ""
	}
	out, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// checkWebhookRBAC: the webhook may read namespaces and CSIDrivers, and touch
// only its own webhook configuration and Secret, by name.
func checkWebhookRBAC(t *testing.T, r rendered, fullname, secret string, selfManaged bool) {
	t.Helper()
	type grant struct{ group, resource, verb, name string }
	var got []grant
	add := func(rules []rbacv1.PolicyRule) {
		for _, rule := range rules {
			for _, g := range rule.APIGroups {
				for _, res := range rule.Resources {
					for _, v := range rule.Verbs {
						names := rule.ResourceNames
						if len(names) == 0 {
							names = []string{"*"}
						}
						for _, n := range names {
							got = append(got, grant{g, res, v, n})
						}
					}
				}
			}
		}
	}
	for _, cr := range all[*rbacv1.ClusterRole](t, r) {
		add(cr.Rules)
	}
	for _, role := range all[*rbacv1.Role](t, r) {
		add(role.Rules)
	}
	var want []grant
	for _, v := range []string{"get", "list", "watch"} {
		want = append(want, grant{"", "namespaces", v, "*"}, grant{"storage.k8s.io", "csidrivers", v, "*"})
	}
	if selfManaged {
		for _, v := range []string{"get", "update", "patch"} {
			want = append(want, grant{"admissionregistration.k8s.io", "mutatingwebhookconfigurations", v, fullname}, grant{"", "secrets", v, secret})
		}
	}
	key := func(g grant) string { return path.Join(g.group, g.resource, g.verb, g.name) }
	sortGrants := func(gs []grant) []string {
		var out []string
		for _, g := range gs {
			out = append(out, key(g))
		}
		sort.Strings(out)
		return out
	}
	if g, w := sortGrants(got), sortGrants(want); !reflect.DeepEqual(g, w) {
		t.Errorf("RBAC grants\n got %v\nwant %v", g, w)
	}
	for _, b := range all[*rbacv1.ClusterRoleBinding](t, r) {
		if b.Subjects[0].Name != fullname || b.Subjects[0].Namespace != releaseNamespace {
			t.Errorf("binding %s subjects %+v", b.Name, b.Subjects)
		}
	}
}

// The umbrella sets the socket paths once and both subcharts use them; the
// volume policy renders only where the API exists.
func TestUmbrella(t *testing.T) {
	vals := valuesFile(t, filepath.Join(chartsDir, umbrellaChart, "ci", "custom-sockets-values.yaml"))
	r := mustRender(t, umbrellaChart, vals, renderOptions{apiVersions: []string{vapAPI}})
	driver := container(t, only[*appsv1.DaemonSet](t, r).Spec.Template.Spec, "csi-node-driver")
	webhook := container(t, only[*appsv1.Deployment](t, r).Spec.Template.Spec, "webhook")
	for flag, want := range map[string]string{"apm-host-socket-path": "/run/datadog-agent/apm.socket", "dsd-host-socket-path": "/run/datadog-agent/dsd.socket"} {
		if got, _ := argValue(driver.Args, flag); got != want {
			t.Errorf("driver --%s=%q, want %q", flag, got, want)
		}
	}
	for flag, want := range map[string]string{"apm-socket-path": "/run/datadog-agent/apm.socket", "dsd-socket-path": "/run/datadog-agent/dsd.socket"} {
		if got, _ := argValue(webhook.Args, flag); got != want {
			t.Errorf("webhook --%s=%q, want %q", flag, got, want)
		}
	}
	if _, ok := mountAt(driver, "/run/datadog-agent"); !ok {
		t.Error("driver does not mount /run/datadog-agent")
	}
	// A subchart socket value equal to the global agrees with it, so it is
	// accepted (a different one fails: TestBadValuesFailClearly).
	vals["datadog-csi-driver"] = map[string]any{"sockets": map[string]any{"apmHostSocketPath": "/run/datadog-agent/apm.socket"}}
	vals["datadog-csi-webhook"] = map[string]any{"dsdSocketPath": "/run/datadog-agent/dsd.socket"}
	agreeing := mustRender(t, umbrellaChart, vals, renderOptions{})
	if got, _ := argValue(container(t, only[*appsv1.DaemonSet](t, agreeing).Spec.Template.Spec, "csi-node-driver").Args, "apm-host-socket-path"); got != "/run/datadog-agent/apm.socket" {
		t.Errorf("driver --apm-host-socket-path=%q with a subchart value equal to the global", got)
	}
	if got, _ := argValue(container(t, only[*appsv1.Deployment](t, agreeing).Spec.Template.Spec, "webhook").Args, "dsd-socket-path"); got != "/run/datadog-agent/dsd.socket" {
		t.Errorf("webhook --dsd-socket-path=%q with a subchart value equal to the global", got)
	}

	// The templates repeat the default socket paths (Helm drops a value set
	// to null before they see it) to tell "left at the default" from "set":
	// a subchart value equal to pkg/datadog's default must count as unset,
	// so the global wins without an error. This fails if the copies drift.
	vals["datadog-csi-driver"] = map[string]any{"sockets": map[string]any{
		"apmHostSocketPath": datadog.DefaultAPMSocketPath, "dsdHostSocketPath": datadog.DefaultDSDSocketPath}}
	vals["datadog-csi-webhook"] = map[string]any{"apmSocketPath": datadog.DefaultAPMSocketPath, "dsdSocketPath": datadog.DefaultDSDSocketPath}
	defaults := mustRender(t, umbrellaChart, vals, renderOptions{})
	if got, _ := argValue(container(t, only[*appsv1.Deployment](t, defaults).Spec.Template.Spec, "webhook").Args, "apm-socket-path"); got != "/run/datadog-agent/apm.socket" {
		t.Errorf("webhook --apm-socket-path=%q with subchart values at pkg/datadog's defaults, want the global", got)
	}

	binding := only[*admissionregistrationv1.ValidatingAdmissionPolicyBinding](t, r)
	policy := only[*admissionregistrationv1.ValidatingAdmissionPolicy](t, r)
	if binding.Spec.PolicyName != policy.Name || !reflect.DeepEqual(binding.Spec.ValidationActions, []admissionregistrationv1.ValidationAction{"Warn", "Audit"}) {
		t.Errorf("binding %+v for policy %s", binding.Spec, policy.Name)
	}

	without := mustRender(t, umbrellaChart, nil, renderOptions{})
	if n := len(all[*admissionregistrationv1.ValidatingAdmissionPolicy](t, without)); n != 0 {
		t.Errorf("policy rendered without the %s API", vapAPI)
	}
	driverOnly := mustRender(t, umbrellaChart, valuesFile(t, filepath.Join(chartsDir, umbrellaChart, "ci", "driver-only-values.yaml")), renderOptions{apiVersions: []string{vapAPI}})
	if len(all[*appsv1.Deployment](t, driverOnly)) != 0 || len(all[*appsv1.DaemonSet](t, driverOnly)) != 1 ||
		len(all[*admissionregistrationv1.ValidatingAdmissionPolicy](t, driverOnly)) != 0 {
		t.Error("datadog-csi-webhook.enabled=false / volumePolicyEnabled=false not honoured")
	}

	e2e := mustRender(t, umbrellaChart, valuesFile(t, filepath.Join(chartsDir, umbrellaChart, "ci", "e2e-values.yaml")), renderOptions{})
	ds := only[*appsv1.DaemonSet](t, e2e)
	dep := only[*appsv1.Deployment](t, e2e)
	for _, c := range []corev1.Container{ds.Spec.Template.Spec.Containers[0], dep.Spec.Template.Spec.Containers[0]} {
		if !strings.HasPrefix(c.Image, "ghcr.io/datadog-csi/") || !strings.HasSuffix(c.Image, ":dev") || c.ImagePullPolicy != corev1.PullIfNotPresent {
			t.Errorf("e2e image %s (%s)", c.Image, c.ImagePullPolicy)
		}
	}
	if len(ds.Spec.Template.Spec.Containers) != 1 || len(ds.Spec.Template.Spec.ImagePullSecrets) != 0 {
		t.Errorf("e2e: want no registrar sidecar and no pull secrets")
	}
}

// Bad values fail with a message that names the value, from the schema or,
// when schema validation is skipped, from the templates themselves.
func TestBadValuesFailClearly(t *testing.T) {
	for _, tc := range []struct {
		name  string
		chart string
		vals  map[string]any
		want  []string // substrings of the error, with and without schema validation
	}{
		{"unknown mode", webhookChart, map[string]any{"agentCommunicationMode": "sidecar"}, []string{"agentCommunicationMode", "auto"}},
		{"unknown TLS mode", webhookChart, map[string]any{"tlsMode": "manual"}, []string{"tlsMode"}},
		{"relative APM socket", driverChart, map[string]any{"sockets": map[string]any{"apmHostSocketPath": "var/run/datadog/apm.socket"}}, []string{"apmHostSocketPath"}},
		{"DogStatsD socket with ..", driverChart, map[string]any{"sockets": map[string]any{"dsdHostSocketPath": "/var/run/../dsd.socket"}}, []string{"dsdHostSocketPath"}},
		{"relative webhook socket", webhookChart, map[string]any{"dsdSocketPath": "dsd.socket"}, []string{"dsdSocketPath"}},
		{"relative global socket", umbrellaChart, map[string]any{"global": map[string]any{"apmHostSocketPath": "run/apm.socket"}}, []string{"apmHostSocketPath"}},
		{"relative kubelet root", driverChart, map[string]any{"kubeletRootDir": "var/lib/kubelet/"}, []string{"kubeletRootDir"}},
		{"empty driver tag", driverChart, map[string]any{"image": map[string]any{"tag": ""}}, []string{"image", "tag"}},
		{"empty webhook tag", webhookChart, map[string]any{"image": map[string]any{"tag": ""}}, []string{"image", "tag"}},
		{"empty registrar tag", driverChart, map[string]any{"registrar": map[string]any{"image": map[string]any{"tag": ""}}}, []string{"registrar", "tag"}},
		{"empty subchart tag via umbrella", umbrellaChart, map[string]any{"datadog-csi-driver": map[string]any{"image": map[string]any{"tag": ""}}}, []string{"tag"}},
		{"shutdownDelay not a duration", webhookChart, map[string]any{"shutdownDelay": "5 seconds"}, []string{"shutdownDelay"}},
		{"negative shutdownDelay", webhookChart, map[string]any{"shutdownDelay": "-5s"}, []string{"shutdownDelay"}},
		{"existingSecret without CA", webhookChart, map[string]any{"tlsMode": "existingSecret", "tlsSecretName": "x"}, []string{"tlsCABundle"}},
		{"driver setting in extraEnv", driverChart, map[string]any{"driver": map[string]any{"extraEnv": []any{map[string]any{"name": "DD_LOG_LEVEL", "value": "debug"}}}}, []string{"extraEnv", "DD_LOG_LEVEL", "values"}},
		{"NODE_ID in extraEnv via umbrella", umbrellaChart, map[string]any{"datadog-csi-driver": map[string]any{"driver": map[string]any{"extraEnv": []any{map[string]any{"name": "NODE_ID", "value": "n"}}}}}, []string{"extraEnv", "NODE_ID"}},
		// nil is `--set key=null`, or `key:` left empty in a values file: Helm deletes the key.
		{"null webhook repository", webhookChart, map[string]any{"image": map[string]any{"repository": nil}}, []string{"image", "repository"}},
		{"empty webhook repository", webhookChart, map[string]any{"image": map[string]any{"repository": ""}}, []string{"image", "repository"}},
		{"null webhook repository via umbrella", umbrellaChart, map[string]any{"datadog-csi-webhook": map[string]any{"image": map[string]any{"repository": nil}}}, []string{"image", "repository"}},
		{"null registrar tag", driverChart, map[string]any{"registrar": map[string]any{"image": map[string]any{"tag": nil}}}, []string{"registrar", "tag"}},
		{"null registrar tag via umbrella", umbrellaChart, map[string]any{"datadog-csi-driver": map[string]any{"registrar": map[string]any{"image": map[string]any{"tag": nil}}}}, []string{"registrar", "tag"}},
		{"null global socket", umbrellaChart, map[string]any{"global": map[string]any{"apmHostSocketPath": nil}}, []string{"global", "apmHostSocketPath"}},
		{"empty global socket", umbrellaChart, map[string]any{"global": map[string]any{"dsdHostSocketPath": ""}}, []string{"global", "dsdHostSocketPath"}},
		{"driver socket other than the umbrella's global", umbrellaChart, map[string]any{"datadog-csi-driver": map[string]any{"sockets": map[string]any{"apmHostSocketPath": "/run/dd/apm.socket"}}},
			[]string{"sockets.apmHostSocketPath", "global.apmHostSocketPath", "/run/dd/apm.socket"}},
		{"webhook socket other than the umbrella's global", umbrellaChart, map[string]any{"global": map[string]any{"dsdHostSocketPath": "/run/a/dsd.socket"}, "datadog-csi-webhook": map[string]any{"dsdSocketPath": "/run/b/dsd.socket"}},
			[]string{"dsdSocketPath", "global.dsdHostSocketPath", "/run/a/dsd.socket", "/run/b/dsd.socket"}},
		{"driver socket other than its global", driverChart, map[string]any{"global": map[string]any{"dsdHostSocketPath": "/run/a/dsd.socket"}, "sockets": map[string]any{"dsdHostSocketPath": "/run/b/dsd.socket"}},
			[]string{"sockets.dsdHostSocketPath", "global.dsdHostSocketPath"}},
		{"webhook socket other than its global", webhookChart, map[string]any{"global": map[string]any{"apmHostSocketPath": "/run/a/apm.socket"}, "apmSocketPath": "/run/b/apm.socket"},
			[]string{"apmSocketPath", "global.apmHostSocketPath"}},
	} {
		for _, skip := range []bool{false, true} {
			t.Run(tc.name+map[bool]string{false: "/schema", true: "/templates"}[skip], func(t *testing.T) {
				msg := renderError(t, tc.chart, tc.vals, renderOptions{skipSchemaValidation: skip})
				for _, want := range tc.want {
					if !strings.Contains(msg, want) {
						t.Errorf("error does not name %q:\n%s", want, msg)
					}
				}
			})
		}
	}
	// A key Datadog's chart does not have is a typo: the schema rejects it.
	msg := renderError(t, driverChart, map[string]any{"tolerationz": []any{}}, renderOptions{})
	if !strings.Contains(msg, "tolerationz") {
		t.Errorf("unknown key not named: %s", msg)
	}
}
