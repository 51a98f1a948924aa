// Package cluster answers mode "auto"'s questions (is the CSIDriver object
// installed? what Pod Security level does a namespace enforce?) from
// informer caches, so an admission never waits on an API call.
package cluster

import (
	"context"
	"errors"
	"time"

	"github.com/datadog-csi/datadog-csi/pkg/datadog"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	storagelisters "k8s.io/client-go/listers/storage/v1"
	"k8s.io/client-go/tools/cache"
)

// State is a mutate.ClusterState backed by namespace and CSIDriver informers.
type State struct {
	factory    informers.SharedInformerFactory
	namespaces corelisters.NamespaceLister
	csiDrivers storagelisters.CSIDriverLister
	synced     []cache.InformerSynced
}

// New prepares the informers; Start runs them.
func New(client kubernetes.Interface) *State {
	// No resync: the watch keeps the caches current, and nothing here
	// needs periodic reprocessing.
	f := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithTransform(stripUnused))
	ns := f.Core().V1().Namespaces()
	drivers := f.Storage().V1().CSIDrivers()
	return &State{
		factory:    f,
		namespaces: ns.Lister(),
		csiDrivers: drivers.Lister(),
		synced:     []cache.InformerSynced{ns.Informer().HasSynced, drivers.Informer().HasSynced},
	}
}

// stripUnused drops what the cache never reads and what makes most of a
// namespace's size: its managedFields history and annotations (such as
// kubectl's last-applied configuration). Labels, name and deletion time
// stay. Measured: about 3–4 KiB of webhook RSS per namespace with them.
func stripUnused(obj any) (any, error) {
	if m, err := meta.Accessor(obj); err == nil {
		m.SetManagedFields(nil)
		m.SetAnnotations(nil)
	}
	return obj, nil
}

// Start runs the informers until ctx ends and waits up to timeout for the
// first sync.
func (s *State) Start(ctx context.Context, timeout time.Duration) error {
	s.factory.Start(ctx.Done())
	waitCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if !cache.WaitForCacheSync(waitCtx.Done(), s.synced...) {
		return errors.New("namespace and CSIDriver caches did not sync (RBAC: get/list/watch namespaces and storage.k8s.io csidrivers)")
	}
	return nil
}

// Ready reports whether the caches have synced.
func (s *State) Ready() error {
	for _, synced := range s.synced {
		if !synced() {
			return errors.New("namespace and CSIDriver caches not synced yet")
		}
	}
	return nil
}

// CSIDriverInstalled implements mutate.ClusterState.
func (s *State) CSIDriverInstalled() bool {
	d, err := s.csiDrivers.Get(datadog.DriverName)
	return err == nil && d != nil && d.DeletionTimestamp == nil
}

// NamespaceLabels implements mutate.ClusterState.
func (s *State) NamespaceLabels(name string) (map[string]string, bool) {
	ns, err := s.namespaces.Get(name)
	if err != nil {
		return nil, false
	}
	return ns.Labels, true
}
