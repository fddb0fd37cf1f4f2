package kongimport

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"go.yaml.in/yaml/v3"
)

// PolicyFile renders the named-policy file (the server's --policies format): the policies in
// document order, each preceded by comments naming the plugins it came from and its warnings,
// so that the file explains itself after the report is gone.
func (r *Report) PolicyFile() ([]byte, error) {
	doc := &yaml.Node{Kind: yaml.MappingNode}
	for _, p := range r.Policies {
		var val yaml.Node
		if err := val.Encode(p.Fields); err != nil {
			return nil, err
		}
		var comment []string
		for _, f := range p.From {
			comment = append(comment, "from the "+f)
		}
		for _, w := range p.Warnings {
			comment = append(comment, "warning: "+w)
		}
		key := &yaml.Node{Kind: yaml.ScalarNode, Value: p.Name, HeadComment: strings.Join(comment, "\n")}
		doc.Content = append(doc.Content, key, &val)
	}
	header := "# Named CORS policies imported from Kong by cors-extproc import-kong: pass this file\n" +
		"# to the server with --policies, and attach a policy to a route with the route metadata\n" +
		"# filter_metadata: {cors: {ref: NAME}} or the annotation " + AnnotationKey + ": NAME.\n"
	if len(r.Policies) == 0 {
		return []byte(header + "{}\n"), nil
	}
	body, err := encodeYAML(doc)
	return append([]byte(header), body...), err
}

func encodeYAML(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	err := enc.Close()
	return b.Bytes(), err
}

// flow renders v as one line of YAML flow style: `{origins: [https://a.test], credentials: true}`.
func flow(v any) string {
	var n yaml.Node
	if err := n.Encode(v); err != nil {
		return fmt.Sprint(v)
	}
	n.Style = yaml.FlowStyle
	out, err := yaml.Marshal(&n)
	if err != nil {
		return fmt.Sprint(v)
	}
	return strings.TrimSpace(string(out))
}

// WriteText writes the report for a person: the policies with their warnings, every route
// with its policy and how to attach it, the skipped plugins, the errors and a summary line.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "Policies (%d)\n", len(r.Policies))
	for _, p := range r.Policies {
		fmt.Fprintf(&b, "  %s: %s\n", p.Name, flow(p.Fields))
		for _, f := range p.From {
			fmt.Fprintf(&b, "    from the %s\n", f)
		}
		for _, wn := range p.Warnings {
			fmt.Fprintf(&b, "    warning: %s\n", wn)
		}
	}
	fmt.Fprintf(&b, "\nRoutes (%d)\n", len(r.Routes))
	for _, rt := range r.Routes {
		b.WriteString("  " + rt.Route)
		if rt.Service != "" {
			b.WriteString(" (service " + rt.Service + ")")
		}
		switch {
		case rt.Error != "":
			fmt.Fprintf(&b, ": the %s applies, but %s\n", rt.From, rt.Error)
		case rt.Policy == "":
			b.WriteString(": no cors plugin applies\n")
		default:
			fmt.Fprintf(&b, ": %s, from the %s\n", rt.Policy, rt.From)
			fmt.Fprintf(&b, "    Envoy route metadata: %s\n", flow(rt.Metadata))
			fmt.Fprintf(&b, "    Envoy Gateway HTTPRoute annotations: %s\n", flow(rt.Annotation))
		}
	}
	if len(r.Skipped) > 0 {
		fmt.Fprintf(&b, "\nSkipped (%d)\n", len(r.Skipped))
		for _, s := range r.Skipped {
			b.WriteString("  " + s + "\n")
		}
	}
	if len(r.Errors) > 0 {
		fmt.Fprintf(&b, "\nErrors (%d)\n", len(r.Errors))
		for _, e := range r.Errors {
			b.WriteString("  " + e + "\n")
		}
	}
	fmt.Fprintf(&b, "\n%s, %s, %s, %s\n", count(len(r.Policies), "policy", "policies"),
		count(len(r.Routes), "route", "routes"), count(r.Warnings(), "warning", "warnings"),
		count(len(r.Errors), "error", "errors"))
	_, err := io.WriteString(w, b.String())
	return err
}

func count(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

// WriteText writes the one policy as YAML, ready for a route's filter_metadata.cors or a
// named-policy file, after its warnings and errors as comments.
func (r *FormReport) WriteText(w io.Writer) error {
	var b strings.Builder
	for _, wn := range r.Warnings {
		b.WriteString("# warning: " + wn + "\n")
	}
	for _, e := range r.Errors {
		b.WriteString("# error: " + e + "\n")
	}
	if r.Policy != nil {
		out, err := encodeYAML(r.Policy)
		if err != nil {
			return err
		}
		if string(out) == "{}\n" || len(out) == 0 {
			out = []byte("{}\n")
		}
		b.Write(out)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteYAML and WriteJSON write a report as one document, for tools.
func WriteYAML(w io.Writer, report any) error {
	out, err := encodeYAML(report)
	if err != nil {
		return err
	}
	_, err = w.Write(out)
	return err
}

// WriteJSON writes a report as indented JSON.
func WriteJSON(w io.Writer, report any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(report)
}
