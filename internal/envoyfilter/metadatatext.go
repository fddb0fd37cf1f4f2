package envoyfilter

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"sort"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/structpb"
)

// Attribute names Envoy can be configured to send (contract §2 and §3).
const (
	AttrRouteMetadata       = "xds.route_metadata"
	AttrVirtualHostMetadata = "xds.virtual_host_metadata"
	AttrRouteName           = "xds.route_name"
)

// MetadataFormat is how Envoy prints route and virtual-host metadata into the
// xds.route_metadata and xds.virtual_host_metadata attributes (contract §3). The releases each
// format stands for are those recorded in deploy/testdata/envoy-recordings; Config.ForRelease
// picks the format of a release.
type MetadataFormat int

const (
	// OneLine is C++ ShortDebugString, as Envoy 1.36 prints it: one line, no trailing space.
	OneLine MetadataFormat = iota
	// MultiLine is the C++ TextFormat printer's default layout (two-space indent, one field a
	// line). No recorded release prints it (the contract expected releases after 1.36 to); it
	// stays so that tests show the server reads any layout text format allows.
	MultiLine
	// Debug1370 is Envoy 1.37.0's debug form: a goo.gle/debug... token, then spaces, then the
	// one-line text without a trailing space; empty metadata is the token and a space. 1.37.0
	// picks the token (goo.gle/debugonly, goo.gle/debugstr or goo.gle/debugproto) and the number
	// of spaces (one to three, one more before a text) at random once per process; this prints
	// goo.gle/debugproto and one space ("goo.gle/debugproto  filter_metadata {...}").
	Debug1370
	// OneLineTrailingSpace is the C++ TextFormat printer in single-line mode, as Envoy 1.38 on
	// print it: OneLine with a space after the last "}". Empty metadata prints as "".
	OneLineTrailingSpace
)

func (f MetadataFormat) String() string {
	switch f {
	case OneLine:
		return "OneLine"
	case MultiLine:
		return "MultiLine"
	case Debug1370:
		return "Debug1370"
	case OneLineTrailingSpace:
		return "OneLineTrailingSpace"
	}
	return "MetadataFormat(" + strconv.Itoa(int(f)) + ")"
}

// debugMarker is the token Debug1370 puts in front of the text (contract §3).
const debugMarker = "goo.gle/debugproto"

// MetadataText prints m as Envoy's CEL attribute printer does (contract §2 and §3): protobuf
// text format with map entries sorted by key, numbers as C++ prints doubles (600, 0.5, 1e+21),
// strings C-escaped (bytes outside printable ASCII as octal). Empty metadata prints as "".
// typed_filter_metadata is not played: it is an error.
func MetadataText(m *corev3.Metadata, f MetadataFormat) (string, error) {
	if len(m.GetTypedFilterMetadata()) > 0 {
		return "", errors.New("envoyfilter: typed_filter_metadata is not printed by this client")
	}
	p := printer{sep: ": "}
	switch f {
	case OneLine, Debug1370, OneLineTrailingSpace:
	case MultiLine:
		p.multi = true
	default:
		return "", fmt.Errorf("envoyfilter: unknown metadata format %v", f)
	}
	for _, ns := range sortedKeys(m.GetFilterMetadata()) {
		p.open("filter_metadata")
		p.scalar("key", cEscape(ns))
		p.open("value")
		p.fields(m.GetFilterMetadata()[ns])
		p.close()
		p.close()
	}
	s := p.b.String()
	switch f {
	case OneLine:
		s = strings.TrimRight(s, " ")
	case Debug1370:
		if s = strings.TrimRight(s, " "); s != "" {
			s = " " + s
		}
		s = debugMarker + " " + s
	}
	return s, nil
}

// printer writes text format in C++'s single-line or multi-line layout.
type printer struct {
	b      strings.Builder
	multi  bool
	sep    string // between a scalar field's name and its value
	indent int
}

func (p *printer) pad() {
	if p.multi {
		p.b.WriteString(strings.Repeat("  ", p.indent))
	}
}

func (p *printer) end() {
	if p.multi {
		p.b.WriteByte('\n')
	} else {
		p.b.WriteByte(' ')
	}
}

func (p *printer) open(name string) {
	p.pad()
	p.b.WriteString(name)
	p.b.WriteString(" {")
	p.end()
	p.indent++
}

func (p *printer) close() {
	p.indent--
	p.pad()
	p.b.WriteByte('}')
	p.end()
}

func (p *printer) scalar(name, value string) {
	p.pad()
	p.b.WriteString(name)
	p.b.WriteString(p.sep)
	p.b.WriteString(value)
	p.end()
}

func (p *printer) fields(s *structpb.Struct) {
	for _, k := range sortedKeys(s.GetFields()) {
		p.open("fields")
		p.scalar("key", cEscape(k))
		p.value("value", s.GetFields()[k])
		p.close()
	}
}

// value prints a Value message; fields in field-number order, as C++ does.
func (p *printer) value(name string, v *structpb.Value) {
	p.open(name)
	switch k := v.GetKind().(type) {
	case *structpb.Value_NullValue:
		p.scalar("null_value", "NULL_VALUE")
	case *structpb.Value_NumberValue:
		p.scalar("number_value", formatDouble(k.NumberValue))
	case *structpb.Value_StringValue:
		p.scalar("string_value", cEscape(k.StringValue))
	case *structpb.Value_BoolValue:
		p.scalar("bool_value", strconv.FormatBool(k.BoolValue))
	case *structpb.Value_StructValue:
		p.open("struct_value")
		p.fields(k.StructValue)
		p.close()
	case *structpb.Value_ListValue:
		p.open("list_value")
		for _, item := range k.ListValue.GetValues() {
			p.value("values", item)
		}
		p.close()
	}
	p.close()
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// cEscape quotes s as C++ CEscape does for text format strings.
func cEscape(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		case '"':
			b.WriteString(`\"`)
		case '\'':
			b.WriteString(`\'`)
		case '\\':
			b.WriteString(`\\`)
		default:
			if c < 0x20 || c >= 0x7f {
				b.WriteByte('\\')
				b.WriteByte('0' + c>>6)
				b.WriteByte('0' + c>>3&7)
				b.WriteByte('0' + c&7)
			} else {
				b.WriteByte(c)
			}
		}
	}
	b.WriteByte('"')
	return b.String()
}

// formatDouble prints f as C++ SimpleDtoa does: %.15g, or %.17g when 15 digits do not read back
// as the same number.
func formatDouble(f float64) string {
	switch {
	case math.IsNaN(f):
		return "nan"
	case math.IsInf(f, 1):
		return "inf"
	case math.IsInf(f, -1):
		return "-inf"
	}
	s := formatG(f, 15)
	if back, err := strconv.ParseFloat(s, 64); err != nil || back != f {
		s = formatG(f, 17)
	}
	return s
}

// formatG is C's %.<prec>g: scientific notation when the exponent is below -4 or at least prec,
// fixed otherwise; trailing zeros dropped either way.
func formatG(f float64, prec int) string {
	e := strconv.FormatFloat(f, 'e', prec-1, 64)
	mant, exp, _ := strings.Cut(e, "e")
	x, _ := strconv.Atoi(exp)
	if x < -4 || x >= prec {
		return trimZeros(mant) + "e" + exp
	}
	return trimZeros(strconv.FormatFloat(f, 'f', prec-1-x, 64))
}

func trimZeros(s string) string {
	if !strings.Contains(s, ".") {
		return s
	}
	return strings.TrimSuffix(strings.TrimRight(s, "0"), ".")
}

// Metadata builds route or virtual-host metadata with one filter_metadata namespace, e.g.
//
//	envoyfilter.Metadata("cors", map[string]any{"origins": []string{"https://app.example.com"}, "max_age": 600})
//
// Values may be nil, bool, string, any Go integer or float (stored as a double, as Envoy does),
// []string, []any, map[string]any, *structpb.Value or *structpb.Struct. It panics on anything
// else: it is meant for test tables.
func Metadata(ns string, fields map[string]any) *corev3.Metadata {
	return MetadataNamespaces(map[string]map[string]any{ns: fields})
}

// MetadataNamespaces is Metadata for several namespaces at once.
func MetadataNamespaces(namespaces map[string]map[string]any) *corev3.Metadata {
	m := &corev3.Metadata{FilterMetadata: make(map[string]*structpb.Struct, len(namespaces))}
	for ns, fields := range namespaces {
		m.FilterMetadata[ns] = Struct(fields)
	}
	return m
}

// Struct converts a map as Metadata does.
func Struct(fields map[string]any) *structpb.Struct {
	s := &structpb.Struct{Fields: make(map[string]*structpb.Value, len(fields))}
	for k, v := range fields {
		s.Fields[k] = value(v)
	}
	return s
}

func value(v any) *structpb.Value {
	switch x := v.(type) {
	case nil:
		return structpb.NewNullValue()
	case *structpb.Value:
		return x
	case *structpb.Struct:
		return structpb.NewStructValue(x)
	case map[string]any:
		return structpb.NewStructValue(Struct(x))
	case string:
		return structpb.NewStringValue(x)
	case bool:
		return structpb.NewBoolValue(x)
	case []string:
		vs := make([]*structpb.Value, len(x))
		for i, s := range x {
			vs[i] = structpb.NewStringValue(s)
		}
		return structpb.NewListValue(&structpb.ListValue{Values: vs})
	case []any:
		vs := make([]*structpb.Value, len(x))
		for i, e := range x {
			vs[i] = value(e)
		}
		return structpb.NewListValue(&structpb.ListValue{Values: vs})
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return structpb.NewNumberValue(float64(rv.Int()))
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return structpb.NewNumberValue(float64(rv.Uint()))
	case reflect.Float32, reflect.Float64:
		return structpb.NewNumberValue(rv.Float())
	}
	panic(fmt.Sprintf("envoyfilter: cannot put a %T into metadata", v))
}
