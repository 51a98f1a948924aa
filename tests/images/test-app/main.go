// Command test-app is the application of the end-to-end tests: every second it
// sends a DogStatsD metric to DD_DOGSTATSD_URL and a trace request to
// DD_TRACE_AGENT_URL (unix:// URLs, as the webhook injects them), tagged with
// its pod's name, and logs every failure. It also serves HTTP on :8080, so it
// stands in for nginx on a cluster that cannot pull images.
//
// A URL may name the socket file or, for a directory volume, the directory
// holding it; then the agent's default socket file name is appended.
//
// Each send dials anew, as a client must to follow an agent that recreated its
// socket: directory volumes see the new socket, socket-file volumes keep the
// old, dead inode.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/datadog-csi/datadog-csi/pkg/datadog"
)

// Names the dummy agent reads to attribute traffic (tests/images/dummy-agent).
const (
	podHeader = "X-E2E-Pod"
	podTag    = "pod"
	// Metric is the DogStatsD counter sent every interval.
	Metric = "e2e.ping"
)

func main() {
	listen := flag.String("listen", envOr("LISTEN_ADDRESS", ":8080"), "HTTP address (GET / and /status)")
	interval := flag.Duration("interval", durationEnv("SEND_INTERVAL", time.Second), "time between sends")
	flag.Parse()
	log := slog.New(slog.NewJSONHandler(os.Stdout, nil))
	pod := os.Getenv("POD_NAME")
	if pod == "" {
		pod, _ = os.Hostname()
	}
	a := &app{log: log, pod: pod, status: Status{Pod: pod}}
	var err error
	if a.dsdPath, err = socketPath(os.Getenv(datadog.EnvDogStatsDURL), datadog.DSDSocketFile); err != nil {
		log.Error("bad "+datadog.EnvDogStatsDURL, "err", err)
		os.Exit(2)
	}
	if a.apmPath, err = socketPath(os.Getenv(datadog.EnvTraceAgentURL), datadog.APMSocketFile); err != nil {
		log.Error("bad "+datadog.EnvTraceAgentURL, "err", err)
		os.Exit(2)
	}
	log.Info("starting", "pod", pod, "dsd", a.dsdPath, "apm", a.apmPath, "listen", *listen)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go a.loop(ctx, *interval)

	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(a.snapshot())
	})
	mux.HandleFunc("GET /", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, "datadog-csi test-app %s\n", pod)
	})
	srv := &http.Server{Addr: *listen, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Error("http server", "err", err)
		os.Exit(1)
	}
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func durationEnv(name string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(os.Getenv(name)); err == nil && d > 0 {
		return d
	}
	return def
}

// socketPath turns a unix:// URL into a socket path; "" (not injected, e.g.
// hostip mode) means nothing to send. A path that is a directory gets
// defaultFile appended.
func socketPath(url, defaultFile string) (string, error) {
	if url == "" {
		return "", nil
	}
	p, ok := strings.CutPrefix(url, "unix://")
	if !ok || !strings.HasPrefix(p, "/") {
		return "", fmt.Errorf("%q is not a unix:///absolute/path URL", url)
	}
	if fi, err := os.Stat(p); err == nil && fi.IsDir() {
		p = strings.TrimSuffix(p, "/") + "/" + defaultFile
	}
	return p, nil
}

// Counter is the outcome of one kind of send.
type Counter struct {
	OK        int    `json:"ok"`
	Failed    int    `json:"failed"`
	LastError string `json:"lastError,omitempty"`
}

// Status is the body of GET /status.
type Status struct {
	Pod string  `json:"pod"`
	APM Counter `json:"apm"`
	DSD Counter `json:"dsd"`
}

type app struct {
	log              *slog.Logger
	pod              string
	dsdPath, apmPath string
	mu               sync.Mutex
	status           Status
}

func (a *app) snapshot() Status {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.status
}

func (a *app) loop(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if a.dsdPath != "" {
			a.record("dsd", a.dsdPath, &a.status.DSD, a.sendDogStatsD())
		}
		if a.apmPath != "" {
			a.record("apm", a.apmPath, &a.status.APM, a.sendTrace(ctx))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// record counts a send and logs every failure, and the first success after
// start or after failures.
func (a *app) record(kind, path string, c *Counter, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err != nil {
		c.Failed++
		c.LastError = err.Error()
		a.log.Warn("send failed", "kind", kind, "socket", path, "err", err, "failures", c.Failed)
		return
	}
	if c.OK == 0 || c.LastError != "" {
		a.log.Info("send ok", "kind", kind, "socket", path, "after_failures", c.Failed)
	}
	c.OK++
	c.LastError = ""
}

func (a *app) sendDogStatsD() error {
	c, err := net.DialTimeout("unixgram", a.dsdPath, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetWriteDeadline(time.Now().Add(time.Second))
	_, err = fmt.Fprintf(c, "%s:1|c|#%s:%s", Metric, podTag, a.pod)
	return err
}

func (a *app) sendTrace(ctx context.Context) error {
	client := &http.Client{
		Timeout: 2 * time.Second,
		Transport: &http.Transport{
			DisableKeepAlives: true,
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", a.apmPath)
			},
		},
	}
	// An empty msgpack array: a valid, empty trace payload.
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, "http://agent/v0.4/traces", bytes.NewReader([]byte{0x90}))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/msgpack")
	req.Header.Set("X-Datadog-Trace-Count", "0")
	req.Header.Set(podHeader, a.pod)
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("trace agent answered %s", resp.Status)
	}
	return nil
}
