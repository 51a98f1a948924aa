// Command dummy-agent stands in for the Datadog Agent in the end-to-end tests.
// It listens where the agent listens on a node — the trace agent's stream socket
// (HTTP) and DogStatsD's datagram socket — records what each sender sent, and
// serves that record as JSON over TCP so a test can read it through the API
// server's pod proxy.
//
// A sender names itself with the DogStatsD tag `pod:<name>` and, on the trace
// socket, with the X-E2E-Pod header: the agent never sees the client's pod
// otherwise, and the tests need to tell "each pod got through".
//
// On start it removes stale socket files and creates fresh ones, as the real
// agent does on restart: that is what socket-file volumes cannot follow and
// directory volumes can, and the tests exercise it. The sockets are made
// world-writable so that non-root pods (Pod Security restricted) can connect.
// It does not remove its sockets on exit: a replacement may already have
// created new ones at the same paths.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/datadog-csi/datadog-csi/pkg/datadog"
)

// PodHeader is the trace request header naming the sending pod.
const PodHeader = "X-E2E-Pod"

// PodTag is the DogStatsD tag key naming the sending pod.
const PodTag = "pod"

func main() {
	apmPath := flag.String("apm-socket", envOr("DD_APM_RECEIVER_SOCKET", datadog.DefaultAPMSocketPath), "trace agent socket (unix stream, HTTP)")
	dsdPath := flag.String("dsd-socket", envOr("DD_DOGSTATSD_SOCKET", datadog.DefaultDSDSocketPath), "DogStatsD socket (unix datagram)")
	recordsAddr := flag.String("records-address", envOr("RECORDS_ADDRESS", ":5000"), "TCP address serving GET /records and /healthz")
	flag.Parse()
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	if err := run(log, *apmPath, *dsdPath, *recordsAddr); err != nil {
		log.Error("dummy agent failed", "err", err)
		os.Exit(1)
	}
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func run(log *slog.Logger, apmPath, dsdPath, recordsAddr string) error {
	rec := newRecorder()
	apm, err := listenFresh("unix", apmPath)
	if err != nil {
		return err
	}
	dsd, err := listenFreshPacket(dsdPath)
	if err != nil {
		return err
	}
	log.Info("listening", "apm", apmPath, "dsd", dsdPath, "records", recordsAddr, "instance", rec.Instance)

	apmServer := &http.Server{Handler: traceHandler(log, rec), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = apmServer.Serve(apm) }()
	go readDogStatsD(log, dsd, rec)

	mux := http.NewServeMux()
	mux.HandleFunc("GET /records", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(rec.snapshot())
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		// Ready only while both socket files are the ones we listen on.
		for _, p := range []string{apmPath, dsdPath} {
			if fi, err := os.Stat(p); err != nil || fi.Mode().Type() != fs.ModeSocket {
				http.Error(w, fmt.Sprintf("socket %s missing", p), http.StatusServiceUnavailable)
				return
			}
		}
		_, _ = io.WriteString(w, "ok\n")
	})
	records := &http.Server{Addr: recordsAddr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- records.ListenAndServe() }()

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	select {
	case s := <-stop:
		log.Info("stopping", "signal", s.String())
	case err := <-errc:
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = records.Shutdown(ctx)
	_ = apmServer.Shutdown(ctx)
	return nil
}

// prepare creates the socket's directory and removes a stale socket left by a
// previous instance. Anything other than a socket at that path is an error:
// removing a user's file would hide a misconfiguration.
func prepare(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return err
	case fi.Mode().Type() != fs.ModeSocket:
		return fmt.Errorf("%s exists and is not a socket (%s)", path, fi.Mode().Type())
	}
	return os.Remove(path)
}

func listenFresh(network, path string) (net.Listener, error) {
	if err := prepare(path); err != nil {
		return nil, err
	}
	l, err := net.Listen(network, path)
	if err != nil {
		return nil, err
	}
	// The file is ours now; the process exiting must not unlink it (see package doc).
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	return l, os.Chmod(path, 0o666)
}

func listenFreshPacket(path string) (*net.UnixConn, error) {
	if err := prepare(path); err != nil {
		return nil, err
	}
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return nil, err
	}
	return c, os.Chmod(path, 0o666)
}

// traceHandler accepts any trace-agent request (PUT/POST /v0.4/traces, /info,
// ...) and records it for the pod named in the request.
func traceHandler(log *slog.Logger, rec *recorder) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		pod := r.Header.Get(PodHeader)
		rec.add(pod, datadog.SocketAPM, r.Method+" "+r.URL.Path)
		log.Debug("trace request", "pod", pod, "method", r.Method, "path", r.URL.Path, "bytes", n)
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"rate_by_service":{}}`)
	}
}

func readDogStatsD(log *slog.Logger, c *net.UnixConn, rec *recorder) {
	buf := make([]byte, 65536)
	for {
		n, err := c.Read(buf)
		if err != nil {
			log.Error("dogstatsd read", "err", err)
			return
		}
		for _, line := range bytes.Split(buf[:n], []byte("\n")) {
			if len(line) == 0 {
				continue
			}
			name, pod := parseDogStatsD(string(line))
			rec.add(pod, datadog.SocketDSD, name)
		}
	}
}

// parseDogStatsD returns the metric name and the value of the pod tag of one
// line such as `e2e.ping:1|c|#pod:nginx,env:test`.
func parseDogStatsD(line string) (metric, pod string) {
	metric, _, _ = strings.Cut(line, ":")
	for _, field := range strings.Split(line, "|") {
		tags, ok := strings.CutPrefix(field, "#")
		if !ok {
			continue
		}
		for _, tag := range strings.Split(tags, ",") {
			if v, ok := strings.CutPrefix(tag, PodTag+":"); ok {
				pod = v
			}
		}
	}
	return metric, pod
}

// Sender is what one pod sent, as served by GET /records.
type Sender struct {
	APM     int       `json:"apm"`
	DSD     int       `json:"dsd"`
	LastAPM time.Time `json:"lastAPM,omitzero"`
	LastDSD time.Time `json:"lastDSD,omitzero"`
	// Seen lists the distinct trace endpoints and metric names received.
	Seen []string `json:"seen"`
}

// Records is the body of GET /records.
type Records struct {
	// Instance changes on every start: a test tells a restarted agent by it.
	Instance string             `json:"instance"`
	Started  time.Time          `json:"started"`
	Senders  map[string]*Sender `json:"senders"`
}

type recorder struct {
	mu sync.Mutex
	Records
}

func newRecorder() *recorder {
	id := make([]byte, 8)
	_, _ = rand.Read(id)
	return &recorder{Records: Records{Instance: hex.EncodeToString(id), Started: time.Now().UTC(), Senders: map[string]*Sender{}}}
}

func (r *recorder) add(pod string, s datadog.Socket, what string) {
	if pod == "" {
		pod = "(unnamed)"
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	snd := r.Senders[pod]
	if snd == nil {
		snd = &Sender{}
		r.Senders[pod] = snd
	}
	now := time.Now().UTC()
	switch s {
	case datadog.SocketAPM:
		snd.APM++
		snd.LastAPM = now
	case datadog.SocketDSD:
		snd.DSD++
		snd.LastDSD = now
	}
	key := s.String() + " " + what
	if i := sort.SearchStrings(snd.Seen, key); i == len(snd.Seen) || snd.Seen[i] != key {
		snd.Seen = append(snd.Seen[:i], append([]string{key}, snd.Seen[i:]...)...)
	}
}

func (r *recorder) snapshot() Records {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := Records{Instance: r.Instance, Started: r.Started, Senders: make(map[string]*Sender, len(r.Senders))}
	for k, v := range r.Senders {
		c := *v
		c.Seen = append([]string(nil), v.Seen...)
		out.Senders[k] = &c
	}
	return out
}
