package envoyfilter

import (
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
)

func TestMetadataTextOneLineExact(t *testing.T) {
	m := Metadata("cors", map[string]any{
		"origins":     []string{"https://app.example.com"},
		"credentials": true,
		"max_age":     600,
	})
	got, err := MetadataText(m, OneLine)
	if err != nil {
		t.Fatal(err)
	}
	want := `filter_metadata { key: "cors" value { ` +
		`fields { key: "credentials" value { bool_value: true } } ` +
		`fields { key: "max_age" value { number_value: 600 } } ` +
		`fields { key: "origins" value { list_value { values { string_value: "https://app.example.com" } } } } } }`
	if got != want {
		t.Errorf("one-line text\n got: %s\nwant: %s", got, want)
	}
}

func TestMetadataTextMultiLineExact(t *testing.T) {
	got, err := MetadataText(Metadata("cors", map[string]any{"max_age": 600}), MultiLine)
	if err != nil {
		t.Fatal(err)
	}
	want := `filter_metadata {
  key: "cors"
  value {
    fields {
      key: "max_age"
      value {
        number_value: 600
      }
    }
  }
}
`
	if got != want {
		t.Errorf("multi-line text\n got: %q\nwant: %q", got, want)
	}
}

// The one-line formats as Envoy 1.37.0 and 1.38 on print them (deploy/testdata/envoy-recordings).
// Envoy 1.37.0 proved the earlier expectation wrong: the fields are separated by ": " as in
// the other formats, not ":  ", and the token is one of three, followed by spaces.
func TestMetadataTextOneLineVariantsExact(t *testing.T) {
	m := Metadata("cors", map[string]any{"max_age": 600})
	text := `filter_metadata { key: "cors" value { fields { key: "max_age" value { number_value: 600 } } } }`
	for f, want := range map[MetadataFormat]string{
		Debug1370:            "goo.gle/debugproto  " + text,
		OneLineTrailingSpace: text + " ",
	} {
		if got, err := MetadataText(m, f); err != nil || got != want {
			t.Errorf("%v: %q, %v\nwant %q", f, got, err, want)
		}
	}
}

func TestMetadataTextEmpty(t *testing.T) {
	for _, f := range []MetadataFormat{OneLine, MultiLine, Debug1370, OneLineTrailingSpace} {
		want := ""
		if f == Debug1370 {
			want = "goo.gle/debugproto " // recorded: the token and its spaces alone
		}
		for _, m := range []*corev3.Metadata{nil, {}} {
			got, err := MetadataText(m, f)
			if err != nil || got != want {
				t.Errorf("%v of %v = %q, %v; want %q", f, m, got, err, want)
			}
		}
	}
}

func TestMetadataTextRoundTrip(t *testing.T) {
	m := MetadataNamespaces(map[string]map[string]any{
		"cors": {
			"origins":             []string{"https://app.example.com", `https://*.example.com`, `^https://(a|b)\.test$`},
			"credentials":         true,
			"allow_origin_absent": false,
			"max_age":             600,
			"ratio":               0.1,
			"big":                 1e21,
			"million":             1e6,
			"negative":            -3.5,
			"zero":                0,
			"tiny":                1e-7,
			"long":                123456789.123456789,
			"nothing":             nil,
			"empty":               "",
			"escapes":             "quote\" apostrophe' back\\slash\nnew\ttab\r\x01\x7f",
			"unicode":             "héllo, 世界",
			"nested":              map[string]any{"list": []any{1, "two", true, nil, map[string]any{}}, "empty": map[string]any{}},
			"emptylist":           []any{},
		},
		"envoy-gateway": {"resources": []any{map[string]any{"annotations": map[string]any{"cors-policy": "strict"}}}},
		"empty":         {},
	})
	for _, f := range []MetadataFormat{OneLine, MultiLine, Debug1370, OneLineTrailingSpace} {
		text, err := MetadataText(m, f)
		if err != nil {
			t.Fatalf("%v: %v", f, err)
		}
		if f != MultiLine && strings.Contains(text, "\n") {
			t.Errorf("one-line text holds a newline: %q", text)
		}
		body := strings.TrimSpace(strings.TrimPrefix(text, debugMarker))
		var back corev3.Metadata
		if err := prototext.Unmarshal([]byte(body), &back); err != nil {
			t.Fatalf("%v: prototext.Unmarshal(%q): %v", f, text, err)
		}
		if !proto.Equal(m, &back) {
			t.Errorf("%v: round trip differs\n text: %s\n back: %v", f, text, &back)
		}
	}
}

func TestMetadataTextSortsKeys(t *testing.T) {
	text, err := MetadataText(Metadata("ns", map[string]any{"b": 1, "a": 2, "c": 3}), OneLine)
	if err != nil {
		t.Fatal(err)
	}
	a, b, c := strings.Index(text, `"a"`), strings.Index(text, `"b"`), strings.Index(text, `"c"`)
	if !(a < b && b < c) {
		t.Errorf("keys not sorted: %s", text)
	}
}

func TestMetadataTextRejectsTyped(t *testing.T) {
	m := &corev3.Metadata{TypedFilterMetadata: map[string]*anypb.Any{"x": {}}}
	if _, err := MetadataText(m, OneLine); err == nil {
		t.Error("typed_filter_metadata printed without an error")
	}
}

func TestFormatDouble(t *testing.T) {
	for _, c := range []struct {
		in   float64
		want string
	}{
		{600, "600"},
		{0, "0"},
		{-3.5, "-3.5"},
		{0.1, "0.1"},
		{1e6, "1000000"},
		{1e15, "1e+15"},
		{123456789012345, "123456789012345"},
		{1e21, "1e+21"},
		{1e-4, "0.0001"},
		{1e-5, "1e-05"},
		{0.30000000000000004, "0.30000000000000004"},
		{1.0 / 3, "0.33333333333333331"},
	} {
		if got := formatDouble(c.in); got != c.want {
			t.Errorf("formatDouble(%v) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestCEscape(t *testing.T) {
	got := cEscape("a\"b'c\\d\ne\x00é")
	want := `"a\"b\'c\\d\ne\000\303\251"`
	if got != want {
		t.Errorf("cEscape = %s, want %s", got, want)
	}
}

func TestMetadataBuilderValues(t *testing.T) {
	s := Struct(map[string]any{"i": int64(7), "u": uint8(8), "f": float32(0.5), "v": structpb.NewBoolValue(true)})
	if s.Fields["i"].GetNumberValue() != 7 || s.Fields["u"].GetNumberValue() != 8 ||
		s.Fields["f"].GetNumberValue() != 0.5 || !s.Fields["v"].GetBoolValue() {
		t.Errorf("unexpected struct %v", s)
	}
	defer func() {
		if recover() == nil {
			t.Error("no panic on an unsupported type")
		}
	}()
	Struct(map[string]any{"bad": struct{}{}})
}
