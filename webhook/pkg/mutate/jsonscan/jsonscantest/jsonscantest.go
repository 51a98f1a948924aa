// Package jsonscantest helps fuzz tests compare a jsonscan decoder with
// encoding/json, the oracle, on the inputs where both are meant to agree.
package jsonscantest

import "bytes"

// ComparableWithEncodingJSON reports whether encoding/json decodes data the
// way a jsonscan decoder must. It does not when data holds \u escapes or
// the two non-ASCII letters that fold to ASCII (K, ſ), or when a key that
// differs from one of keys only by case appears: encoding/json matches
// struct fields case-insensitively, jsonscan (like the Kubernetes API
// machinery) case-sensitively. keys are the quoted JSON keys the decoder
// reads, e.g. `"metadata"`.
func ComparableWithEncodingJSON(data []byte, keys []string) bool {
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
