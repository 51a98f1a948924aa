package cluster

import (
	"context"
	"testing"
	"time"

	"github.com/datadog-csi/datadog-csi/pkg/datadog"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func TestStateFollowsTheCluster(t *testing.T) {
	client := fake.NewClientset(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "apps",
		Labels: map[string]string{"pod-security.kubernetes.io/enforce": "baseline"}}})
	s := New(client)
	if s.Ready() == nil {
		t.Fatal("ready before start")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := s.Start(ctx, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := s.Ready(); err != nil {
		t.Fatal(err)
	}
	if labels, known := s.NamespaceLabels("apps"); !known || labels["pod-security.kubernetes.io/enforce"] != "baseline" {
		t.Fatalf("apps: %v %v", labels, known)
	}
	if _, known := s.NamespaceLabels("missing"); known {
		t.Fatal("unknown namespace reported known")
	}
	if s.CSIDriverInstalled() {
		t.Fatal("driver reported before it exists")
	}
	if _, err := client.StorageV1().CSIDrivers().Create(ctx, &storagev1.CSIDriver{ObjectMeta: metav1.ObjectMeta{Name: datadog.DriverName}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !s.CSIDriverInstalled() {
		if time.Now().After(deadline) {
			t.Fatal("CSIDriver creation not seen by the cache")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestCacheKeepsOnlyWhatItReads: managedFields and annotations, most of a
// namespace's size in a large cluster, are not cached; labels are.
func TestCacheKeepsOnlyWhatItReads(t *testing.T) {
	client := fake.NewClientset(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "apps",
		Labels:        map[string]string{"pod-security.kubernetes.io/enforce": "restricted"},
		Annotations:   map[string]string{"kubectl.kubernetes.io/last-applied-configuration": `{"big":"json"}`},
		ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl", Operation: metav1.ManagedFieldsOperationApply}},
	}})
	s := New(client)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := s.Start(ctx, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	ns, err := s.namespaces.Get("apps")
	if err != nil {
		t.Fatal(err)
	}
	if len(ns.ManagedFields) != 0 || len(ns.Annotations) != 0 {
		t.Fatalf("cached namespace keeps managedFields %v, annotations %v", ns.ManagedFields, ns.Annotations)
	}
	if labels, _ := s.NamespaceLabels("apps"); labels["pod-security.kubernetes.io/enforce"] != "restricted" {
		t.Fatalf("labels lost: %v", labels)
	}
}
