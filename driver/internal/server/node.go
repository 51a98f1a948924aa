// Package server is the driver's gRPC edge: the CSI Identity and Node
// services, the kubelet plugin registration service, /healthz, /metrics,
// and the process lifecycle that ties them together. Errors from the
// volume and mounter packages become gRPC status codes here and only here.
package server

import (
	"context"
	"errors"
	"hash/maphash"
	"log/slog"
	"sync"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/datadog-csi/datadog-csi/driver/internal/mounter"
	"github.com/datadog-csi/datadog-csi/driver/internal/volume"
	"github.com/datadog-csi/datadog-csi/pkg/datadog"
)

// Version is reported by GetPluginInfo; set with -ldflags -X.
var Version = "dev"

// Type labels for requests that never got as far as a volume type.
const (
	typeLabelUnparsed = "unparsed" // argument validation failed first
	typeLabelInvalid  = "invalid"  // the attributes named no valid type
)

// nodeService implements csi.IdentityServer and csi.NodeServer.
type nodeService struct {
	csi.UnimplementedIdentityServer
	csi.UnimplementedNodeServer

	driverName string
	nodeID     string
	allow      volume.AllowList
	mounter    *mounter.Mounter
	log        *slog.Logger
	metrics    *metrics
	locks      targetLocks
}

// targetLocks serialises operations on one target path (the kubelet may
// retry a publish while an unpublish of the same target runs) without one
// global lock. Distinct targets may share a stripe; that only costs waiting.
type targetLocks struct {
	seed    maphash.Seed
	stripes [64]sync.Mutex
}

func (l *targetLocks) lock(target string) func() {
	m := &l.stripes[maphash.String(l.seed, target)%uint64(len(l.stripes))]
	m.Lock()
	return m.Unlock
}

func (s *nodeService) GetPluginInfo(context.Context, *csi.GetPluginInfoRequest) (*csi.GetPluginInfoResponse, error) {
	return &csi.GetPluginInfoResponse{Name: s.driverName, VendorVersion: Version}, nil
}

func (s *nodeService) GetPluginCapabilities(context.Context, *csi.GetPluginCapabilitiesRequest) (*csi.GetPluginCapabilitiesResponse, error) {
	// A node-only plugin: no controller service, no topology.
	return &csi.GetPluginCapabilitiesResponse{}, nil
}

// Probe reports ready as soon as the service answers: a missing agent
// socket is a per-volume condition (the agent may start later), not a
// reason to restart the driver.
func (s *nodeService) Probe(context.Context, *csi.ProbeRequest) (*csi.ProbeResponse, error) {
	return &csi.ProbeResponse{}, nil
}

func (s *nodeService) NodeGetCapabilities(context.Context, *csi.NodeGetCapabilitiesRequest) (*csi.NodeGetCapabilitiesResponse, error) {
	return &csi.NodeGetCapabilitiesResponse{}, nil
}

func (s *nodeService) NodeGetInfo(context.Context, *csi.NodeGetInfoRequest) (*csi.NodeGetInfoResponse, error) {
	return &csi.NodeGetInfoResponse{NodeId: s.nodeID}, nil
}

func (s *nodeService) NodePublishVolume(ctx context.Context, req *csi.NodePublishVolumeRequest) (*csi.NodePublishVolumeResponse, error) {
	start := time.Now()
	typeLabel, spec, err := s.publish(req)
	duration := time.Since(start)
	code := status.Code(err)
	s.metrics.observe("publish", typeLabel, code, duration)

	attrs := []slog.Attr{
		slog.String("rpc", "NodePublishVolume"),
		slog.String("volume_id", req.GetVolumeId()),
		slog.String("pod_namespace", req.GetVolumeContext()[datadog.AttrPodNamespace]),
		slog.String("pod_name", req.GetVolumeContext()[datadog.AttrPodName]),
		slog.String("type", typeLabel),
		slog.String("target", req.GetTargetPath()),
		slog.String("code", code.String()),
		slog.Duration("duration", duration),
	}
	if spec.Source != "" {
		attrs = append(attrs, slog.String("source", spec.Source))
	}
	if err != nil {
		attrs = append(attrs, slog.String("error", status.Convert(err).Message()))
		s.log.LogAttrs(ctx, slog.LevelWarn, "publish failed", attrs...)
		return nil, err
	}
	if spec.Deprecated {
		s.log.LogAttrs(ctx, slog.LevelWarn, "deprecated volume type: use "+string(datadog.DSDSocketDirectory)+" (same mount) instead", attrs...)
	}
	s.log.LogAttrs(ctx, slog.LevelInfo, "published", attrs...)
	return &csi.NodePublishVolumeResponse{}, nil
}

// publish validates the request in the order csi-sanity expects (arguments
// first, then volume attributes) and mounts. The returned label is bounded.
func (s *nodeService) publish(req *csi.NodePublishVolumeRequest) (string, volume.Spec, error) {
	if err := validatePublishArguments(req); err != nil {
		return typeLabelUnparsed, volume.Spec{}, err
	}
	ctx := req.GetVolumeContext()
	if eph, ok := ctx[datadog.AttrEphemeral]; ok && eph != "true" {
		return typeLabelUnparsed, volume.Spec{}, status.Errorf(codes.InvalidArgument,
			"%s is %q: %s serves only CSI ephemeral inline volumes (pod.spec.volumes[].csi)", datadog.AttrEphemeral, eph, s.driverName)
	}
	spec, err := s.allow.Resolve(ctx)
	if err != nil {
		return typeLabelInvalid, volume.Spec{}, status.Error(codes.InvalidArgument, err.Error())
	}
	unlock := s.locks.lock(req.GetTargetPath())
	defer unlock()
	if err := s.mounter.Publish(spec.Source, spec.Directory, req.GetTargetPath()); err != nil {
		return spec.Label, spec, publishStatus(spec, err)
	}
	return spec.Label, spec, nil
}

func validatePublishArguments(req *csi.NodePublishVolumeRequest) error {
	if req.GetVolumeId() == "" {
		return status.Error(codes.InvalidArgument, "volume_id is required")
	}
	if req.GetTargetPath() == "" {
		return status.Error(codes.InvalidArgument, "target_path is required")
	}
	capability := req.GetVolumeCapability()
	if capability == nil {
		return status.Error(codes.InvalidArgument, "volume_capability is required")
	}
	if capability.GetBlock() != nil {
		return status.Error(codes.InvalidArgument, "block access is not supported: the volume is a socket file or directory (use access type mount)")
	}
	if capability.GetMount() == nil {
		return status.Error(codes.InvalidArgument, "volume_capability needs access type mount")
	}
	if mode := capability.GetAccessMode().GetMode(); mode == csi.VolumeCapability_AccessMode_UNKNOWN {
		return status.Error(codes.InvalidArgument, "volume_capability.access_mode is required")
	}
	if err := volume.CheckAbsoluteClean(req.GetTargetPath()); err != nil {
		return status.Errorf(codes.InvalidArgument, "target_path: %v", err)
	}
	return nil
}

func publishStatus(spec volume.Spec, err error) error {
	switch {
	case errors.Is(err, mounter.ErrSourceNotFound):
		what := "socket"
		if spec.Directory {
			what = "socket directory"
		}
		return status.Errorf(codes.Unavailable, "the %s agent %s %s does not exist (yet): is the Datadog Agent running on this node with that socket enabled? The kubelet retries. (%v)",
			spec.Socket, what, spec.Source, err)
	case errors.Is(err, mounter.ErrSourceWrongKind), errors.Is(err, mounter.ErrSourceSymlink):
		return status.Errorf(codes.FailedPrecondition, "the configured %s agent path cannot be mounted: %v", spec.Socket, err)
	case errors.Is(err, mounter.ErrTargetOccupied):
		return status.Errorf(codes.AlreadyExists, "%v: unpublish it first", err)
	case errors.Is(err, mounter.ErrTargetInvalid):
		return status.Error(codes.FailedPrecondition, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

func (s *nodeService) NodeUnpublishVolume(ctx context.Context, req *csi.NodeUnpublishVolumeRequest) (*csi.NodeUnpublishVolumeResponse, error) {
	start := time.Now()
	err := s.unpublish(req)
	duration := time.Since(start)
	code := status.Code(err)
	s.metrics.observe("unpublish", "", code, duration)
	attrs := []slog.Attr{
		slog.String("rpc", "NodeUnpublishVolume"),
		slog.String("volume_id", req.GetVolumeId()),
		slog.String("target", req.GetTargetPath()),
		slog.String("code", code.String()),
		slog.Duration("duration", duration),
	}
	if err != nil {
		attrs = append(attrs, slog.String("error", status.Convert(err).Message()))
		s.log.LogAttrs(ctx, slog.LevelWarn, "unpublish failed", attrs...)
		return nil, err
	}
	s.log.LogAttrs(ctx, slog.LevelInfo, "unpublished", attrs...)
	return &csi.NodeUnpublishVolumeResponse{}, nil
}

func (s *nodeService) unpublish(req *csi.NodeUnpublishVolumeRequest) error {
	if req.GetVolumeId() == "" {
		return status.Error(codes.InvalidArgument, "volume_id is required")
	}
	if req.GetTargetPath() == "" {
		return status.Error(codes.InvalidArgument, "target_path is required")
	}
	if err := volume.CheckAbsoluteClean(req.GetTargetPath()); err != nil {
		return status.Errorf(codes.InvalidArgument, "target_path: %v", err)
	}
	unlock := s.locks.lock(req.GetTargetPath())
	defer unlock()
	if err := s.mounter.Unpublish(req.GetTargetPath()); err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	return nil
}
