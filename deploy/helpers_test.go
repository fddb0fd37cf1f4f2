// Package deploy_test checks the deployment files of deploy/ (and the Dockerfile): each is
// decoded strictly into the real types of the system that reads it, where such types are
// cheap to have, and the files are checked against each other. The example routes' policies
// are then played through the real processor by an Envoy-playing client.
package deploy_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"
)

// readFile reads a file named relative to deploy/ (the tests' working directory).
func readFile(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.FromSlash(name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// yamlDocuments splits a multi-document YAML file on its "---" lines, dropping documents that
// hold only comments.
func yamlDocuments(t *testing.T, name string) [][]byte {
	t.Helper()
	var docs [][]byte
	for _, doc := range strings.Split(string(readFile(t, name)), "\n---\n") {
		empty := true
		for _, line := range strings.Split(doc, "\n") {
			if l := strings.TrimSpace(line); l != "" && !strings.HasPrefix(l, "#") {
				empty = false
				break
			}
		}
		if !empty {
			docs = append(docs, []byte(doc))
		}
	}
	if len(docs) == 0 {
		t.Fatalf("%s: no YAML document", name)
	}
	return docs
}

// decodeStrict decodes YAML into v, rejecting fields v does not have.
func decodeStrict(t *testing.T, what string, doc []byte, v any) {
	t.Helper()
	if err := yaml.UnmarshalStrict(doc, v); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// decodeProto decodes YAML or JSON into a protobuf message as Envoy (and Istio) read it:
// unknown fields are errors and every Any must resolve to a registered type.
func decodeProto(t *testing.T, what string, doc []byte, m proto.Message) {
	t.Helper()
	js, err := yaml.YAMLToJSON(doc)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(js, m); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// validator is what protoc-gen-validate generates on every go-control-plane message.
type validator interface{ ValidateAll() error }

func validate(t *testing.T, what string, m validator) {
	t.Helper()
	if err := m.ValidateAll(); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}
