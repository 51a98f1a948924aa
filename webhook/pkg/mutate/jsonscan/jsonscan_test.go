package jsonscan

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestScannerReadsWhatItIsAsked(t *testing.T) {
	doc := []byte(` {"skip":[1,-2.5e+3,{"x":[true,false,null]},"\u00e9\"\\"],"name":"n\u0041\n","raw": {"a" : [ ]} ,"null":null} `)
	s := New(doc)
	var name string
	var raw []byte
	nullSeen := false
	err := s.Object(func(key []byte) error {
		var err error
		switch string(key) {
		case "name":
			name, err = s.String()
		case "raw":
			raw, err = s.Raw()
		case "null":
			nullSeen = s.Null()
		default:
			err = s.Skip()
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.End(); err != nil {
		t.Fatal(err)
	}
	if name != "nA\n" || string(raw) != `{"a" : [ ]}` || !nullSeen {
		t.Fatalf("name %q raw %q null %t", name, raw, nullSeen)
	}
}

// TestScannerBoundsNesting: a hostile document fails like it does with
// encoding/json instead of exhausting the stack.
func TestScannerBoundsNesting(t *testing.T) {
	deep := []byte(strings.Repeat("[", maxDepth+1) + strings.Repeat("]", maxDepth+1))
	if err := New(deep).Skip(); err == nil || !strings.Contains(err.Error(), "nested too deeply") {
		t.Fatalf("err %v", err)
	}
	ok := []byte(strings.Repeat("[", maxDepth) + strings.Repeat("]", maxDepth))
	if err := New(ok).Skip(); err != nil {
		t.Fatal(err)
	}
	if json.Valid(deep) || !json.Valid(ok) {
		t.Fatal("encoding/json's nesting limit differs")
	}
}

func TestAppendStringMatchesEncodingJSON(t *testing.T) {
	for _, v := range []string{"", "plain", `q"uote`, "back\\slash", "<html>&", "tab\t", "é", "\xff"} {
		want, _ := json.Marshal(v)
		if got := AppendString(nil, v); string(got) != string(want) {
			t.Errorf("%q: %s, want %s", v, got, want)
		}
	}
}
