package mutate

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"

	"github.com/datadog-csi/datadog-csi/pkg/datadog"
	"github.com/datadog-csi/datadog-csi/webhook/pkg/mutate/jsonscan/jsonscantest"
)

// checkSamePatch fails unless PatchFields gives, byte for byte, the patch
// and outcome of the reference derivation through MutatePod.
func checkSamePatch(t *testing.T, m *Mutator, raw []byte, namespace string) {
	t.Helper()
	fields, err := DecodePodFields(raw)
	if err != nil {
		t.Fatal(err)
	}
	got, gotOut, err := m.PatchFields(fields, namespace)
	if err != nil {
		t.Fatal(err)
	}
	want, wantOut, err := m.referencePatch(fields, namespace)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("pod %s\npatch\n%s\nwant (through MutatePod)\n%s", raw, got, want)
	}
	if !reflect.DeepEqual(gotOut, wantOut) {
		t.Fatalf("pod %s\noutcome %+v\nwant (MutatePod) %+v", raw, gotOut, wantOut)
	}
}

func TestPatchFieldsMatchesMutatePodOnGoldenCases(t *testing.T) {
	for _, c := range loadCases(t) {
		t.Run(c.name, func(t *testing.T) { checkSamePatch(t, c.mutator, c.podJSON, c.settings.Namespace) })
	}
}

// FuzzPatchFields compares PatchFields with the patch derived from
// MutatePod's result over random pods, in every mode, including sockets
// of the same file name in two host directories (whose socket-file mounts
// then share a path, so the second is never mounted).
func FuzzPatchFields(f *testing.F) {
	for _, s := range []uint64{0, 1, 2, 3, 42, 1 << 40} {
		f.Add(s, uint8(0), false, false, false, false)
		f.Add(s, uint8(3), true, true, false, true)
	}
	f.Fuzz(func(t *testing.T, seed uint64, modeIndex uint8, socketVolumes, unlabelled, csiInstalled, sameFileName bool) {
		mode := datadog.Modes[int(modeIndex)%len(datadog.Modes)]
		state := StaticClusterState{CSIDriver: csiInstalled, Namespaces: map[string]map[string]string{"apps": {"pod-security.kubernetes.io/enforce": "baseline"}, "open": {}}}
		apm, dsd := datadog.DefaultAPMSocketPath, datadog.DefaultDSDSocketPath
		if sameFileName {
			apm, dsd = "/var/run/datadog/apm/agent.socket", "/var/run/datadog/dsd/agent.socket"
		}
		m, err := New(Config{Mode: mode, TypeSocketVolumes: socketVolumes, MutateUnlabelled: unlabelled,
			APMSocketPath: apm, DSDSocketPath: dsd,
			AgentServiceName: "datadog-agent", AgentServiceNamespace: "datadog", ClusterDomain: "cluster.local"}, state)
		if err != nil {
			t.Fatal(err)
		}
		raw, err := json.Marshal(randomPod(seed))
		if err != nil {
			t.Fatal(err)
		}
		for _, ns := range []string{"apps", "open", "unknown"} {
			checkSamePatch(t, m, raw, ns)
		}
	})
}

// FuzzDecodePodFields compares DecodePodFields with encoding/json: the
// same PodFields, and an error for every document encoding/json rejects.
// Documents with a key that matches one of PodFields' only when case is
// folded (or that might: \u escapes, the Kelvin sign and the long s, which
// encoding/json folds to k and s) are compared for errors on invalid JSON
// alone, since encoding/json matches keys case-insensitively and the API
// machinery does not.
func FuzzDecodePodFields(f *testing.F) {
	for _, s := range []uint64{0, 1, 2, 3, 42} {
		raw, _ := json.Marshal(randomPod(s))
		f.Add(raw)
	}
	for _, s := range []string{
		`{}`, `null`, `{"metadata":null,"spec":{"containers":null}}`, `{"spec":{"containers":[]}}`,
		`{"spec":{"containers":"not-a-list"}}`, `{"metadata":{"labels":{"a":"\u00e9\n"},"annotations":{}}}`,
		`{"metadata":{"na\u006de":"x","namespace":"n\"s"}} `, `{"spec":{"volumes":[{"name":"v","emptyDir":{}},null]}}`,
		`{"spec":{"containers":[{"name":"c","env":[{"name":"A","value":"1e-3"}],"ports":[{"containerPort":-0.5E+2}]}]}}`,
		`{"a":[1,2,{"b":[true,false,null]}]}`, `{"a":01}`, `{"a":1.}`, `{"a":"\x"}`, `{"a":tru}`, `{"metadata":{"labels":{"a":1}}}`,
		`{"a":"x"`, `[]`, `{"a":1}x`, "{\"a\":\"\xff\"}", `{"Metadata":{"Labels":{"a":"b"}}}`,
	} {
		f.Add([]byte(s))
	}
	keys := []string{`"metadata"`, `"namespace"`, `"labels"`, `"annotations"`, `"spec"`, `"containers"`,
		`"initContainers"`, `"volumes"`, `"name"`, `"env"`, `"volumeMounts"`, `"mountPath"`}
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := DecodePodFields(data)
		if !jsonscantest.Comparable(t, data, err, keys) {
			return
		}
		var want PodFields
		wantErr := json.Unmarshal(data, &want)
		if (err != nil) != (wantErr != nil) {
			t.Fatalf("%q: error %v, encoding/json %v", data, err, wantErr)
		}
		if err == nil && !reflect.DeepEqual(*got, want) {
			t.Fatalf("%q:\n got %+v\nwant %+v", data, *got, want)
		}
	})
}
