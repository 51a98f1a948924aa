package server

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"

	"github.com/datadog-csi/datadog-csi/driver/internal/config"
	"github.com/datadog-csi/datadog-csi/driver/internal/mounter"
	"github.com/datadog-csi/datadog-csi/driver/internal/volume"
	"github.com/datadog-csi/datadog-csi/pkg/datadog"
)

// shutdownTimeout bounds how long in-flight RPCs may finish after a stop.
const shutdownTimeout = 10 * time.Second

// Driver is one driver process's set of servers.
type Driver struct {
	cfg          config.Config
	log          *slog.Logger
	node         *nodeService
	registration *registrationService
}

// New builds a Driver from a validated configuration. sys is the mount
// seam; pass mounter.RealSyscalls outside tests.
func New(cfg config.Config, log *slog.Logger, sys mounter.Syscalls) (*Driver, error) {
	allow, err := volume.NewAllowList(cfg.APMSocketPath, cfg.DSDSocketPath)
	if err != nil {
		return nil, err
	}
	if allow, err = allow.ResolveSymlinks(); err != nil {
		return nil, err
	}
	for _, s := range []datadog.Socket{datadog.SocketAPM, datadog.SocketDSD} {
		if allow.Resolved(s) != allow.SocketPath(s) {
			log.Info("configured socket path goes through a symbolic link; mounting the resolved path, and refusing any link that appears later",
				slog.String("socket", s.String()), slog.String("configured", allow.SocketPath(s)), slog.String("resolved", allow.Resolved(s)))
		}
	}
	d := &Driver{cfg: cfg, log: log}
	d.node = &nodeService{
		driverName: cfg.DriverName,
		nodeID:     cfg.NodeID,
		allow:      allow,
		mounter:    mounter.New(sys),
		log:        log,
		metrics:    newMetrics(cfg.DriverName),
	}
	d.node.locks.seed = maphash.MakeSeed()
	if cfg.RegisterWithKubelet {
		d.registration = &registrationService{driverName: cfg.DriverName, endpoint: cfg.KubeletRegistrationPath, log: log}
	}
	return d, nil
}

// Run serves until ctx is done or a server fails. ready, if not nil, is
// called once every listener is open. Sockets it created are removed on
// return.
func (d *Driver) Run(ctx context.Context, ready func()) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	var (
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	fail := func(err error) {
		errOnce.Do(func() { firstErr = err })
		cancel()
	}
	serve := func(name string, fn func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := fn(); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, grpc.ErrServerStopped) {
				fail(fmt.Errorf("%s: %w", name, err))
			}
		}()
	}
	var stops []func()
	defer func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
		wg.Wait()
	}()

	csiListener, err := listenUnix(d.cfg.CSISocketPath)
	if err != nil {
		return fmt.Errorf("--csi-endpoint: %w", err)
	}
	csiServer := grpc.NewServer(grpc.UnaryInterceptor(d.logOtherRPCs))
	csi.RegisterIdentityServer(csiServer, d.node)
	csi.RegisterNodeServer(csiServer, d.node)
	serve("CSI gRPC server", func() error { return csiServer.Serve(csiListener) })
	stops = append(stops, func() {
		gracefulStop(csiServer)
		removeSocket(d.log, d.cfg.CSISocketPath)
	})

	if d.cfg.HealthAddress != "" {
		srv, err := d.healthServer()
		if err != nil {
			return err
		}
		stops = append(stops, srv.stop)
		serve("health server", srv.serve)
	}
	if d.cfg.MetricsAddress != "" {
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", promhttp.HandlerFor(d.node.metrics.registry, promhttp.HandlerOpts{}))
		srv, err := listenHTTP("--metrics-address", d.cfg.MetricsAddress, mux)
		if err != nil {
			return err
		}
		stops = append(stops, srv.stop)
		serve("metrics server", srv.serve)
	}
	if d.registration != nil {
		path := d.cfg.RegistrationSocketPath()
		regListener, err := listenUnix(path)
		if err != nil {
			return fmt.Errorf("--kubelet-registration-dir: %w", err)
		}
		regServer := grpc.NewServer()
		registerapi.RegisterRegistrationServer(regServer, d.registration)
		serve("kubelet registration server", func() error { return regServer.Serve(regListener) })
		stops = append(stops, func() {
			gracefulStop(regServer)
			removeSocket(d.log, path)
		})
	}

	d.log.Info("driver started",
		slog.String("driver_name", d.cfg.DriverName), slog.String("version", Version),
		slog.String("node_id", d.cfg.NodeID), slog.String("csi_endpoint", d.cfg.CSIEndpoint),
		slog.String("apm_socket", d.cfg.APMSocketPath), slog.String("dsd_socket", d.cfg.DSDSocketPath),
		slog.String("health_address", d.cfg.HealthAddress), slog.String("metrics_address", d.cfg.MetricsAddress),
		slog.Bool("register_with_kubelet", d.cfg.RegisterWithKubelet))
	if ready != nil {
		ready()
	}
	<-ctx.Done()
	d.log.Info("driver stopping")
	return firstErr
}

// logOtherRPCs logs, at debug level, the RPCs that do not log themselves
// (identity, capabilities, node info): publish and unpublish write their own
// line with the volume's details.
func (d *Driver) logOtherRPCs(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	switch info.FullMethod {
	case csi.Node_NodePublishVolume_FullMethodName, csi.Node_NodeUnpublishVolume_FullMethodName:
		return handler(ctx, req)
	}
	start := time.Now()
	resp, err := handler(ctx, req)
	d.log.LogAttrs(ctx, slog.LevelDebug, "rpc", slog.String("rpc", info.FullMethod),
		slog.String("code", status.Code(err).String()), slog.Duration("duration", time.Since(start)))
	return resp, err
}

func gracefulStop(s *grpc.Server) {
	done := make(chan struct{})
	go func() { s.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(shutdownTimeout):
		s.Stop()
	}
}

// listenUnix listens on a unix socket at path, first removing a stale
// socket file a previous process left. It refuses to remove anything that
// is not a socket, and a socket some live process still serves.
func listenUnix(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("create directory for socket %s: %w", path, err)
	}
	info, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("stat %s: %w", path, err)
	case info.Mode().Type() != fs.ModeSocket:
		return nil, fmt.Errorf("%s exists and is not a socket (%s); refusing to remove it", path, info.Mode().Type())
	default:
		if conn, err := net.DialTimeout("unix", path, time.Second); err == nil {
			conn.Close()
			return nil, fmt.Errorf("%s is served by another running process", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale socket %s: %w", path, err)
		}
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	return l, nil
}

func removeSocket(log *slog.Logger, path string) {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		log.Warn("could not remove socket", slog.String("path", path), slog.String("error", err.Error()))
	}
}

type httpServer struct {
	server   *http.Server
	listener net.Listener
}

func listenHTTP(flagName, addr string, handler http.Handler) (*httpServer, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", flagName, err)
	}
	return &httpServer{
		server:   &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second},
		listener: l,
	}, nil
}

func (s *httpServer) serve() error { return s.server.Serve(s.listener) }

func (s *httpServer) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	s.server.Shutdown(ctx)
}

// healthServer answers GET /healthz: it connects to the CSI socket (what
// the kubelet uses must accept connections) and runs the CSI Probe.
func (d *Driver) healthServer() (*httpServer, error) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
		defer cancel()
		conn, err := (&net.Dialer{}).DialContext(ctx, "unix", d.cfg.CSISocketPath)
		if err != nil {
			http.Error(w, "CSI socket: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		conn.Close()
		resp, err := d.node.Probe(ctx, &csi.ProbeRequest{})
		switch {
		case err != nil:
			http.Error(w, "CSI Probe failed: "+status.Convert(err).Message(), http.StatusServiceUnavailable)
		case resp.GetReady() != nil && !resp.GetReady().GetValue():
			http.Error(w, "CSI Probe: not ready", http.StatusServiceUnavailable)
		case d.registration != nil && d.registration.failure() != "":
			http.Error(w, "kubelet rejected the plugin registration: "+d.registration.failure(), http.StatusServiceUnavailable)
		default:
			w.Write([]byte("ok\n"))
		}
	})
	return listenHTTP("--health-address", d.cfg.HealthAddress, mux)
}
