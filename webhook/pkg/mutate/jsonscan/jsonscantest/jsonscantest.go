// Package jsonscantest helps fuzz tests compare a jsonscan decoder with
// encoding/json, the oracle, on the inputs where both are meant to agree.
package jsonscantest

import (
	"bytes"
	"encoding/json"
	"testing"
)

// Comparable fails t if the decoder accepted (decodeErr == nil) data that
// is not valid JSON, and reports whether encoding/json decodes data the way
// the decoder must, so that the caller goes on to compare the two. They are
// not comparable when data is invalid JSON, holds \u escapes or the two
// non-ASCII letters that fold to ASCII (K, ſ), or has a key that differs
// from one of keys only by case: encoding/json matches struct fields
// case-insensitively, jsonscan (like the Kubernetes API machinery)
// case-sensitively. keys are the quoted JSON keys the decoder reads, e.g.
// `"metadata"`.
func Comparable(t *testing.T, data []byte, decodeErr error, keys []string) bool {
	t.Helper()
	if !json.Valid(data) {
		if decodeErr == nil {
			t.Fatalf("accepted invalid JSON %q", data)
		}
		return false
	}
	if bytes.Contains(data, []byte(`\u`)) || bytes.Contains(data, []byte("\u212a")) || bytes.Contains(data, []byte("\u017f")) {
		return false
	}
	lower := bytes.ToLower(data)
	for _, k := range keys {
		if bytes.Count(lower, bytes.ToLower([]byte(k))) != bytes.Count(data, []byte(k)) {
			return false
		}
	}
	return true
}
