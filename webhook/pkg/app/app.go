package app

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/datadog-csi/datadog-csi/webhook/pkg/certs"
	"github.com/datadog-csi/datadog-csi/webhook/pkg/cluster"
	"github.com/datadog-csi/datadog-csi/webhook/pkg/mutate"
	"github.com/datadog-csi/datadog-csi/webhook/pkg/server"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/client-go/kubernetes"
)

// App is a configured webhook process.
type App struct {
	cfg     Config
	client  kubernetes.Interface
	logger  *slog.Logger
	state   *cluster.State
	holder  *certs.Holder
	metrics *server.Metrics
	reg     *prometheus.Registry
	mutator *mutate.Mutator

	injectLn, probeLn net.Listener

	// shuttingDown fails /readyz from the moment Serve's context ends.
	shuttingDown atomic.Bool
}

// errShuttingDown is what /readyz reports during --shutdown-delay.
var errShuttingDown = errors.New("shutting down")

// New validates cfg and wires the webhook; nothing runs until Serve.
func New(cfg Config, client kubernetes.Interface, logger *slog.Logger) (*App, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if client == nil {
		return nil, errors.New("a Kubernetes client is required")
	}
	if logger == nil {
		logger = cfg.NewLogger()
	}
	a := &App{cfg: cfg, client: client, logger: logger, state: cluster.New(client), holder: &certs.Holder{}, reg: prometheus.NewRegistry()}
	a.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	a.metrics = server.NewMetrics(a.reg)
	a.holder.OnChange = func(leaf *x509.Certificate) {
		a.metrics.CertificateEnd.Set(float64(leaf.NotAfter.Unix()))
	}
	m, err := mutate.New(cfg.MutateConfig(), a.state)
	if err != nil {
		return nil, err
	}
	a.mutator = m
	return a, nil
}

// Listen binds the listeners, so a caller learns the ports (":0") before
// Serve.
func (a *App) Listen() error {
	var err error
	if a.injectLn, err = net.Listen("tcp", a.cfg.ListenAddress); err != nil {
		return fmt.Errorf("--listen-address: %w", err)
	}
	if a.cfg.ProbeAddress != "" {
		if a.probeLn, err = net.Listen("tcp", a.cfg.ProbeAddress); err != nil {
			a.injectLn.Close()
			return fmt.Errorf("--probe-address: %w", err)
		}
	}
	return nil
}

// InjectAddr is the bound HTTPS address (after Listen).
func (a *App) InjectAddr() string { return a.injectLn.Addr().String() }

// ProbeAddr is the bound probe address (after Listen), "" when off.
func (a *App) ProbeAddr() string {
	if a.probeLn == nil {
		return ""
	}
	return a.probeLn.Addr().String()
}

// ServingCertificate is the certificate served now, nil before the first.
func (a *App) ServingCertificate() *x509.Certificate { return a.holder.Leaf() }

// Ready reports whether the webhook can answer admissions as configured,
// and is not shutting down.
func (a *App) Ready() error {
	if a.shuttingDown.Load() {
		return errShuttingDown
	}
	if err := a.holder.Ready(); err != nil {
		return err
	}
	return a.state.Ready()
}

// Serve runs everything until ctx ends, then shuts the servers down: it
// first fails /readyz and keeps answering admissions for --shutdown-delay,
// so that the apiserver, which reaches the webhook through its Service, is
// no longer sent here by the time the listeners close.
func (a *App) Serve(ctx context.Context) error {
	if a.injectLn == nil {
		if err := a.Listen(); err != nil {
			return err
		}
	}
	// Caches and certificates outlive ctx until the servers are shut down:
	// admissions answered during the delay still need them.
	stop := ctx.Done()
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()

	// Caches and certificates start in the background: until both are
	// ready /readyz says so, and the apiserver's failurePolicy Ignore
	// admits pods meanwhile.
	wg.Go(func() {
		if err := a.state.Start(ctx, 2*time.Minute); err != nil && ctx.Err() == nil {
			a.logger.Error("caches not ready; mode auto falls back to what is known", "err", err)
		}
	})
	if err := a.startCertificates(ctx, &wg); err != nil {
		return err
	}

	mux := http.NewServeMux()
	handler := closeWhenShuttingDown(mux, &a.shuttingDown)
	mux.Handle(server.PathInject, &server.Inject{Mutator: a.mutator, Logger: a.logger, Metrics: a.metrics})
	server.Probe(mux, a.Ready)
	injectSrv := &http.Server{
		Handler:           handler,
		TLSConfig:         a.holder.TLSConfig(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          slog.NewLogLogger(a.logger.Handler(), slog.LevelDebug),
	}
	if a.cfg.DisableKeepAlives {
		injectSrv.SetKeepAlivesEnabled(false)
	}
	servers := []*http.Server{injectSrv}
	errc := make(chan error, 2)
	go func() { errc <- injectSrv.ServeTLS(a.injectLn, "", "") }()
	if a.probeLn != nil {
		probeMux := http.NewServeMux()
		server.Probe(probeMux, a.Ready)
		probeMux.Handle(server.PathMetrics, promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{}))
		probeSrv := &http.Server{Handler: probeMux, ReadHeaderTimeout: 10 * time.Second}
		servers = append(servers, probeSrv)
		go func() { errc <- probeSrv.Serve(a.probeLn) }()
	}
	a.logger.Info("serving", "inject", a.InjectAddr(), "probe", a.ProbeAddr(), "mode", a.cfg.Mode, "tlsMode", a.cfg.TLSMode)

	var serveErr error
	select {
	case <-stop:
		serveErr = a.shutdownDelay(errc)
	case serveErr = <-errc:
	}
	shutdownCtx, done := context.WithTimeout(context.Background(), 5*time.Second)
	defer done()
	for _, s := range servers {
		_ = s.Shutdown(shutdownCtx)
	}
	if errors.Is(serveErr, http.ErrServerClosed) {
		serveErr = nil
	}
	return serveErr
}

// shutdownDelay fails /readyz and keeps serving for --shutdown-delay, or
// until a server fails, whose error it returns.
func (a *App) shutdownDelay(errc <-chan error) error {
	a.shuttingDown.Store(true)
	delay := a.cfg.ShutdownDelay
	if delay <= 0 {
		a.logger.Info("shutting down")
		return nil
	}
	a.logger.Info(fmt.Sprintf("shutting down: still serving for %v while endpoints drop this pod", delay))
	t := time.NewTimer(delay)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case err := <-errc:
		return err
	}
}

// closeWhenShuttingDown answers with Connection: close once shutdown began
// (HTTP/2: a GOAWAY after the answer), so the apiserver's next admission
// opens a new connection, which the Service sends to a pod that stays.
// Server.SetKeepAlivesEnabled(false) would instead close idle connections
// at once, and a request the apiserver writes on one at that moment fails
// with EOF: the apiserver calls webhooks over HTTP/1.1 and does not retry a
// POST, so failurePolicy Ignore would admit that pod unmutated.
func closeWhenShuttingDown(h http.Handler, shuttingDown *atomic.Bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if shuttingDown.Load() {
			w.Header().Set("Connection", "close")
		}
		h.ServeHTTP(w, r)
	})
}

func (a *App) startCertificates(ctx context.Context, wg *sync.WaitGroup) error {
	switch a.cfg.TLSMode {
	case TLSSelfManaged:
		sm := &certs.SelfManaged{
			Client:            a.client,
			Namespace:         a.cfg.Namespace,
			SecretName:        a.cfg.TLSSecretName,
			WebhookConfigName: a.cfg.WebhookConfigName,
			DNSNames:          a.dnsNames(),
			IPs:               a.cfg.ExtraIPs,
			CAValidity:        a.cfg.CAValidity,
			CertValidity:      a.cfg.CertValidity,
			Interval:          a.cfg.CertCheckInterval,
			TrustPropagation:  a.cfg.CATrustPropagation,
			Holder:            a.holder,
			Logger:            a.logger,
		}
		wg.Go(func() {
			// The first reconcile retries quickly: the webhook is useless
			// until it has a certificate.
			for backoff := time.Second; ctx.Err() == nil; backoff = min(2*backoff, 30*time.Second) {
				err := sm.Reconcile(ctx)
				if err == nil {
					break
				}
				a.logger.Error("self-managed certificate not ready; retrying", "err", err, "in", backoff)
				select {
				case <-ctx.Done():
					return
				case <-time.After(backoff):
				}
			}
			sm.Run(ctx)
		})
	default:
		fs := &certs.FileSource{Dir: a.cfg.TLSCertDir, Holder: a.holder, Interval: a.cfg.CertCheckInterval, Logger: a.logger}
		if err := fs.Load(); err != nil {
			// Not fatal: cert-manager may not have issued it yet; the
			// reload loop picks it up and /readyz reports the wait.
			a.logger.Warn("serving certificate not loaded yet", "err", err)
		}
		wg.Go(func() { fs.Run(ctx) })
	}
	return nil
}

func (a *App) dnsNames() []string {
	svc, ns := a.cfg.ServiceName, a.cfg.Namespace
	return []string{
		svc + "." + ns + ".svc",
		svc + "." + ns + ".svc." + a.cfg.ClusterDomain,
		svc + "." + ns,
		svc,
	}
}
