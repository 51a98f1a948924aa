package server

import (
	"bytes"
	"fmt"
	"net/http"
	"sync"

	"github.com/datadog-csi/datadog-csi/webhook/pkg/mutate/jsonscan"
	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// podReview is the part of an AdmissionReview request /injectconfig reads,
// decoded in one pass without reflection (package jsonscan): the apiserver
// sends the whole pod, and decoding it with encoding/json, even into a
// few fields, was the largest cost of the handler. Object is the pod's
// JSON, a slice of the request body, decoded only when the review is a
// pod creation.
type podReview struct {
	// present is false when the review has no request.
	present     bool
	UID         types.UID
	Kind        metav1.GroupVersionKind
	SubResource string
	Name        string
	Namespace   string
	Operation   admissionv1.Operation
	Object      []byte
}

func (p *podReview) decode(body []byte) error {
	var s jsonscan.Scanner
	s.Reset(body)
	err := s.Object(func(key []byte) error {
		if string(key) != "request" {
			return s.Skip()
		}
		if s.Null() {
			return nil
		}
		p.present = true
		return s.Object(func(key []byte) error {
			var err error
			switch string(key) {
			case "uid":
				var v string
				v, err = s.String()
				p.UID = types.UID(v)
			case "kind":
				err = s.Object(func(key []byte) error {
					var err error
					switch string(key) {
					case "group":
						p.Kind.Group, err = s.String()
					case "version":
						p.Kind.Version, err = s.String()
					case "kind":
						p.Kind.Kind, err = s.String()
					default:
						err = s.Skip()
					}
					return err
				})
			case "subResource":
				p.SubResource, err = s.String()
			case "name":
				p.Name, err = s.String()
			case "namespace":
				p.Namespace, err = s.String()
			case "operation":
				var v string
				v, err = s.String()
				p.Operation = admissionv1.Operation(v)
			case "object":
				if s.Null() {
					return nil // as encoding/json leaves a RawExtension
				}
				p.Object, err = s.Raw()
			default:
				err = s.Skip()
			}
			return err
		})
	})
	if err != nil {
		return fmt.Errorf("decode AdmissionReview: %w", err)
	}
	if err := s.End(); err != nil {
		return fmt.Errorf("decode AdmissionReview: %w", err)
	}
	return nil
}

// buffers hold request bodies and responses between requests: a review
// is a few KiB, and growing a fresh buffer for each was a tenth of the
// handler's allocations.
var buffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// maxPooledBuffer keeps a rare huge pod from pinning its buffer.
const maxPooledBuffer = 64 << 10

func getBuffer() *bytes.Buffer { return buffers.Get().(*bytes.Buffer) }

func putBuffer(b *bytes.Buffer) {
	if b.Cap() <= maxPooledBuffer {
		b.Reset()
		buffers.Put(b)
	}
}

// readReviewInto is readReview reading into buf.
func readReviewInto(w http.ResponseWriter, r *http.Request, buf *bytes.Buffer) ([]byte, int, error) {
	if r.Method != http.MethodPost {
		return nil, http.StatusMethodNotAllowed, fmt.Errorf("method %s: want POST", r.Method)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		return nil, http.StatusUnsupportedMediaType, fmt.Errorf("content type %q: want application/json", ct)
	}
	if n := r.ContentLength; n > 0 && n <= maxBodyBytes {
		buf.Grow(int(n) + bytes.MinRead)
	}
	if _, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, maxBodyBytes)); err != nil {
		return nil, http.StatusRequestEntityTooLarge, fmt.Errorf("read body: %w", err)
	}
	return buf.Bytes(), 0, nil
}
