package server

import (
	"context"
	"log/slog"
	"sync"

	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

// supportedCSIVersions is what the kubelet's CSI plugin handler accepts.
var supportedCSIVersions = []string{"1.0.0"}

// registrationService is the kubelet plugin registration API, served on
// <plugins_registry>/<driver>-reg.sock so the kubelet discovers the driver
// without a node-driver-registrar sidecar.
type registrationService struct {
	registerapi.UnimplementedRegistrationServer

	driverName string
	endpoint   string // the CSI socket as the kubelet sees it
	log        *slog.Logger

	mu     sync.Mutex
	failed string
}

func (r *registrationService) GetInfo(context.Context, *registerapi.InfoRequest) (*registerapi.PluginInfo, error) {
	return &registerapi.PluginInfo{
		Type:              registerapi.CSIPlugin,
		Name:              r.driverName,
		Endpoint:          r.endpoint,
		SupportedVersions: supportedCSIVersions,
	}, nil
}

func (r *registrationService) NotifyRegistrationStatus(_ context.Context, s *registerapi.RegistrationStatus) (*registerapi.RegistrationStatusResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if s.GetPluginRegistered() {
		r.failed = ""
		r.log.Info("registered with the kubelet", slog.String("endpoint", r.endpoint))
	} else {
		r.failed = s.GetError()
		if r.failed == "" {
			r.failed = "no reason given"
		}
		r.log.Error("the kubelet rejected the registration; /healthz now fails so the container restarts and retries",
			slog.String("error", r.failed), slog.String("endpoint", r.endpoint))
	}
	return &registerapi.RegistrationStatusResponse{}, nil
}

// failure is the kubelet's last rejection, or "".
func (r *registrationService) failure() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.failed
}
