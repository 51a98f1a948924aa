// Package jsonscan reads the few fields the webhook needs out of a JSON
// document in one pass, without reflection: object members are visited by
// key, values the caller does not want are skipped. An AdmissionReview
// carries the whole pod, and decoding it with encoding/json (a validation
// pass, then a reflective decoding pass into maps and structs) was the
// largest cost of /injectconfig.
//
// Every byte is checked against the JSON grammar, skipped values included,
// so a document encoding/json rejects as malformed is rejected here too.
// Strings with escapes or non-ASCII bytes are decoded by encoding/json
// itself, so their values are what encoding/json gives. Keys match
// case-sensitively, as in the Kubernetes API machinery (sigs.k8s.io/json).
package jsonscan

import (
	"encoding/json"
	"fmt"
)

// Scanner reads one JSON value from a byte slice.
type Scanner struct {
	data []byte
	pos  int
	// depth bounds nesting, as encoding/json does, so a hostile document
	// cannot exhaust the stack.
	depth int
}

// maxDepth is encoding/json's nesting limit.
const maxDepth = 10000

// New returns a Scanner positioned at the start of data.
func New(data []byte) *Scanner { return &Scanner{data: data} }

// Reset makes s read data from its start.
func (s *Scanner) Reset(data []byte) { *s = Scanner{data: data} }

func (s *Scanner) errorf(format string, args ...any) error {
	return fmt.Errorf("json at offset %d: %s", s.pos, fmt.Sprintf(format, args...))
}

func (s *Scanner) skipSpace() {
	for s.pos < len(s.data) {
		switch s.data[s.pos] {
		case ' ', '\t', '\n', '\r':
			s.pos++
		default:
			return
		}
	}
}

// peek returns the first byte of the next value, or 0 at the end.
func (s *Scanner) peek() byte {
	s.skipSpace()
	if s.pos >= len(s.data) {
		return 0
	}
	return s.data[s.pos]
}

// Null consumes a null and reports whether the next value was one.
func (s *Scanner) Null() bool {
	if s.peek() == 'n' && len(s.data)-s.pos >= 4 && string(s.data[s.pos:s.pos+4]) == "null" {
		s.pos += 4
		return true
	}
	return false
}

// End checks that nothing but white space follows the value read.
func (s *Scanner) End() error {
	if s.skipSpace(); s.pos < len(s.data) {
		return s.errorf("data after the top-level value")
	}
	return nil
}

// Object reads an object (or null, visiting nothing), calling member for
// each key; member must consume the key's value (read it or Skip it). The
// key slice is valid during the call only.
func (s *Scanner) Object(member func(key []byte) error) error {
	if s.Null() {
		return nil
	}
	if s.peek() != '{' {
		return s.errorf("want an object")
	}
	if s.depth++; s.depth > maxDepth {
		return s.errorf("nested too deeply")
	}
	s.pos++
	if s.peek() == '}' {
		s.pos++
		s.depth--
		return nil
	}
	for {
		if s.peek() != '"' {
			return s.errorf("want an object key")
		}
		key, err := s.key()
		if err != nil {
			return err
		}
		if s.peek() != ':' {
			return s.errorf("want ':' after an object key")
		}
		s.pos++
		if err := member(key); err != nil {
			return err
		}
		switch s.peek() {
		case ',':
			s.pos++
		case '}':
			s.pos++
			s.depth--
			return nil
		default:
			return s.errorf("want ',' or '}' in an object")
		}
	}
}

// Array reads an array (or null, visiting nothing), calling element for
// each element; element must consume it.
func (s *Scanner) Array(element func() error) error {
	if s.Null() {
		return nil
	}
	if s.peek() != '[' {
		return s.errorf("want an array")
	}
	if s.depth++; s.depth > maxDepth {
		return s.errorf("nested too deeply")
	}
	s.pos++
	if s.peek() == ']' {
		s.pos++
		s.depth--
		return nil
	}
	for {
		if err := element(); err != nil {
			return err
		}
		switch s.peek() {
		case ',':
			s.pos++
		case ']':
			s.pos++
			s.depth--
			return nil
		default:
			return s.errorf("want ',' or ']' in an array")
		}
	}
}

// String reads a string; null reads as "".
func (s *Scanner) String() (string, error) {
	if s.Null() {
		return "", nil
	}
	if s.peek() != '"' {
		return "", s.errorf("want a string")
	}
	start := s.pos
	plain, err := s.scanString()
	if err != nil {
		return "", err
	}
	if plain {
		return string(s.data[start+1 : s.pos-1]), nil
	}
	return decodeString(s.data[start:s.pos])
}

// key reads an object key: without copying when it is plain ASCII.
func (s *Scanner) key() ([]byte, error) {
	start := s.pos
	plain, err := s.scanString()
	if err != nil {
		return nil, err
	}
	if plain {
		return s.data[start+1 : s.pos-1], nil
	}
	k, err := decodeString(s.data[start:s.pos])
	return []byte(k), err
}

func decodeString(literal []byte) (string, error) {
	var v string
	if err := json.Unmarshal(literal, &v); err != nil {
		return "", err
	}
	return v, nil
}

// scanString moves past the string at s.pos, checking its escapes. plain
// is false when it holds escapes or non-ASCII bytes.
func (s *Scanner) scanString() (plain bool, err error) {
	plain = true
	i := s.pos + 1
	for i < len(s.data) {
		c := s.data[i]
		switch {
		case c == '"':
			s.pos = i + 1
			return plain, nil
		case c < 0x20:
			s.pos = i
			return false, s.errorf("control character in a string")
		case c >= 0x80:
			plain = false
			i++
		case c == '\\':
			plain = false
			if i+1 >= len(s.data) {
				i++
				continue
			}
			switch s.data[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(s.data) || !isHex(s.data[i+2]) || !isHex(s.data[i+3]) || !isHex(s.data[i+4]) || !isHex(s.data[i+5]) {
					s.pos = i
					return false, s.errorf("bad \\u escape")
				}
				i += 6
			default:
				s.pos = i
				return false, s.errorf("bad escape in a string")
			}
		default:
			i++
		}
	}
	s.pos = len(s.data)
	return false, s.errorf("unterminated string")
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// Raw reads any value and returns its bytes (valid until data changes).
func (s *Scanner) Raw() ([]byte, error) {
	s.skipSpace()
	start := s.pos
	if err := s.Skip(); err != nil {
		return nil, err
	}
	return s.data[start:s.pos], nil
}

// Skip reads any value, checking it, and discards it.
func (s *Scanner) Skip() error {
	switch c := s.peek(); {
	case c == '{':
		return s.Object(func([]byte) error { return s.Skip() })
	case c == '[':
		return s.Array(s.Skip)
	case c == '"':
		_, err := s.scanString()
		return err
	case c == '-' || '0' <= c && c <= '9':
		return s.scanNumber()
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	case c == 0:
		return s.errorf("unexpected end of data")
	default:
		return s.errorf("invalid character %q", c)
	}
}

func (s *Scanner) literal(word string) error {
	if len(s.data)-s.pos < len(word) || string(s.data[s.pos:s.pos+len(word)]) != word {
		return s.errorf("invalid literal")
	}
	s.pos += len(word)
	return nil
}

func (s *Scanner) scanNumber() error {
	i := s.pos
	digits := func() bool {
		start := i
		for i < len(s.data) && '0' <= s.data[i] && s.data[i] <= '9' {
			i++
		}
		return i > start
	}
	if s.data[i] == '-' {
		i++
	}
	switch {
	case i < len(s.data) && s.data[i] == '0':
		i++
	case !digits():
		return s.errorf("invalid number")
	}
	if i < len(s.data) && s.data[i] == '.' {
		i++
		if !digits() {
			return s.errorf("invalid number")
		}
	}
	if i < len(s.data) && (s.data[i] == 'e' || s.data[i] == 'E') {
		i++
		if i < len(s.data) && (s.data[i] == '+' || s.data[i] == '-') {
			i++
		}
		if !digits() {
			return s.errorf("invalid number")
		}
	}
	s.pos = i
	return nil
}

// AppendString appends v as a JSON string, escaped as encoding/json
// escapes it (HTML characters included).
func AppendString(out []byte, v string) []byte {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			b, _ := json.Marshal(v)
			return append(out, b...)
		}
	}
	out = append(out, '"')
	out = append(out, v...)
	return append(out, '"')
}
