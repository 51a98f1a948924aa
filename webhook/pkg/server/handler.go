// Package server is the webhook's HTTP edge: the AdmissionReview v1
// handler of /injectconfig, the health and readiness endpoints, and the
// Prometheus metrics. Whatever goes wrong inside, a pod is allowed: an
// internal error is logged and counted, never turned into a rejection.
package server

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime/debug"
	"slices"
	"strconv"
	"time"

	"github.com/datadog-csi/datadog-csi/webhook/pkg/mutate"
	"github.com/datadog-csi/datadog-csi/webhook/pkg/mutate/jsonscan"
	"github.com/prometheus/client_golang/prometheus"
	admissionv1 "k8s.io/api/admission/v1"
)

// Paths served.
const (
	PathInject  = "/injectconfig"
	PathHealthz = "/healthz"
	PathReadyz  = "/readyz"
	PathMetrics = "/metrics"
)

// maxBodyBytes is above the apiserver's own request limit (3 MiB), so a
// valid review is never cut.
const maxBodyBytes = 4 << 20

// Outcomes counted by datadog_csi_webhook_admissions_total.
const (
	OutcomeMutated   = "mutated"
	OutcomeUnchanged = "unchanged"
	OutcomeSkipped   = "skipped"
	OutcomeError     = "error"
)

// Metrics are the webhook's Prometheus metrics.
type Metrics struct {
	Admissions     *prometheus.CounterVec
	Duration       prometheus.Histogram
	Warnings       prometheus.Counter
	CertificateEnd prometheus.Gauge
}

// NewMetrics creates the metrics and registers them on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Admissions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "datadog_csi_webhook_admissions_total",
			Help: "Pod admissions reviewed, by resolved mode and outcome (mutated, unchanged, skipped, error).",
		}, []string{"mode", "outcome"}),
		Duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "datadog_csi_webhook_admission_duration_seconds",
			Help:    "Time to handle one AdmissionReview, from body read to response written.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .1},
		}),
		Warnings: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "datadog_csi_webhook_admission_warnings_total",
			Help: "Admission warnings returned (invalid labels).",
		}),
		CertificateEnd: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "datadog_csi_webhook_certificate_not_after_timestamp_seconds",
			Help: "Expiry of the serving certificate currently served, as a Unix time.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.Admissions, m.Duration, m.Warnings, m.CertificateEnd)
	}
	return m
}

// Inject is the /injectconfig handler.
type Inject struct {
	Mutator *mutate.Mutator
	Logger  *slog.Logger
	Metrics *Metrics
}

func (h *Inject) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	buf := getBuffer()
	defer putBuffer(buf)
	body, status, err := readReviewInto(w, r, buf)
	if err != nil {
		h.Logger.Warn("bad admission request", "err", err, "remote", r.RemoteAddr)
		http.Error(w, err.Error(), status)
		return
	}
	var req podReview
	if err := req.decode(body); err != nil || !req.present {
		// Not a review we can read; if it is an AdmissionReview at all,
		// allow it (fail open) rather than reject a pod.
		h.allowUnreadable(w, body, err, start)
		return
	}
	resp := &admissionv1.AdmissionResponse{UID: req.UID, Allowed: true}
	mode, outcome := "", OutcomeSkipped
	if req.Operation == admissionv1.Create && req.SubResource == "" && req.Kind.Group == "" && req.Kind.Kind == "Pod" && req.Object != nil {
		fields, err := mutate.DecodePodFields(req.Object)
		if err != nil {
			h.Logger.Error("pod not mutated: cannot decode it; allowing it unchanged", "err", err,
				"namespace", req.Namespace, "name", req.Name, "uid", req.UID)
			h.respond(w, buf, resp, "", OutcomeError, start)
			return
		}
		patch, out, err := h.patch(fields, req.Namespace)
		mode = string(out.Mode)
		switch {
		case err != nil:
			outcome = OutcomeError
			h.Logger.Error("pod not mutated: internal error; allowing it unchanged", "err", err,
				"namespace", req.Namespace, "name", req.Name, "uid", req.UID)
		case patch != nil:
			outcome = OutcomeMutated
			pt := admissionv1.PatchTypeJSONPatch
			resp.Patch, resp.PatchType = patch, &pt
		case out.Skipped != "":
			outcome = OutcomeSkipped
		default:
			outcome = OutcomeUnchanged
		}
		if err == nil {
			resp.Warnings = out.Warnings
			if len(out.Warnings) > 0 {
				h.Metrics.Warnings.Add(float64(len(out.Warnings)))
			}
			if h.Logger.Enabled(r.Context(), slog.LevelDebug) {
				h.Logger.Debug("admission reviewed", "namespace", req.Namespace, "name", req.Name,
					"mode", mode, "outcome", outcome, "volumes", out.InjectedVolumes)
			}
		}
	}
	h.respond(w, buf, resp, mode, outcome, start)
}

// patch mutates, turning a panic into an error. net/http would otherwise
// drop the connection, logged only at debug level, counted nowhere, and
// the pod rejected if an admin set failurePolicy Fail: a bug here must
// cost a pod its injection, never its admission, and must show.
func (h *Inject) patch(fields *mutate.PodFields, namespace string) (patch []byte, out mutate.Outcome, err error) {
	defer func() {
		if p := recover(); p != nil {
			patch, out, err = nil, mutate.Outcome{}, fmt.Errorf("panic: %v\n%s", p, debug.Stack())
		}
	}()
	return h.Mutator.PatchFields(fields, namespace)
}

// allowUnreadable answers a review whose pod could not be decoded: allowed,
// unpatched, counted as an error.
func (h *Inject) allowUnreadable(w http.ResponseWriter, body []byte, decodeErr error, start time.Time) {
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &review); err != nil || review.Request == nil {
		h.Logger.Warn("bad admission request: not an AdmissionReview", "err", err)
		http.Error(w, "decode AdmissionReview: not an AdmissionReview with a request", http.StatusBadRequest)
		return
	}
	h.Logger.Error("pod not mutated: cannot decode it; allowing it unchanged", "err", decodeErr,
		"namespace", review.Request.Namespace, "name", review.Request.Name, "uid", review.Request.UID)
	h.respond(w, nil, &admissionv1.AdmissionResponse{UID: review.Request.UID, Allowed: true}, "", OutcomeError, start)
}

// respond writes resp, encoded in buf (nil: a new buffer), which the
// caller owns again once it returns.
func (h *Inject) respond(w http.ResponseWriter, buf *bytes.Buffer, resp *admissionv1.AdmissionResponse, mode, outcome string, start time.Time) {
	var out []byte
	if buf != nil {
		// The request body in buf has been read: reuse its space.
		buf.Reset()
		out = buf.AvailableBuffer()
	}
	body := encodeResponse(out, resp)
	if buf != nil && cap(body) > buf.Cap() {
		*buf = *bytes.NewBuffer(body[:0]) // keep the grown space for the next request
	}
	w.Header().Set("Content-Type", "application/json")
	// Without a length, a body over net/http's 2 KiB buffer is chunked.
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	_, _ = w.Write(body)
	h.Metrics.Admissions.WithLabelValues(mode, outcome).Inc()
	h.Metrics.Duration.Observe(time.Since(start).Seconds())
}

// encodeResponse writes the AdmissionReview response by hand: it has five
// fields, and reflection over the envelope plus base64 through an encoder
// was a fifth of the handler's cost. TestInject* decode it with the API
// types.
func encodeResponse(out []byte, resp *admissionv1.AdmissionResponse) []byte {
	out = slices.Grow(out[:0], 160+base64.StdEncoding.EncodedLen(len(resp.Patch)))
	out = append(out, `{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","response":{"uid":`...)
	out = jsonscan.AppendString(out, string(resp.UID))
	if resp.Allowed {
		out = append(out, `,"allowed":true`...)
	} else {
		out = append(out, `,"allowed":false`...)
	}
	if len(resp.Patch) > 0 && resp.PatchType != nil {
		out = append(out, `,"patch":"`...)
		out = base64.StdEncoding.AppendEncode(out, resp.Patch)
		out = append(out, `","patchType":`...)
		out = jsonscan.AppendString(out, string(*resp.PatchType))
	}
	if len(resp.Warnings) > 0 {
		out = append(out, `,"warnings":[`...)
		for i, warning := range resp.Warnings {
			if i > 0 {
				out = append(out, ',')
			}
			out = jsonscan.AppendString(out, warning)
		}
		out = append(out, ']')
	}
	return append(out, "}}"...)
}

func readReview(w http.ResponseWriter, r *http.Request) ([]byte, int, error) {
	if r.Method != http.MethodPost {
		return nil, http.StatusMethodNotAllowed, fmt.Errorf("method %s: want POST", r.Method)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		return nil, http.StatusUnsupportedMediaType, fmt.Errorf("content type %q: want application/json", ct)
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil {
		return nil, http.StatusRequestEntityTooLarge, fmt.Errorf("read body: %w", err)
	}
	return body, 0, nil
}

func decodeReview(w http.ResponseWriter, r *http.Request) (*admissionv1.AdmissionReview, int, error) {
	body, status, err := readReview(w, r)
	if err != nil {
		return nil, status, err
	}
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &review); err != nil {
		return nil, http.StatusBadRequest, fmt.Errorf("decode AdmissionReview: %w", err)
	}
	if review.Request == nil {
		return nil, http.StatusBadRequest, fmt.Errorf("AdmissionReview without request")
	}
	if review.APIVersion == "" {
		review.APIVersion, review.Kind = "admission.k8s.io/v1", "AdmissionReview"
	}
	return &review, 0, nil
}

// NoOp is an AdmissionReview handler that decodes, allows and encodes:
// the floor the benchmarks compare /injectconfig with.
var NoOp http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	review, status, err := decodeReview(w, r)
	if err != nil {
		http.Error(w, err.Error(), status)
		return
	}
	review.Response = &admissionv1.AdmissionResponse{UID: review.Request.UID, Allowed: true}
	review.Request = nil
	body, _ := json.Marshal(review)
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(body)
})

// Probe returns /healthz (the process serves) and /readyz (ready() is nil).
func Probe(mux *http.ServeMux, ready func() error) {
	mux.HandleFunc(PathHealthz, func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	mux.HandleFunc(PathReadyz, func(w http.ResponseWriter, _ *http.Request) {
		if err := ready(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok\n")
	})
}
